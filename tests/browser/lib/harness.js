/**
 * @file What every browser test needs: the mock Anthropic API, a real `sashad` daemon pointed
 * at it (its own temporary data directory, port 0, the pinned Claude Code CLI), and Debian's
 * chromium driven by playwright-core with a fresh profile. Everything started here is stopped
 * by the test's `after` hooks. Tests wait on events (log lines, selectors, responses), never on
 * fixed sleeps.
 *
 * Binaries come from `target/debug` (`make browser-test` builds them first); `SASHAD_BIN`,
 * `MOCK_ANTHROPIC_BIN`, `CLAUDE_BIN` and `CHROMIUM` override the paths.
 */

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** The repository's root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where screenshots go (gitignored). */
export const ARTIFACTS = path.join(ROOT, 'test-artifacts');

const SASHAD_BIN = process.env.SASHAD_BIN ?? path.join(ROOT, 'target/debug/sashad');
const MOCK_BIN = process.env.MOCK_ANTHROPIC_BIN ?? path.join(ROOT, 'target/debug/examples/mock_anthropic');
const CLAUDE_BIN = process.env.CLAUDE_BIN ?? path.join(ROOT, 'tools/claude/node_modules/.bin/claude');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** How long a process may take to start listening, in ms. */
const START_TIMEOUT_MS = 30_000;

/** The flags chromium runs with: headless, no sandbox (root), and no traffic of its own. */
export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A key the mock accepts everywhere. */
export const GOOD_KEY = 'sk-ant-api03-browser-test-good-key-0001';
/**
 * A well-formed key (sashad's shape check passes it) that the mock's key check, `GET
 * /v1/models`, answers 401, as it does every key not starting with `sk-ant-`.
 */
export const INVALID_KEY = 'sk-wrong-browser-test-invalid-0002';
/**
 * A key the key check accepts but that `POST /v1/messages` answers 401, as a key revoked after
 * it was stored: every mock here is started with `--reject` for it.
 */
export const REJECT_MESSAGES_KEY = 'sk-ant-api03-browser-test-revoked-0003';

/** The password of every test account. */
export const PASSWORD = 'a long browser-test password';

/** @type {WeakMap<object, Array<() => any>>} each test's cleanups, run last-in first-out */
const cleanups = new WeakMap();

/**
 * Runs `fn` when the test ends, before anything deferred earlier: a browser closes before its
 * profile folder is removed, a daemon stops before its data directory goes. (`t.after` hooks
 * run in the order they were added.) Every cleanup runs even when one fails; the first
 * failure is reported.
 *
 * @param {import('node:test').TestContext} t
 * @param {() => any} fn
 */
export function defer(t, fn) {
  let list = cleanups.get(t);
  if (!list) {
    list = [];
    cleanups.set(t, list);
    t.after(async () => {
      let failure = null;
      while (list.length) {
        try {
          await list.pop()();
        } catch (e) {
          failure ??= e;
        }
      }
      if (failure) throw failure;
    });
  }
  list.push(fn);
}

/**
 * Makes a temporary directory removed after the test.
 *
 * @param {import('node:test').TestContext} t
 * @param {string} prefix
 * @returns {string}
 */
