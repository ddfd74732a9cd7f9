/**
 * @file Chatting, in a real browser against the real daemon, the real Claude Code CLI and the
 * mock API: streaming, history across reloads and tabs, Stop, reconnecting, and a credential
 * Claude rejects.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { GOOD_KEY, REJECT_MESSAGES_KEY, screenshot, setup } from '../lib/harness.js';
import {
  assistantTexts, connectApiKey, openNewSession, register, sendMessage, userMessages, waitForTurns,
} from '../lib/ui.js';

/** The mock's default reply (`tests/it/common/mock_api.rs`, `DEFAULT_REPLY`). */
const MOCK_REPLY = 'Hello from the mock.';

/**
 * A logged-in user with a connected key and an open session.
 *
 * @returns {Promise<object>}
 */
async function chatReady(t, { key = GOOD_KEY, name = 'alice', config } = {}) {
  const env = await setup(t, { config });
  await register(env.page, env.daemon.url, name);
  await connectApiKey(env.page, key);
  const sessionId = await openNewSession(env.page, `${name}-project`);
  return { ...env, sessionId };
}

/** Records, in the page, every text a streaming block showed before it settled. */
async function recordDrafts(page) {
  await page.evaluate(() => {
    window.__drafts = [];
    new MutationObserver(() => {
      for (const el of document.querySelectorAll('.block-text.streaming')) {
        window.__drafts.push(el.textContent);
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}

test('a prompt streams the reply in, settles it, and shows the cost', async (t) => {
  const env = await chatReady(t);
  const { page } = env;
  await recordDrafts(page);
  await sendMessage(page, 'Hello there, **Claude**');
  await waitForTurns(page, 1);
  assert.deepEqual(await userMessages(page), ['Hello there, **Claude**']);
  assert.deepEqual(await assistantTexts(page), [MOCK_REPLY]);
  const drafts = await page.evaluate(() => window.__drafts);
  assert.ok(drafts.some((d) => d.length > 0 && d.length < MOCK_REPLY.length && MOCK_REPLY.startsWith(d)),
    `a partial reply was on screen before the final one: ${JSON.stringify(drafts)}`);
  const result = await page.locator('.turn-result').first().textContent();
  assert.match(result, /Done · .+ · cost \$\d/);
  await page.getByRole('button', { name: 'Send' }).and(page.locator(':enabled')).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Stop' }).isDisabled(), true);
  await screenshot(page, 'chat');
});

test('a tool call folds open with its input and result', async (t) => {
  const { page } = await chatReady(t, { config: { claude: { extra_args: ['--allowedTools', 'Bash'] } } });
  await sendMessage(page, 'Hello! Can you show me a **tool**?');
  await waitForTurns(page, 1);
  await sendMessage(page, 'TOOL:echo hello from bash');
  await waitForTurns(page, 2);
  const tool = page.locator('details.block-tool');
  await tool.locator('summary', { hasText: 'Bash' }).getByText('echo hello from bash').waitFor();
  assert.equal(await tool.locator('.tool-status').textContent(), 'done');
  await tool.locator('summary').click();
  assert.equal((await tool.locator('.tool-result pre').textContent()).trim(), 'hello from bash');
  assert.deepEqual(await assistantTexts(page), [MOCK_REPLY, 'TOOL-RESULT: hello from bash']);
  await page.getByRole('textbox', { name: 'Message to Claude' }).focus();
  await page.locator('.transcript').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await screenshot(page, 'chat-tool');
});

test('reloading shows the history, and a second tab sees messages sent from the first', async (t) => {
  const env = await chatReady(t);
  const { page, context } = env;
  await sendMessage(page, 'first message');
  await waitForTurns(page, 1);

  await page.reload();
  await waitForTurns(page, 1);
  assert.deepEqual(await userMessages(page), ['first message']);
  assert.deepEqual(await assistantTexts(page), [MOCK_REPLY]);

  const second = await context.newPage();
  await second.goto(page.url());
  await waitForTurns(second, 1);
  assert.deepEqual(await userMessages(second), ['first message']);

  await sendMessage(page, 'second message, from tab one');
  await waitForTurns(second, 2);
  await waitForTurns(page, 2);
  for (const p of [page, second]) {
    assert.deepEqual(await userMessages(p), ['first message', 'second message, from tab one']);
    assert.deepEqual(await assistantTexts(p), [MOCK_REPLY, MOCK_REPLY]);
  }
  await screenshot(second, 'chat-second-tab');
});

test('Stop during a slow reply ends the turn and the composer works again', async (t) => {
  const env = await chatReady(t);
  const { page } = env;
  await sendMessage(page, 'please be SLOW');
  // Words stream in, one every 300 ms.
  await page.locator('.block-text.streaming', { hasText: 'w1' }).waitFor();
  const stop = page.getByRole('button', { name: 'Stop' });
  assert.equal(await page.getByRole('button', { name: 'Send' }).isDisabled(), true, 'Send waits for the turn');
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/interrupt') && r.status() === 202),
    stop.click(),
  ]);
  await page.locator('.turn-result', { hasText: 'Stopped' }).waitFor();
  await page.getByRole('button', { name: 'Send' }).and(page.locator(':enabled')).waitFor();
  const partial = (await assistantTexts(page))[0] ?? '';
  assert.match(partial, /^w0 w1/);
  assert.ok(!partial.includes('w59'), 'the reply was cut short');
  await screenshot(page, 'chat-stopped');

  await sendMessage(page, 'and now a normal one');
  await page.locator('.turn-result', { hasText: 'Done' }).waitFor();
  assert.equal((await assistantTexts(page)).at(-1), MOCK_REPLY);
});

test('a dropped socket shows the banner, reconnects, and shows later messages once', async (t) => {
  const env = await chatReady(t);
  const { page, context } = env;
  await sendMessage(page, 'before the drop');
  await waitForTurns(page, 1);

  await page.evaluate(() => window.__sashadTest.dropSocket({ hold: true }));
  await page.getByRole('alert').getByText('Reconnecting…').waitFor();

  // Meanwhile, another tab carries on the conversation.
  const other = await context.newPage();
  await other.goto(page.url());
  await waitForTurns(other, 1);
  await sendMessage(other, 'while the first tab was away');
  await waitForTurns(other, 2);
  await screenshot(page, 'chat-reconnecting');

  await page.evaluate(() => window.__sashadTest.resumeSocket());
  await waitForTurns(page, 2);
  await page.getByText('Reconnecting…').waitFor({ state: 'detached' });
  assert.deepEqual(await userMessages(page), ['before the drop', 'while the first tab was away']);
  assert.deepEqual(await assistantTexts(page), [MOCK_REPLY, MOCK_REPLY]);

  // Live again: a message after the reconnect shows once too.
  await sendMessage(page, 'after the reconnect');
  await waitForTurns(page, 3);
  assert.deepEqual(await userMessages(page),
    ['before the drop', 'while the first tab was away', 'after the reconnect']);
  assert.equal(await page.locator('.turn-result').count(), 3);
});

test('a credential Claude rejects raises a banner that links to Connect Claude', async (t) => {
  const env = await chatReady(t, { key: REJECT_MESSAGES_KEY, name: 'mallory' });
  const { page } = env;
  await sendMessage(page, 'Hello?');
  const banner = page.locator('[data-banner="credentials"]');
  await banner.getByText('Claude rejected your credential.').waitFor({ timeout: 30_000 });
  await screenshot(page, 'chat-credentials-rejected');
  await banner.getByRole('link', { name: 'Connect Claude' }).click();
  await page.getByRole('heading', { name: 'Connect Claude' }).waitFor();
});

test('a CLI that cannot start and the session limit give their messages; delete frees a slot', async (t) => {
  const env = await chatReady(t, {
    name: 'oscar',
    config: { claude: { binary: '/nonexistent/claude' }, limits: { sessions_per_user: 1 } },
  });
  const { page } = env;
  // The server answers the send once the child has started, or with why it could not.
  const box = page.getByRole('textbox', { name: 'Message to Claude' });
  await box.fill('Hello?');
  await box.press('Enter');
  await page.locator('.composer [role="alert"] code', { hasText: 'spawn_failed' }).waitFor();
  assert.equal(await box.inputValue(), 'Hello?', 'a refused message stays in the box');
  await page.locator('.note-error[data-error="spawn_failed"]', { hasText: '/nonexistent/claude' }).waitFor();
  await page.locator('[data-session-state][data-state="failed"]').waitFor();

  // One session is the most this user may have: the server's message shows.
  await page.getByRole('button', { name: 'New session' }).click();
  const error = page.locator('.sidebar [role="alert"]');
  await error.locator('code', { hasText: 'session_limit' }).waitFor();
  assert.match(await error.textContent(), /delete one first/);
  await screenshot(page, 'chat-limits');

  // Delete asks for a second press, then frees the slot.
  const item = page.locator(`.session-item[data-session-id="${env.sessionId}"]`);
  await item.getByRole('button', { name: /^Delete/ }).click();
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'DELETE'),
    item.getByRole('button', { name: /^Confirm: delete/ }).click(),
  ]);
  assert.equal(response.status(), 204);
  await page.waitForURL((url) => url.pathname === '/');
  await page.getByText('No sessions in this project yet.').waitFor();
  await page.getByRole('button', { name: 'New session' }).click();
  await page.waitForURL(/\/s\/[^/]+$/);
});
