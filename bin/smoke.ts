/**
 * `npm run smoke -- --url <ApiUrl>`: the deployed smoke test (client/smoke.ts) wired to this process.
 */
import { runSmoke } from '../client/smoke.js';

process.exitCode = await runSmoke(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
