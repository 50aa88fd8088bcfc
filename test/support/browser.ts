import { type Browser, chromium, type Page } from 'playwright-core';

/**
 * Debian's chromium driven by playwright-core (its own browser download is unreachable), and the
 * console's "connect a user" flow through the demo provider's real login and consent pages.
 */

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** launch() runs chromium on a fresh temporary profile (user-data-dir), removed when it closes. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/**
 * On the console's Providers view: "Connect a user" opens the consent page in a new tab, where the
 * user signs in (any login and password on the demo provider) and consents, by clicking. The tab
 * comes back to the console, which completes the connection; the tab then says so.
 */
export async function connectThroughConsole(page: Page, userId: string, providerId: string): Promise<void> {
  await page.getByRole('button', { name: 'Providers', exact: true }).click();
  await page.getByLabel('User id').fill(userId);
  await page.locator('#connect-provider').selectOption(providerId);
  const [consent] = await Promise.all([
    page.context().waitForEvent('page'),
    page.getByRole('button', { name: "Open the provider's consent page" }).click(),
  ]);
  // The provider remembers a signed-in browser: then only the consent page (or nothing) shows.
  const login = consent.locator('input[name="login"]');
  const proceed = consent.getByRole('button', { name: 'Continue' });
  await login
    .or(proceed)
    .or(consent.getByText(/connected/iu))
    .first()
    .waitFor();
  if (await login.isVisible()) {
    await login.fill(`${userId}@example.com`);
    await consent.locator('input[name="password"]').fill('any password');
    await consent.getByRole('button', { name: 'Sign-in' }).click();
  }
  await proceed
    .or(consent.getByText(/connected/iu))
    .first()
    .waitFor();
  if (await proceed.isVisible()) await proceed.click();
  // The console page's CSP allows no eval: wait with a locator, not a function.
  await consent.getByText(/Account connected for/u).waitFor({ timeout: 10_000 });
  await consent.close();
}
