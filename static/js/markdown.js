/**
 * @file Markdown in assistant text, rendered safely: `marked` turns it into HTML with raw HTML
 * escaped (Claude's text is untrusted: it may quote a web page or a file), then DOMPurify keeps
 * only the tags and attributes Markdown produces, and hands back a DOM fragment, never an HTML
 * string for `innerHTML`. Links open in a new tab without a referrer; images are not loaded
 * (the CSP would block remote ones anyway): their alt text shows instead.
 */

import { Marked } from '../vendor/marked/marked.esm.js';
import DOMPurify from '../vendor/dompurify/purify.es.mjs';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML in the Markdown shows as text.
    html({ text }) {
      return escapeHtml(text);
    },
    image({ text }) {
      return escapeHtml(text);
    },
  },
});

const ALLOWED_TAGS = [
  'a', 'blockquote', 'br', 'code', 'del', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr',
  'li', 'ol', 'p', 'pre', 'strong', 'table', 'tbody', 'td', 'th', 'thead', 'tr', 'ul',
];
const ALLOWED_ATTR = ['href', 'title', 'start', 'align', 'class'];

const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
  if (node.hasAttribute('class') && !/^language-[\w+-]+$/.test(node.getAttribute('class'))) {
    node.removeAttribute('class');
  }
});

/**
 * Renders Markdown to a sanitized DOM fragment.
 *
 * @param {string} text  Markdown from an untrusted source.
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text) {
  let html;
  try {
    html = marked.parse(String(text ?? ''));
  } catch {
    const fragment = document.createDocumentFragment();
    fragment.append(document.createTextNode(String(text ?? '')));
    return fragment;
  }
  return purify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
    RETURN_DOM_FRAGMENT: true,
  });
}
