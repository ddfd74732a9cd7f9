/**
 * @file Building DOM nodes without HTML strings: text always goes in as text nodes, so
 * nothing a user, the server or Claude wrote is ever parsed as markup here.
 */

/**
 * Creates an element.
 *
 * @param {string} tag  Tag name, e.g. `"button"`.
 * @param {object} [props]  `class` (string), `text` (text content), `on` ({event: handler}),
 *   `dataset` ({key: value}), and any other key as an attribute (`true` sets it empty,
 *   `false`/`null`/`undefined` leaves it out).
 * @param {...(Node|string|number|null|undefined|Array)} children  Nodes or text.
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/**
 * Appends children (nodes, text, nested arrays; null and undefined are skipped).
 *
 * @param {Node} parent
 * @param {Array} children
 * @returns {Node} the parent
 */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/**
 * Replaces all children of `parent`.
 *
 * @param {Node} parent
 * @param {...(Node|string|null|undefined|Array)} children
 * @returns {Node} the parent
 */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/**
 * A unique id for pairing labels and controls.
 *
 * @param {string} prefix
 * @returns {string}
 */
export function uid(prefix) {
  uid.n = (uid.n ?? 0) + 1;
  return `${prefix}-${uid.n}`;
}

/**
 * A labelled form field: `<div class="field"><label>…</label><input>…</div>`.
 *
 * @param {string} label  Visible label text.
 * @param {object} inputProps  Attributes of the `<input>` (or `<textarea>` with `tag`).
 * @param {string} [hint]  Help text, linked with `aria-describedby`.
 * @returns {{field: HTMLElement, input: HTMLInputElement}}
 */
export function field(label, inputProps, hint) {
  const id = uid('f');
  const { tag = 'input', ...rest } = inputProps;
  const hintId = hint ? `${id}-hint` : null;
  const input = h(tag, { id, 'aria-describedby': hintId, ...rest });
  const f = h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    input,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
  return { field: f, input };
}
