/**
 * @file Log in, register, and Connect Claude, in a real browser against the real daemon and
 * the mock API's key check.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  GOOD_KEY, INVALID_KEY, PASSWORD, screenshot, setup, startDaemon, launchBrowser, firstPage,
} from '../lib/harness.js';
import { connectApiKey, register, submitApiKey } from '../lib/ui.js';

test('the first user registers as admin, connects an API key, and never sees it again', async (t) => {
  const { daemon, page, context } = await setup(t);
  await register(page, daemon.url, 'alice');
  await page.getByText('alice (admin)').waitFor();
  // Subscription sign-in is off by default: only the API key is offered.
  assert.equal(await page.locator('[data-form="oauth"]').count(), 0);
  assert.equal(await page.locator('[data-form="setup-token"]').count(), 0);
  const link = page.getByRole('link', { name: 'Anthropic Console' });
  assert.equal(await link.getAttribute('href'), 'https://console.anthropic.com/settings/keys');

  await connectApiKey(page, GOOD_KEY);
  await page.locator('[data-claude-badge]').getByText('Claude connected').waitFor();
  assert.ok(!(await page.content()).includes(GOOD_KEY), 'the key is not in the page');

  // After a reload the status comes from the server, still without the key.
  await page.reload();
  await page.locator('[data-status-badge]').getByText('Claude connected').waitFor();
  assert.ok(!(await page.content()).includes(GOOD_KEY));
  await screenshot(page, 'connect-connected');

  // A second tab of the same browser is logged in too (the cookie).
  const second = await context.newPage();
  await second.goto(`${daemon.url}/connect`);
  await second.locator('[data-whoami]').getByText('alice').waitFor();
  await second.close();

  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.locator('[data-status-badge]').getByText('Claude not connected').waitFor();

  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'Log in to sashad' }).waitFor();
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('wrong password!');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('alert').getByText('wrong username or password').waitFor();
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  // Not connected any more: the page goes to Connect Claude.
  await page.getByRole('heading', { name: 'Connect Claude' }).waitFor();
});

test('a key the mock rejects shows the server\'s invalid_api_key message, and the page stays usable', async (t) => {
  const { daemon, page } = await setup(t);
  await register(page, daemon.url, 'bob');
  assert.equal(await submitApiKey(page, INVALID_KEY), 400);
  const error = page.locator('[data-form="api-key"] [role="alert"]');
  await error.locator('code', { hasText: 'invalid_api_key' }).waitFor();
  const message = await error.locator('.message').textContent();
  assert.ok(message.length > 5, `the server's message is shown: ${message}`);
  await page.locator('[data-status-badge]').getByText('Claude not connected').waitFor();
  assert.ok(!(await page.content()).includes(INVALID_KEY), 'the refused key is not in the page');
  await screenshot(page, 'connect-invalid-key');

  // Still usable: a good key goes through, and the error goes away.
  await connectApiKey(page, GOOD_KEY);
  assert.equal(await error.isVisible(), false);
});

test('when the key check cannot reach Anthropic, the page says validation_unavailable', async (t) => {
  // Port 9 (discard) on loopback: nothing listens there, so the check fails at once.
  const daemon = await startDaemon(t, { mockUrl: 'http://127.0.0.1:9' });
  const context = await launchBrowser(t);
  const page = await firstPage(context);
  await register(page, daemon.url, 'carol');
  assert.equal(await submitApiKey(page, GOOD_KEY), 502);
  await page.locator('[data-form="api-key"] [role="alert"] code', { hasText: 'validation_unavailable' }).waitFor();
});

/** Subscription sign-in on, with the mock as the OAuth provider (callback mode). */
const withOAuth = (mockUrl) => ({
  claude_auth: { subscription_login: true },
  oauth: {
    authorize_url: `${mockUrl}/oauth/authorize`,
    token_url: `${mockUrl}/oauth/token`,
    client_id: 'sashad-test-client',
    scopes: ['user:inference'],
  },
});

test('signing in with a Claude account in a popup connects the account', async (t) => {
  const { daemon, page, context } = await setup(t, { config: withOAuth });
  await register(page, daemon.url, 'olivia');
  const popupOpened = context.waitForEvent('page');
  await page.getByRole('button', { name: 'Sign in with Claude account' }).click();
  const popup = await popupOpened;
  // The mock provider approves at once and redirects to sashad's callback page.
  await popup.waitForURL(/\/api\/claude\/auth\/oauth\/callback/);
  await popup.getByRole('heading', { name: 'Signed in' }).waitFor();
  await screenshot(popup, 'oauth-callback');
  // The page polled the sign-in's status and shows the account connected.
  await page.locator('[data-claude-badge]', { hasText: 'Claude connected' }).waitFor();
  await page.getByText('Signed in.').waitFor();
  const status = await page.evaluate(async () => (await fetch('/api/claude/auth/status')).json());
  assert.equal(status.authType, 'oauth');
  assert.equal(status.authenticated, true);
  await screenshot(page, 'oauth-connected');
});

test('subscription sign-in and setup tokens appear only when the operator turns them on', async (t) => {
  const { daemon, page } = await setup(t, { config: withOAuth });
  await register(page, daemon.url, 'dave');
  await page.getByRole('button', { name: 'Sign in with Claude account' }).waitFor();
  await page.getByRole('heading', { name: 'Use a setup token' }).waitFor();
  const token = page.locator('[data-form="setup-token"]').getByLabel('Setup token');
  assert.equal(await token.getAttribute('type'), 'password');
});

test('at phone width every screen fits and stays usable', async (t) => {
  const { daemon, page } = await setup(t);
  await page.setViewportSize({ width: 375, height: 740 });
  await register(page, daemon.url, 'erin');
  await connectApiKey(page, GOOD_KEY);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  await screenshot(page, 'phone-connect');
  await page.getByRole('link', { name: 'Chat', exact: true }).click();
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  const overflowChat = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflowChat <= 0, `the chat scrolls sideways by ${overflowChat}px`);
  await screenshot(page, 'phone-chat');

  // With a session open, the sidebar folds behind a button and the conversation gets the screen.
  await page.getByLabel('New project').fill('phone');
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByRole('button', { name: 'New session' }).click();
  await page.waitForURL(/\/s\/[^/]+$/);
  await page.getByRole('textbox', { name: 'Message to Claude' }).waitFor();
  const toggle = page.getByRole('button', { name: 'Projects and sessions' });
  assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  assert.equal(await page.getByRole('heading', { name: 'Projects' }).isVisible(), false);
  const overflowSession = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflowSession <= 0, `the session scrolls sideways by ${overflowSession}px`);
  await screenshot(page, 'phone-session');
  await toggle.click();
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
});

test('unknown API paths answer JSON 404s while page routes serve the page', async (t) => {
  const { daemon, page } = await setup(t);
  const api = await fetch(`${daemon.url}/api/nope`);
  assert.equal(api.status, 404);
  assert.equal((await api.json()).error, 'not_found');
  const ws = await fetch(`${daemon.url}/ws/nope`);
  assert.equal(ws.status, 404);
  const route = await fetch(`${daemon.url}/s/some-session`);
  assert.equal(route.status, 200);
  assert.match(route.headers.get('content-type'), /^text\/html/);
  assert.equal(route.headers.get('cache-control'), 'no-cache');
  const csp = route.headers.get('content-security-policy');
  assert.ok(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), csp);
  // Keyboard only: the login form can be filled and sent without a mouse.
  await page.goto(daemon.url);
  await page.getByRole('heading', { name: 'Create the admin account' }).waitFor();
  await page.keyboard.type('frank');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Connect Claude' }).waitFor();
});
