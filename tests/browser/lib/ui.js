/**
 * @file What a person does in the UI, step by step, for the browser tests. Each step waits on
 * what the page shows (a selector, a response), never on a fixed delay.
 */

import assert from 'node:assert/strict';

import { PASSWORD } from './harness.js';

/**
 * Opens the page, registers `username` (the first account: the page says it will be the admin)
 * and lands logged in on Connect Claude.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} base
 * @param {string} username
 * @param {{expectAdmin?: boolean}} [options]
 */
export async function register(page, base, username, options = { expectAdmin: true }) {
  await page.goto(base);
  await page.getByRole('heading', { name: options.expectAdmin ? 'Create the admin account' : 'Create an account' }).waitFor();
  if (options.expectAdmin) {
    await page.locator('[data-first-user]').getByText('admin').waitFor();
  }
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Connect Claude' }).waitFor();
  await page.locator('[data-whoami]').getByText(username).waitFor();
}

/**
 * Submits an API key on Connect Claude and waits for the server's answer.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} key
 * @returns {Promise<number>} the answer's HTTP status
 */
export async function submitApiKey(page, key) {
  const form = page.locator('[data-form="api-key"]');
  await form.getByLabel('API key').fill(key);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/claude/auth/api-key') && r.request().method() === 'POST'),
    form.getByRole('button', { name: 'Save key' }).click(),
  ]);
  // The secret is gone from the field whatever the answer.
  assert.equal(await form.getByLabel('API key').inputValue(), '');
  await form.getByRole('button', { name: 'Save key' }).and(page.locator(':enabled')).waitFor();
  return response.status();
}

/**
 * Connects a key the mock accepts and checks the status badge.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} key
 */
export async function connectApiKey(page, key) {
  assert.equal(await submitApiKey(page, key), 200);
  const badge = page.locator('[data-status-badge]');
  await badge.getByText('Claude connected').waitFor();
  await badge.getByText(`sk-ant-…${key.slice(-4)}`).waitFor();
}

/**
 * From Connect Claude, goes to Chat, creates a project and a session in it, and waits until
 * the session is open.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} project
 * @returns {Promise<string>} the session id
 */
export async function openNewSession(page, project) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chat' }).click();
  await page.getByRole('heading', { name: 'Projects' }).waitFor();
  await page.getByLabel('New project').fill(project);
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByRole('button', { name: project, exact: true, pressed: true }).waitFor();
  await page.getByRole('button', { name: 'New session' }).click();
  await page.waitForURL(/\/s\/[^/]+$/);
  await page.getByRole('textbox', { name: 'Message to Claude' }).waitFor();
  return decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
}

/**
 * Types a message and sends it with Enter.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} text
 */
export async function sendMessage(page, text) {
  const box = page.getByRole('textbox', { name: 'Message to Claude' });
  await page.getByRole('button', { name: 'Send' }).and(page.locator(':enabled')).waitFor();
  await box.fill(text);
  const [response] = await Promise.all([
    page.waitForResponse((r) => /\/api\/sessions\/[^/]+\/messages$/.test(r.url()) && r.request().method() === 'POST'),
    box.press('Enter'),
  ]);
  assert.equal(response.status(), 202, `sending "${text}" answered ${response.status()}`);
}

/**
 * Waits until the conversation shows `n` finished turns (their result lines).
 *
 * @param {import('playwright-core').Page} page
 * @param {number} n
 */
export async function waitForTurns(page, n) {
  await page.locator('.turn-result').nth(n - 1).waitFor();
}

/**
 * The user messages shown, in order.
 *
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
export async function userMessages(page) {
  return page.locator('.msg-user .msg-body').allTextContents();
}

/**
 * The settled assistant texts shown, in order.
 *
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
export async function assistantTexts(page) {
  return (await page.locator('.msg-assistant .block-text.settled').allTextContents()).map((t) => t.trim());
}
