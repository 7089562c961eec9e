// Small formatting and DOM helpers shared by the page's modules.

/**
 * The element with this id, checked to be of `type` (default: any HTMLElement). A missing or
 * different element is a bug of the page, not of the user's input: it throws.
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {new () => T} [type]
 * @returns {T}
 */
export function $(id, type) {
  const el = document.getElementById(id);
  const want = type ?? HTMLElement;
  if (!(el instanceof want)) throw new Error(`the page has no ${want.name} #${id}`);
  return /** @type {T} */ (el);
}

/** @param {string} id */
export const input = (id) => $(id, HTMLInputElement);
/** @param {string} id */
export const button = (id) => $(id, HTMLButtonElement);

/** @typedef {Record<string, string | number | boolean | undefined | null | Record<string, string> | ((event: any) => void)>} Attributes */
/** @typedef {Node | string | number | null | undefined | false} Child */

/**
 * Creates an element: h('p', {class: 'x', text: 'hi'}, child, ...).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attributes} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key === 'class') el.className = String(value);
    else if (key === 'dataset' && typeof value === 'object') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Sets `document.body.dataset[key]`: the page's progress, for the browser tests to wait on. */
export function mark(/** @type {string} */ key, /** @type {string | undefined} */ value) {
  if (value === undefined) delete document.body.dataset[key];
  else document.body.dataset[key] = value;
}

/** @param {number} n */
export function bytes(n) {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/** 1.2 GiB-style, for GPU limits (which are powers of two). @param {number} n */
export function binaryBytes(n) {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

/** @param {number} n */
export function count(n) {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(n >= 1e5 ? 0 : 1)} K`;
  return n.toLocaleString('en-US');
}

/** @param {number} ms */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** @param {number | undefined} x */
export function loss(x) {
  return x !== undefined && Number.isFinite(x) ? x.toFixed(4) : '–';
}

/** @param {number} n @param {string} one @param {string} [many] */
export function plural(n, one, many = `${one}s`) {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

/** FNV-1a (32 bit, two lanes) over bytes: a fast identity for datasets, not a security hash. @param {Uint8Array} u8 */
export function fingerprint(u8) {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ u8.length;
  for (let i = 0; i < u8.length; i++) {
    a = Math.imul(a ^ u8[i], 0x01000193);
    b = Math.imul(b ^ u8[i] ^ (i & 0xff), 0x01000193);
  }
  return `${(a >>> 0).toString(16).padStart(8, '0')}${(b >>> 0).toString(16).padStart(8, '0')}-${u8.length}`;
}

/** Triggers a download of `blob` as `fileName` (a blob: URL of this origin, no request leaves). @param {Blob} blob @param {string} fileName */
export function download(blob, fileName) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: fileName });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Writes a status line: `kind` is '', 'ok', 'warn' or 'muted'. @param {string} id @param {string} text @param {string} [kind] */
export function setNote(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = `note ${kind}`;
}

/** Sets a status pill's text and colour ('', 'ok', 'busy', 'warn', 'bad'). @param {string} id @param {string} text @param {string} [kind] */
export function setPill(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = `status-pill ${kind}`;
}

/** A `<div><dt>term</dt><dd>value</dd></div>` of a facts list. @param {string} term @param {string} value @param {string} [cls] */
export function fact(term, value, cls) {
  return h('div', { class: cls }, h('dt', { text: term }), h('dd', { text: value }));
}
