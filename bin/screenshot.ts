/**
 * `npm run screenshot`: refreshes docs/console.png, the README's picture of the console. Starts the
 * demo on a throw-away data directory, connects three users through the real consent pages in
 * chromium, lets a sweep refresh them, fails one refresh during an outage, waits for a sweep to fail
 * too, and photographs the Overview: the outage banner, the circuit, and the sweeps chart with the
 * failed sweep and the open circuit shaded. Needs /usr/bin/chromium.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../functions/core/config.js';
import { silentLogger } from '../functions/core/ports.js';
import { DEMO_PROVIDER_ID, DEMO_SETTINGS, startDemo } from '../functions/local/demo/demo.js';
import { connectThroughConsole, launchChromium } from '../test/support/browser.js';

const output = new URL('../docs/console.png', import.meta.url).pathname;
const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-screenshot-'));
const demo = await startDemo({
  config: loadConfig({ PORT: '0', TOKENKEEPER_DATA_DIR: dataDir, ...DEMO_SETTINGS }),
  logger: silentLogger,
});
const browser = await launchChromium();
try {
  const page = await (await browser.newContext({ viewport: { width: 1360, height: 1000 } })).newPage();
  await page.goto(demo.consoleUrl);
  for (const user of ['alice@example.com', 'bob@example.com', 'carol@example.com']) {
    await connectThroughConsole(page, user, DEMO_PROVIDER_ID);
  }
  await page.getByRole('button', { name: 'Sessions', exact: true }).click();
  const refreshed = page.locator('#session-rows [data-cell="refreshed"]', { hasText: 'ago' });
  await refreshed.first().waitFor({ timeout: 40_000 });
  // One failing row: carol's forced refresh meets the outage.
  await fetch(`${demo.stack.url}/demo/outage?seconds=45`, {
    method: 'POST',
    headers: { authorization: `Bearer ${demo.stack.apiKey}` },
  });
  await page
    .locator('#session-rows tr[data-user="carol@example.com"]')
    .getByRole('button', { name: /^Refresh/u })
    .click();
  await page.locator('#session-rows [data-cell="failures"]', { hasText: '1' }).waitFor();
  await page.getByRole('button', { name: 'Overview', exact: true }).click();
  await page.locator('#sweep-chart circle.failed-mark').first().waitFor({ timeout: 40_000 });
  await page.locator('#sweep-chart rect.open-period').first().waitFor({ timeout: 40_000 });
  await page.screenshot({ path: output, fullPage: true });
  process.stdout.write(`wrote ${output}\n`);
} finally {
  await browser.close();
  await demo.stop();
  await rm(dataDir, { recursive: true, force: true });
}
