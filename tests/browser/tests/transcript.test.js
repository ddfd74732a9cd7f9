/**
 * @file How the page draws a conversation, checked against the recorded output of the real
 * CLI, with the socket and the sessions API played by the test (playwright's `routeWebSocket`
 * and `route`), so that every case is exact and fast: tool blocks, results with cost, an
 * interrupted turn, Markdown that tries to inject HTML, replays that overlap what the page
 * already shows, a gap, and the error frames a person must act on. The daemon still serves
 * the page and the login.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PASSWORD, firstPage, launchBrowser, screenshot, startDaemon } from '../lib/harness.js';
import { fixtureTurns, numbered } from '../lib/fixture.js';

const SESSION = {
  id: 'fixture-session-0001', project: 'demo', model: 'claude-opus-5-5', permissionMode: 'default',
  state: 'idle', lastSeq: 0, createdAt: 1767225600, lastActive: 1767225600,
};

/**
 * A page logged in to a real daemon whose sessions API and socket are played by `server`.
 */
async function fakeBackend(t) {
  // No Claude is run here: the mock API is not needed, only a base URL.
  const daemon = await startDaemon(t, { mockUrl: 'http://127.0.0.1:9' });
  const context = await launchBrowser(t);
  const page = await firstPage(context);
  for (const path of ['/api/auth/register', '/api/auth/login']) {
    const r = await page.request.post(`${daemon.url}${path}`, { data: { username: 'tess', password: PASSWORD } });
    assert.ok(r.ok(), `${path}: ${r.status()}`);
  }
  const server = {
    frames: [],
    sockets: [],
    afters: [],
    posted: [],
    interrupts: 0,
    /** Called with the text of each POSTed message. */
    onMessage: null,
    push(frame) {
      const f = frame.seq === undefined && frame.type !== 'gap' ? { seq: this.frames.length + 1, ...frame } : frame;
      if (typeof f.seq === 'number') this.frames.push(f);
      for (const ws of this.sockets) ws.send(JSON.stringify(f));
    },
  };
  await page.route('**/api/projects', (route) => route.fulfill({ json: [{ id: 'demo' }] }));
  await page.route('**/api/sessions', (route) => route.fulfill({ json: [SESSION] }));
  await page.route(`**/api/sessions/${SESSION.id}`, (route) => route.fulfill({ json: { ...SESSION, lastSeq: server.frames.length } }));
  await page.route(`**/api/sessions/${SESSION.id}/messages`, (route) => {
    const { content } = route.request().postDataJSON();
    server.posted.push(content);
    route.fulfill({ status: 202, json: { seq: server.frames.length + 1 } });
    server.onMessage?.(content);
  });
  await page.route(`**/api/sessions/${SESSION.id}/interrupt`, (route) => {
    server.interrupts += 1;
    route.fulfill({ status: 202, body: '' });
  });
  await page.routeWebSocket(/\/ws\/sessions\//, (ws) => {
    const after = Number(new URL(ws.url()).searchParams.get('after'));
    server.afters.push(after);
    server.sockets.push(ws);
    ws.onClose((code, reason) => {
      server.sockets = server.sockets.filter((s) => s !== ws);
      ws.close({ code, reason });
    });
    for (const f of server.frames) if (f.seq > after) ws.send(JSON.stringify(f));
  });
  return { daemon, page, server };
}

test('the recorded CLI session draws as a conversation', async (t) => {
  const { daemon, page, server } = await fakeBackend(t);
  for (const f of numbered(fixtureTurns().flat(), 1)) server.frames.push(f);
  await page.goto(`${daemon.url}/s/${SESSION.id}`);
  await page.locator('.turn-result').nth(2).waitFor();

  assert.deepEqual(await page.locator('.msg-user .msg-body').allTextContents(),
    ['Hello there', 'TOOL:echo hi-from-bash', 'please be SLOW']);
  const texts = (await page.locator('.block-text.settled').allTextContents()).map((s) => s.trim());
  assert.deepEqual(texts, ['Hello from the mock.', 'TOOL-RESULT: hi-from-bash', 'w0 w1 w2 w3']);
  assert.equal(await page.locator('.block-text.streaming').count(), 0, 'every draft settled');

  const tool = page.locator('details.block-tool');
  assert.equal(await tool.count(), 1);
  await tool.locator('summary', { hasText: 'Bash' }).getByText('echo hi-from-bash').waitFor();
  assert.equal(await tool.locator('.tool-status').textContent(), 'done');
  assert.equal(await tool.locator('.tool-result pre').isVisible(), false, 'collapsed until opened');
  await tool.locator('summary').press('Enter');
  assert.equal((await tool.locator('.tool-result pre').textContent()).trim(), 'hi-from-bash');
  assert.match(await tool.locator('.tool-input pre').textContent(), /"command": "echo hi-from-bash"/);

  const results = await page.locator('.turn-result').allTextContents();
  assert.match(results[0], /^Done · \d+ ms · cost \$0\.00012$/);
  assert.match(results[1], /^Done · .+ · cost \$0\.00036$/);
  assert.match(results[2], /^Stopped · .+ · cost \$0\.00048$/);
  await page.getByText('[Request interrupted by user]').waitFor();
  await page.locator('.msg-flag', { hasText: 'Interrupted' }).waitFor();
  await page.locator('[data-session-state][data-state="idle"]').waitFor();
  await screenshot(page, 'transcript-fixture');
});

