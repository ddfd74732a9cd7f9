/**
 * @file Page-wide banners for things a person can act on: a credential Claude rejected, a lost
 * connection. Each banner has a key, so showing it again updates it instead of stacking copies.
 */

import { h, replace } from './dom.js';

/** @type {Map<string, HTMLElement>} */
const shown = new Map();

function container() {
  return document.querySelector('[data-banners]');
}

/**
 * Shows (or updates) a banner.
 *
 * @param {string} key  e.g. `credentials`, `connection`.
 * @param {'error'|'warning'|'info'} kind
 * @param {Array<Node|string>} content  Text and nodes (links to act on).
 * @param {{dismissible?: boolean}} [options]
 * @returns {HTMLElement}
 */
export function showBanner(key, kind, content, options = {}) {
  let el = shown.get(key);
  if (!el) {
    el = h('div', { class: `banner banner-${kind}`, role: kind === 'info' ? 'status' : 'alert' });
    el.dataset.banner = key;
    shown.set(key, el);
    container()?.append(el);
  }
  el.className = `banner banner-${kind}`;
  const body = h('div', { class: 'banner-body' }, content);
  const close = options.dismissible
    ? h('button', {
      type: 'button', class: 'banner-close', 'aria-label': 'Dismiss', text: '×',
      on: { click: () => hideBanner(key) },
    })
    : null;
  replace(el, body, close);
  return el;
}

/**
 * Removes a banner if it is shown.
 *
 * @param {string} key
 */
export function hideBanner(key) {
  shown.get(key)?.remove();
  shown.delete(key);
}

/** Removes every banner (on logout or a change of screen that makes them moot). */
export function hideAllBanners() {
  for (const key of [...shown.keys()]) hideBanner(key);
}
