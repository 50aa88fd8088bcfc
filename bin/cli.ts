/**
 * `tokenkeeper`: the operator CLI (client/cli.ts) wired to this process. Started by bin/tokenkeeper.js.
 */
import { runCli } from '../client/cli.js';

// Long-running commands (`console`) end on Ctrl-C or SIGTERM.
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());
process.once('SIGTERM', () => stop.abort());

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  stdin: process.stdin,
  signal: stop.signal,
});
