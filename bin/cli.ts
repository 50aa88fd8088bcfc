/**
 * `tokenkeeper`: the operator CLI (client/cli.ts) wired to this process. Started by bin/tokenkeeper.js.
 */
import { runCli } from '../client/cli.js';

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  stdin: process.stdin,
});