export function tempDir(t, prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  defer(t, () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * An environment without the test runner's sashad, Anthropic and Claude Code variables, which
 * would change what the daemon or its children do.
 */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('SASHAD') || k.startsWith('ANTHROPIC_') || k.startsWith('CLAUDE') || k === 'RUST_LOG') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * A spawned process whose output lines are kept and can be waited on.
 */
class Proc {
  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.lines = [];
    this.waiters = new Set();
    this.exited = null;
    for (const stream of [child.stdout, child.stderr]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        this.lines.push(line);
        for (const w of this.waiters) w.check();
      });
    }
    child.on('exit', (code, signal) => {
      this.exited = { code, signal };
      for (const w of this.waiters) w.check();
    });
  }

  /**
   * Waits for an output line for which `match` returns a value.
   *
   * @template T
   * @param {(line: string) => T|undefined|null} match
   * @param {number} timeoutMs
   * @returns {Promise<T>}
   */
  waitForLine(match, timeoutMs = START_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      let from = 0;
      const waiter = {
        check: () => {
          for (; from < this.lines.length; from += 1) {
            const found = match(this.lines[from]);
            if (found !== undefined && found !== null) {
              done();
              resolve(found);
              return;
            }
          }
          if (this.exited) {
            done();
            reject(new Error(`${this.name} exited (${JSON.stringify(this.exited)}) before the line we waited for:\n${this.text()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no matching line within ${timeoutMs} ms:\n${this.text()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  text() {
    return this.lines.slice(-200).join('\n');
  }

  /** Stops the process: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000) {
    if (this.exited) return this.exited;
    const exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const result = await exited;
    clearTimeout(timer);
    return result;
  }
}

/**
 * Starts the mock Anthropic API on a free loopback port.
 *
 * @param {import('node:test').TestContext} t
 * @returns {Promise<{url: string, proc: Proc}>}
 */
export async function startMock(t) {
  mustExist(MOCK_BIN, 'the mock API example (cargo build --example mock_anthropic)');
  const args = ['--listen', '127.0.0.1:0', '--reject', REJECT_MESSAGES_KEY];
  const child = spawn(MOCK_BIN, args, { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = new Proc('mock_anthropic', child);
  defer(t, () => proc.stop(2000));
  const url = await proc.waitForLine((line) => (/^http:\/\/127\.0\.0\.1:\d+$/.test(line.trim()) ? line.trim() : null));
  return { url, proc };
}

/**
 * Starts `sashad serve` on port 0 with its own data directory, pointed at the mock.
 *
 * @param {import('node:test').TestContext} t
 * @param {{mockUrl: string, config?: Record<string, Record<string, any>>}} options
 * @returns {Promise<{url: string, proc: Proc, dataDir: string}>}
 */
export async function startDaemon(t, { mockUrl, config = {} }) {
  mustExist(SASHAD_BIN, 'the daemon (cargo build --bin sashad)');
  mustExist(CLAUDE_BIN, 'the pinned Claude Code CLI (make cli)');
  const dir = tempDir(t, 'sashad-browser-');
  const dataDir = path.join(dir, 'data');
  const settings = {
    server: { listen: '127.0.0.1:0' },
    storage: { data_dir: dataDir },
    auth: { login_attempts_per_username: 1000, login_attempts_per_ip: 1000 },
    anthropic: { base_url: mockUrl },
    claude: { binary: CLAUDE_BIN },
    log: { level: 'info' },
  };
  for (const [section, values] of Object.entries(config)) {
    settings[section] = { ...(settings[section] ?? {}), ...values };
  }
  const configPath = path.join(dir, 'sashad.toml');
  fs.writeFileSync(configPath, toToml(settings));
  const child = spawn(SASHAD_BIN, ['--config', configPath, 'serve'], {
    cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new Proc('sashad', child);
  defer(t, async () => {
    const status = await proc.stop();
    if (status.signal === 'SIGKILL') throw new Error(`sashad did not stop on SIGTERM:\n${proc.text()}`);
  });
  const addr = await proc.waitForLine((line) => /listening on http:\/\/([0-9.:[\]]+)/.exec(line)?.[1]);
  return { url: `http://${addr}`, proc, dataDir };
}

/**
 * Launches chromium with a fresh profile; the browser closes after the test.
 *
 * @param {import('node:test').TestContext} t
 * @returns {Promise<import('playwright-core').BrowserContext>}
 */
export async function launchBrowser(t) {
  mustExist(CHROMIUM, 'chromium (apt-get install chromium)');
  const profile = tempDir(t, 'sashad-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1100, height: 800 },
  });
  context.setDefaultTimeout(20_000);
  defer(t, () => context.close());
  // A page error (an exception, a CSP violation) fails the test that caused it.
  const problems = [];
  context.on('page', (page) => watchPage(page, problems));
  for (const page of context.pages()) watchPage(page, problems);
  defer(t, () => {
    if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
  });
  return context;
}

function watchPage(page, problems) {
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) problems.push(`console: ${text}`);
  });
}

/**
 * The first page of a context (a persistent context opens one).
 *
 * @param {import('playwright-core').BrowserContext} context
 * @returns {Promise<import('playwright-core').Page>}
 */
export async function firstPage(context) {
  return context.pages()[0] ?? context.newPage();
}

/**
 * Saves a screenshot as a test artefact: `test-artifacts/<name>.png`.
 *
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/**
 * The daemon (with the mock and a browser) for one test.
 *
 * @param {import('node:test').TestContext} t
 * @param {{config?: object | ((mockUrl: string) => object)}} [options] daemon config sections;
 *   a function gets the mock's base URL (for settings that point at it, such as `[oauth]`).
 */
export async function setup(t, options = {}) {
  const mock = await startMock(t);
  const config = typeof options.config === 'function' ? options.config(mock.url) : options.config;
  const daemon = await startDaemon(t, { mockUrl: mock.url, config });
  const context = await launchBrowser(t);
  const page = await firstPage(context);
  return { mock, daemon, context, page };
}

function mustExist(file, what) {
  if (!fs.existsSync(file)) throw new Error(`missing ${what}: ${file}`);
}

/** A tiny TOML writer for the config: sections of strings, numbers, booleans and arrays. */
function toToml(settings) {
  const value = (v) => (Array.isArray(v) ? `[${v.map(value).join(', ')}]` : typeof v === 'string' ? JSON.stringify(v) : String(v));
  return Object.entries(settings)
    .map(([section, values]) => `[${section}]\n${Object.entries(values).map(([k, v]) => `${k} = ${value(v)}`).join('\n')}\n`)
    .join('\n');
}
