/**
 * @file The page's entry point: who is logged in, the header, and a small router over the
 * History API. Every path that is not a file is served `index.html` by the daemon, so these
 * routes survive a reload:
 *
 * | path | screen |
 * |---|---|
 * | `/login` | log in or register |
 * | `/connect` | Connect Claude |
 * | `/` | Chat, no session open |
 * | `/s/<session id>` | Chat, with that session open |
 */

import { api, UNAUTHENTICATED_EVENT } from './js/api.js';
import { hideAllBanners } from './js/banners.js';
import { renderChat } from './js/chat.js';
import { onClaudeStatus, refreshClaudeStatus, renderBadge } from './js/claude-status.js';
import { renderConnect } from './js/connect.js';
import { renderLogin } from './js/login.js';
import { h, replace } from './js/dom.js';

const main = /** @type {HTMLElement} */ (document.getElementById('main'));
const nav = document.querySelector('.topnav');
const account = document.querySelector('.account');
const whoami = document.querySelector('[data-whoami]');
const headerBadge = document.querySelector('[data-claude-badge]');

/** @type {any} the logged-in user, or null */
let user = null;
/** @type {(() => void)|null} what the current screen needs done when it is left */
let cleanup = null;
let renderId = 0;

/**
 * Goes to a path of the page, adding a history entry.
 *
 * @param {string} path
 * @param {{replace?: boolean}} [options]
 */
function navigate(path, options = {}) {
  if (path !== window.location.pathname) {
    if (options.replace) window.history.replaceState(null, '', path);
    else window.history.pushState(null, '', path);
  }
  render();
}

async function render() {
  const id = ++renderId;
  cleanup?.();
  cleanup = null;
  const path = window.location.pathname;
  if (!user && path !== '/login') {
    navigate('/login', { replace: true });
    return;
  }
  if (user && path === '/login') {
    navigate('/', { replace: true });
    return;
  }
  paintHeader(path);
  const hadFocus = main.contains(document.activeElement);
  let result;
  const session = /^\/s\/([^/]+)$/.exec(path);
  if (path === '/login') {
    document.title = 'Log in · sashad';
    result = renderLogin(main, { onLoggedIn });
  } else if (path === '/connect') {
    document.title = 'Connect Claude · sashad';
    result = renderConnect(main, { navigate });
  } else if (path === '/' || session) {
    document.title = 'Chat · sashad';
    result = renderChat(main, { navigate, sessionId: session ? decodeURIComponent(session[1]) : undefined });
  } else {
    document.title = 'Not found · sashad';
    replace(main, h('div', { class: 'placeholder' }, h('h1', { text: 'Nothing here' }),
      h('a', { href: '/', 'data-route': '', text: 'Go to your sessions' })));
  }
  const done = await result;
  if (id !== renderId) {
    // Another navigation started while this screen was loading.
    if (typeof done === 'function') done();
    return;
  }
  cleanup = typeof done === 'function' ? done : null;
  if (hadFocus && !main.contains(document.activeElement)) main.focus();
}

function paintHeader(path) {
  nav.hidden = !user;
  account.hidden = !user;
  whoami.textContent = user ? `${user.username}${user.role === 'admin' ? ' (admin)' : ''}` : '';
  for (const link of nav.querySelectorAll('a[data-nav]')) {
    const here = link.dataset.nav === 'connect' ? path === '/connect' : path !== '/connect';
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function onLoggedIn(loggedIn) {
  user = loggedIn;
  let status = null;
  try {
    status = await refreshClaudeStatus();
  } catch {
    status = null;
  }
  navigate(status && !status.authenticated ? '/connect' : '/');
}

async function logout() {
  try {
    await api('POST', '/api/auth/logout', undefined, { quiet401: true });
  } catch {
    // Logged out already, or the server is away: the page forgets the user either way.
  }
  user = null;
  hideAllBanners();
  navigate('/login');
}

document.addEventListener('click', (event) => {
  const link = event.target instanceof Element ? event.target.closest('a[data-route]') : null;
  if (!link || event.defaultPrevented || event.button !== 0
    || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, window.location.href);
  if (url.origin !== window.location.origin) return;
  event.preventDefault();
  navigate(url.pathname);
});
window.addEventListener('popstate', () => render());
document.querySelector('[data-logout]')?.addEventListener('click', logout);
window.addEventListener(UNAUTHENTICATED_EVENT, () => {
  if (!user) return;
  user = null;
  hideAllBanners();
  navigate('/login');
});
onClaudeStatus((status) => renderBadge(headerBadge, status));

async function boot() {
  api('GET', '/api/info').then((info) => {
    const version = document.querySelector('[data-version]');
    if (version && info?.version) version.textContent = `sashad ${info.version}`;
  }).catch(() => {});
  try {
    user = await api('GET', '/api/auth/me', undefined, { quiet401: true });
  } catch {
    user = null;
  }
  if (user) refreshClaudeStatus().catch(() => {});
  render();
}

boot();
