import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** Child processes of the bench (dynalite, the token endpoint, the OAuth server) and their CPU time. */

const HERE = dirname(fileURLToPath(import.meta.url));

export interface Child {
  pid: number;
  port: number;
  url: string;
  /** The whole line the child printed when it listened (its port and anything else it reports). */
  info: Record<string, unknown>;
  stop(): void;
}

export async function startChild(mode: 'dynalite' | 'token' | 'oidc', options?: unknown): Promise<Child> {
  const args = ['--import', 'tsx', join(HERE, 'server-main.ts'), mode];
  if (options !== undefined) args.push(JSON.stringify(options));
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${mode} did not start within 30 s`)), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${mode} exited early with code ${code}`)));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as Record<string, unknown>);
    });
  });
  child.removeAllListeners('exit');
  const port = info.port as number;
  const stop = () => {
    if (child.exitCode === null) child.kill('SIGTERM');
  };
  process.once('exit', stop);
  return { pid: child.pid as number, port, url: `http://127.0.0.1:${port}`, info, stop };
}

const TICKS_PER_SECOND = 100;

/** CPU time (user + system) a process has used, in ms, from /proc; undefined off Linux. */
export function processCpuMs(pid: number): number | undefined {
  return statCpuMs(`/proc/${pid}/stat`);
}

/**
 * CPU time of this process's main thread (the event loop), in ms; undefined off Linux. The rest of
 * `selfCpuMs()` is V8's and libuv's background threads (compiler, garbage collector, thread pool).
 */
export function mainThreadCpuMs(): number | undefined {
  return statCpuMs(`/proc/self/task/${process.pid}/stat`);
}

function statCpuMs(path: string): number | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    // Fields after the command name (which may contain spaces) start at state (field 3).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** This process's CPU time in ms. */
export function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