test('a streamed reply shows as it comes and settles on the final message', async (t) => {
  const { daemon, page, server } = await fakeBackend(t);
  await page.goto(`${daemon.url}/s/${SESSION.id}`);
  const box = page.getByRole('textbox', { name: 'Message to Claude' });
  await box.waitFor();
  const [first] = fixtureTurns();
  const userAt = first.findIndex((f) => f.type === 'user');
  const finalAt = first.findIndex((f) => f.type === 'claude' && f.event.type === 'assistant');
  server.onMessage = () => {
    for (const f of first.slice(0, finalAt - 1)) server.push(f);
  };
  // The route handler records a message before it answers: wait for the answer.
  const answered = (path) => page.waitForResponse((r) => r.url().endsWith(path));
  await box.fill('Hello there');
  await Promise.all([answered('/messages'), box.press('Enter')]);
  assert.deepEqual(server.posted, ['Hello there']);
  // Deltas "Hello ", "from ", "the " arrived; "mock." and the final message not yet.
  await page.locator('.block-text.streaming', { hasText: 'Hello from the' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Send' }).isDisabled(), true);
  assert.equal(await page.getByRole('button', { name: 'Stop' }).isEnabled(), true);
  assert.equal(await box.inputValue(), '', 'the composer is emptied once the server took it');
  assert.equal(await page.locator('.msg-user').count(), 1, 'the user message comes from the echo');
  assert.ok(userAt >= 0);
  for (const f of first.slice(finalAt - 1)) server.push(f);
  await page.locator('.block-text.settled', { hasText: 'Hello from the mock.' }).waitFor();
  await page.getByRole('button', { name: 'Send' }).and(page.locator(':enabled')).waitFor();
  // Shift+Enter is a new line, not a send.
  await box.fill('line one');
  await box.press('Shift+Enter');
  await box.type('line two');
  assert.equal(await box.inputValue(), 'line one\nline two');
  // Sending now posts the two lines as one message, and nothing was sent before.
  await Promise.all([answered('/messages'), box.press('Enter')]);
  assert.deepEqual(server.posted, ['Hello there', 'line one\nline two']);
});

test('Markdown renders, and HTML in Claude\'s text never runs', async (t) => {
  const { daemon, page, server } = await fakeBackend(t);
  const evil = [
    '# Title', '', 'Some **bold** and `code`.', '',
    '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>', '',
    '[click](javascript:window.__pwned=3) and [safe](https://example.com/docs)', '',
    '![tracker](https://example.com/pixel.png)', '',
    '```js', 'let x = "<b>not bold</b>";', '```',
  ].join('\n');
  server.frames.push(...numbered([
    { type: 'user', content: 'show me <b>markup</b>' },
    { type: 'claude', event: { type: 'assistant', message: { id: 'msg_evil', content: [{ type: 'text', text: evil }] } } },
  ], 1));
  await page.goto(`${daemon.url}/s/${SESSION.id}`);
  const block = page.locator('.block-text.settled');
  await block.locator('h1', { hasText: 'Title' }).waitFor();
  await block.locator('strong', { hasText: 'bold' }).waitFor();
  assert.equal(await page.locator('.msg-user .msg-body').textContent(), 'show me <b>markup</b>');
  assert.equal(await page.locator('.msg-user b').count(), 0);
  assert.equal(await block.locator('img, script, b').count(), 0);
  assert.match(await block.textContent(), /<img src=x onerror=/, 'raw HTML shows as text');
  assert.equal(await block.locator('a', { hasText: 'click' }).getAttribute('href'), null);
  const safe = block.locator('a', { hasText: 'safe' });
  assert.equal(await safe.getAttribute('href'), 'https://example.com/docs');
  assert.equal(await safe.getAttribute('rel'), 'noopener noreferrer nofollow');
  assert.equal(await block.locator('pre code').textContent(), 'let x = "<b>not bold</b>";\n');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
});

test('reconnects resume after the last seq and never show a frame twice', async (t) => {
  const { daemon, page, server } = await fakeBackend(t);
  const [first, second] = fixtureTurns();
  for (const f of first) server.push(f);
  await page.goto(`${daemon.url}/s/${SESSION.id}`);
  await page.locator('.turn-result').first().waitFor();
  const seen = server.frames.length;
  assert.deepEqual(server.afters, [0]);

  // The server closes the socket as "too slow" (1013): the page reconnects at once.
  server.sockets[0].close({ code: 1013, reason: 'client too slow' });
  await page.waitForFunction((n) => window.__sashadTest?.socketStatus() === 'open' && window.__sashadTest.lastSeq() === n, seen);
  assert.deepEqual(server.afters, [0, seen]);

  // A server that replays too much (overlap) still shows everything once.
  for (const ws of server.sockets) {
    for (const f of server.frames.slice(-5)) ws.send(JSON.stringify(f));
  }
  for (const f of second) server.push(f);
  await page.locator('.turn-result').nth(1).waitFor();
  assert.deepEqual(await page.locator('.msg-user .msg-body').allTextContents(), ['Hello there', 'TOOL:echo hi-from-bash']);
  assert.equal(await page.locator('.block-text.settled').count(), 2);

  // Dropped by the page's test hook: the banner shows until the socket is back.
  await page.evaluate(() => window.__sashadTest.dropSocket({ hold: true }));
  await page.getByRole('alert').getByText('Reconnecting…').waitFor();
  server.frames.push({ seq: server.frames.length + 1, type: 'claude', event: { type: 'system', subtype: 'status' } });
  await page.evaluate(() => window.__sashadTest.resumeSocket());
  await page.getByText('Reconnecting…').waitFor({ state: 'detached' });
  assert.equal(server.afters.at(-1), seen + second.length);

  // Events that left the replay ring are announced.
  server.push({ type: 'gap', from: 3, to: 9 });
  await page.getByText('Events 3–9 are no longer kept by the server').waitFor();
});

test('errors a person can act on', async (t) => {
  const { daemon, page, server } = await fakeBackend(t);
  await page.goto(`${daemon.url}/s/${SESSION.id}`);
  await page.getByRole('textbox', { name: 'Message to Claude' }).waitFor();

  server.push({ type: 'error', error: 'credentials_expired', message: 'the Claude sign-in expired; sign in again' });
  const banner = page.locator('[data-banner="credentials"]');
  await banner.getByText('Your Claude credential has expired.').waitFor();
  await banner.getByText('the Claude sign-in expired; sign in again').waitFor();
  assert.equal(await banner.getByRole('link', { name: 'Connect Claude' }).getAttribute('href'), '/connect');

  server.push({ type: 'error', error: 'session_limit', message: 'you have 10 sessions; delete one first' });
  await page.locator('.note-error', { hasText: 'you have 10 sessions; delete one first' }).waitFor();
  server.push({ type: 'error', error: 'spawn_failed', message: 'cannot start claude: not found' });
  await page.locator('.note-error', { hasText: 'cannot start claude: not found' }).waitFor();
  server.push({ type: 'state', state: 'exited', code: 3, stderrTail: 'boom\n' });
  await page.locator('.note-error', { hasText: 'exit code 3' }).waitFor();
  await page.locator('[data-session-state][data-state="exited"]').waitFor();
  server.push({ type: 'raw', line: 'not json at all' });
  await page.locator('.note-raw', { hasText: 'not json at all' }).waitFor();
  await screenshot(page, 'transcript-errors');

  // A turn that succeeds afterwards takes the credentials banner down.
  const [first] = fixtureTurns();
  for (const f of first.filter((x) => x.type !== 'user')) server.push(f);
  await page.locator('.turn-result', { hasText: 'Done' }).waitFor();
  await banner.waitFor({ state: 'detached' });

  // Stop while busy posts an interrupt.
  server.push({ type: 'state', state: 'busy' });
  await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/interrupt')),
    page.getByRole('button', { name: 'Stop' }).and(page.locator(':enabled')).click(),
  ]);
  await page.waitForFunction(() => document.querySelector('.status-line')?.textContent === 'Stopping…');
  assert.equal(server.interrupts, 1);
});
