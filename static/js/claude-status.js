/**
 * @file The user's Claude connection, from `GET /api/claude/auth/status`: what it is, whether
 * it needs re-authentication, and which ways of connecting the server offers. Nothing secret
 * is ever in it: the hint is the last four characters of a key.
 */

import { api } from './api.js';
import { h, replace } from './dom.js';
import { formatTime } from './format.js';

/** @type {any} the last status fetched */
let current = null;
const listeners = new Set();

/**
 * Fetches the status and tells every listener.
 *
 * @returns {Promise<any>} `{authenticated, authType, hint, validatedAt, validation, needsReauth, methods}`
 */
export async function refreshClaudeStatus() {
  const status = await api('GET', '/api/claude/auth/status');
  setClaudeStatus(status);
  return status;
}

/**
 * Records a status the server sent (the answer of a connect or disconnect call).
 *
 * @param {any} status
 */
export function setClaudeStatus(status) {
  current = status;
  for (const fn of listeners) fn(status);
}

/** @returns {any} the last known status, or null */
export function claudeStatus() {
  return current;
}

/**
 * Calls `fn(status)` on every change, and now if a status is known.
 *
 * @param {(status: any) => void} fn
 * @returns {() => void} unsubscribe
 */
export function onClaudeStatus(fn) {
  listeners.add(fn);
  if (current) fn(current);
  return () => listeners.delete(fn);
}

const KIND_LABELS = {
  apiKey: 'API key', api_key: 'API key', ApiKey: 'API key',
  oauth: 'Claude account', OAuth: 'Claude account', Oauth: 'Claude account',
  setupToken: 'setup token', setup_token: 'setup token', SetupToken: 'setup token',
  bedrock: 'Amazon Bedrock', vertex: 'Google Vertex AI',
};

/**
 * A person's name for a credential kind.
 *
 * @param {string} kind
 * @returns {string}
 */
export function kindLabel(kind) {
  return KIND_LABELS[kind] ?? String(kind ?? 'credential');
}

/**
 * Fills a badge element: "Claude connected", "Claude needs re-auth", or "Claude not connected".
 *
 * @param {HTMLElement} el
 * @param {any} status
 * @param {{long?: boolean}} [options]  `long`: add the kind, hint and validation time.
 */
export function renderBadge(el, status, options = {}) {
  el.classList.remove('badge-ok', 'badge-warn', 'badge-off');
  if (!status) {
    replace(el);
    return;
  }
  if (status.needsReauth) {
    el.classList.add('badge-warn');
    replace(el, 'Claude needs re-auth');
  } else if (status.authenticated) {
    el.classList.add('badge-ok');
    replace(el, 'Claude connected');
  } else {
    el.classList.add('badge-off');
    replace(el, 'Claude not connected');
  }
  if (options.long && (status.authenticated || status.needsReauth)) {
    const parts = [kindLabel(status.authType)];
    if (status.hint) parts.push(status.hint);
    el.append(' · ', h('span', { class: 'badge-detail', text: parts.join(' ') }));
    if (status.validation === 'rateLimited' || status.validation === 'rate_limited') {
      el.append(' · ', h('span', { class: 'badge-detail', text: 'validated while rate limited' }));
    } else if (status.validatedAt) {
      el.append(' · ', h('span', { class: 'badge-detail', text: `checked ${formatTime(status.validatedAt)}` }));
    }
  }
}
