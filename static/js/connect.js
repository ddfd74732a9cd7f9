/**
 * @file The Connect Claude screen: the connection's status, an API-key form (the default way),
 * and, only when the server says it offers them (`methods.oauth`, `methods.setupToken`), Claude
 * account sign-in and setup-token entry. Secrets are never shown back: every secret field is
 * emptied as soon as it is submitted, whatever the answer.
 */

import { api, ApiError } from './api.js';
import { field, h, replace } from './dom.js';
import { claudeStatus, kindLabel, refreshClaudeStatus, renderBadge, setClaudeStatus } from './claude-status.js';
import { hideBanner } from './banners.js';

/** Where people create API keys. */
export const CONSOLE_KEYS_URL = 'https://console.anthropic.com/settings/keys';

/** How often the page asks whether an OAuth sign-in finished, in ms. */
const OAUTH_POLL_MS = 1500;
/** How long the page keeps asking, in ms. */
const OAUTH_POLL_LIMIT_MS = 10 * 60 * 1000;

/**
 * Renders the screen into `main`.
 *
 * @param {HTMLElement} main
 * @param {{navigate: (path: string) => void}} hooks
 */
export async function renderConnect(main, { navigate }) {
  let status = claudeStatus();
  try {
    status = await refreshClaudeStatus();
  } catch (e) {
    replace(main, h('p', { class: 'error', role: 'alert', text: e.message }));
    return;
  }
  const badge = h('p', { class: 'badge status-badge', 'data-status-badge': '' });
  const statusNote = h('p', { class: 'hint', 'aria-live': 'polite' });
  const disconnect = h('button', { type: 'button', class: 'danger', text: 'Disconnect' });
  const next = h('a', { href: '/', 'data-route': '', class: 'button primary', text: 'Continue to chat' });
  const statusCard = h('section', { class: 'card', 'aria-labelledby': 'status-title' },
    h('h2', { id: 'status-title', text: 'Status' }), badge, statusNote,
    h('div', { class: 'actions' }, next, disconnect));

  function paint(s) {
    renderBadge(badge, s, { long: true });
    const connected = Boolean(s?.authenticated || s?.needsReauth);
    disconnect.hidden = !connected;
    next.hidden = !s?.authenticated;
    if (s?.needsReauth) {
      statusNote.textContent = `Claude no longer accepts your ${kindLabel(s.authType)}. Connect again below.`;
    } else if (s?.authenticated) {
      statusNote.textContent = 'Your sessions use this credential. Connecting another one replaces it.';
    } else {
      statusNote.textContent = 'Connect your own Claude credential to start chatting.';
    }
  }
  paint(status);

  disconnect.addEventListener('click', async () => {
    disconnect.disabled = true;
    try {
      await api('DELETE', '/api/claude/auth');
      await refreshClaudeStatus().then(paint);
      statusNote.textContent = 'Disconnected. Your running sessions were stopped.';
    } catch (e) {
      statusNote.textContent = e.message;
    } finally {
      disconnect.disabled = false;
    }
  });

  const connected = (s) => {
    setClaudeStatus(s);
    paint(s);
    hideBanner('credentials');
  };

  const methods = status?.methods ?? { apiKey: true };
  replace(main, h('div', { class: 'connect-screen' },
    h('h1', { text: 'Connect Claude' }),
    statusCard,
    methods.apiKey !== false ? apiKeyCard(connected) : null,
    methods.oauth ? oauthCard(connected) : null,
    methods.setupToken ? setupTokenCard(connected) : null));
  void navigate;
}

/**
 * A form that posts one secret and shows the server's error text as it comes.
 *
 * @returns {HTMLFormElement}
 */
