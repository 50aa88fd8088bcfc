/**
 * `npm run check:node`: the Node.js that runs the npm scripts (tests, benches, `npm start`, the CLI)
 * must be the Lambda runtime's major, or nothing here proves what deploys. Prints the version, or one
 * line saying what to install, and exits 1. `npm test` runs it first; so does .ci/run.
 */
import { relative, resolve } from 'node:path';
import { KEEPER_NODE_MAJOR, KEEPER_RUNTIME, PROJECT_ROOT } from '../lib/keeper-function.js';

export interface NodeCheck {
  ok: boolean;
  line: string;
}

/** Compares a `process.version` (v24.22.3) with the Lambda runtime's Node.js major. */
export function checkNode(version: string, execPath: string, runtimeName: string, major: number): NodeCheck {
  const running = Number(/^v(\d+)\./.exec(version)?.[1]);
  const where = execPath.startsWith(PROJECT_ROOT) ? relative(PROJECT_ROOT, execPath) : execPath;
  if (running === major) {
    return { ok: true, line: `node ${version} (${where}); the Lambda runtime is ${runtimeName}` };
  }
  return {
    ok: false,
    line:
      `node ${version} (${where}) runs the npm scripts, but the Lambda runtime is ${runtimeName}: ` +
      `npm ci installs Node.js ${major} on Linux x64 and arm64 (package.json optionalDependencies); ` +
      `elsewhere install Node.js ${major} and put it first on PATH`,
  };
}

// Not import.meta.main: this must also run, and fail, on the older Node.js it is there to catch.
if (resolve(process.argv[1] ?? '') === import.meta.filename) {
  const { ok, line } = checkNode(process.version, process.execPath, KEEPER_RUNTIME.name, KEEPER_NODE_MAJOR);
  (ok ? process.stdout : process.stderr).write(`${line}\n`);
  process.exitCode = ok ? 0 : 1;
}