function secretForm({ title, intro, label, name, hint, submitText, busyText, post, onConnected, testId }) {
  const secret = field(label, {
    type: 'password', name, autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none',
    required: true,
  }, hint);
  const error = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const ok = h('p', { class: 'form-ok', role: 'status', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary', text: submitText });
  const titleId = `${name}-title`;
  const form = h('form', { class: 'card', 'aria-labelledby': titleId, novalidate: true, dataset: { form: testId } },
    h('h2', { id: titleId, text: title }), intro, secret.field, error, ok,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = secret.input.value;
    // Never keep a secret in the page longer than it takes to send it.
    secret.input.value = '';
    error.hidden = true;
    ok.hidden = true;
    if (!value.trim()) {
      showFormError(error, 'Paste the value first.', null);
      secret.input.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = busyText;
    try {
      const status = await post(value.trim());
      ok.textContent = 'Connected.';
      ok.hidden = false;
      onConnected(status);
    } catch (e) {
      showFormError(error, e.message, e instanceof ApiError ? e.code : null);
      secret.input.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = submitText;
    }
  });
  return form;
}

function showFormError(el, message, code) {
  replace(el, h('span', { class: 'message', text: message }),
    code ? h('code', { class: 'error-code', text: code }) : null);
  el.hidden = false;
}

function apiKeyCard(onConnected) {
  return secretForm({
    title: 'Use an API key',
    intro: h('p', {},
      'Create a key in the ',
      h('a', { href: CONSOLE_KEYS_URL, target: '_blank', rel: 'noopener noreferrer', text: 'Anthropic Console' }),
      ' and paste it here. sashad checks it with Anthropic before storing it, encrypted, and never shows it again.'),
    label: 'API key',
    name: 'apiKey',
    hint: 'Starts with sk-ant-. Usage is billed to your Anthropic account.',
    submitText: 'Save key',
    busyText: 'Checking…',
    post: (apiKey) => api('POST', '/api/claude/auth/api-key', { apiKey }),
    onConnected,
    testId: 'api-key',
  });
}

function setupTokenCard(onConnected) {
  return secretForm({
    title: 'Use a setup token',
    intro: h('p', {}, 'Run ', h('code', { text: 'claude setup-token' }),
      ' on your own computer, sign in with your Claude account, and paste the token it prints.'),
    label: 'Setup token',
    name: 'setupToken',
    hint: null,
    submitText: 'Save token',
    busyText: 'Saving…',
    post: (token) => api('POST', '/api/claude/auth/setup-token', { token }),
    onConnected,
    testId: 'setup-token',
  });
}

function oauthCard(onConnected) {
  const note = h('p', { class: 'hint', 'aria-live': 'polite' });
  const start = h('button', { type: 'button', class: 'primary', text: 'Sign in with Claude account' });
  let polling = null;
  start.addEventListener('click', async () => {
    start.disabled = true;
    note.textContent = '';
    // Opened before the request, in the click, so that popup blockers allow it.
    const popup = window.open('about:blank', 'sashad-oauth', 'popup,width=520,height=720');
    try {
      const { authUrl, state } = await api('POST', '/api/claude/auth/oauth/initiate');
      if (popup) popup.location.href = authUrl;
      else note.textContent = 'Allow pop-ups for this page, or paste the code below.';
      note.textContent ||= 'Finish signing in in the new window…';
      clearInterval(polling);
      const began = Date.now();
      polling = setInterval(async () => {
        if (Date.now() - began > OAUTH_POLL_LIMIT_MS) {
          clearInterval(polling);
          note.textContent = 'The sign-in took too long. Start again.';
          return;
        }
        try {
          const s = await api('GET', `/api/claude/auth/oauth/status/${encodeURIComponent(state)}`);
          if (s.status === 'completed') {
            clearInterval(polling);
            note.textContent = 'Signed in.';
            onConnected(await refreshClaudeStatus());
          } else if (s.status === 'failed' || s.status === 'expired') {
            clearInterval(polling);
            note.textContent = `Sign-in ${s.status}${s.reason ? `: ${s.reason}` : ''}. Start again.`;
          }
        } catch (e) {
          clearInterval(polling);
          note.textContent = e.message;
        }
      }, OAUTH_POLL_MS);
    } catch (e) {
      popup?.close();
      note.textContent = e.message;
    } finally {
      start.disabled = false;
    }
  });
  const codeForm = secretForm({
    title: 'Paste a sign-in code',
    intro: h('p', {}, 'If the sign-in page shows a code instead of coming back here, paste it.'),
    label: 'Code',
    name: 'oauthCode',
    hint: null,
    submitText: 'Submit code',
    busyText: 'Checking…',
    post: (code) => api('POST', '/api/claude/auth/oauth/code', { code }),
    onConnected,
    testId: 'oauth-code',
  });
  codeForm.classList.add('nested');
  return h('section', { class: 'card', 'aria-labelledby': 'oauth-title', dataset: { form: 'oauth' } },
    h('h2', { id: 'oauth-title', text: 'Sign in with a Claude account' }),
    h('p', {}, 'Use your Claude subscription instead of an API key.'),
    h('div', { class: 'actions' }, start), note, codeForm);
}
