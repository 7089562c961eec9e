// Messages at the top of the page: errors explained in plain words, offers (resume a saved run),
// and notices. One alert per id: showing an id again replaces it.

import { $, h } from './format.js';
import { explain } from './errors.js';

/** @typedef {import('./errors.js').ErrorContext} ErrorContext */
/** @typedef {{ label: string, onClick: () => unknown, primary?: boolean }} AlertAction */
/**
 * @typedef {object} Alert
 * @property {string} id
 * @property {'info' | 'warn' | 'error'} [kind]
 * @property {string} title
 * @property {string} [body]
 * @property {string} [detail]
 * @property {AlertAction[]} [actions] buttons; a click removes the alert, then runs the action
 * @property {boolean} [dismissible]
 */

/** @param {Alert} alert */
export function showAlert({ id, kind = 'info', title, body, detail, actions = [], dismissible = true }) {
  dismissAlert(id);
  const el = h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { alertId: id } },
    h('div', { class: 'alert-body' },
      h('p', { class: 'alert-title', text: title }),
      body ? h('p', { text: body }) : null,
      detail ? h('p', { class: 'detail', text: detail }) : null),
    h('div', { class: 'alert-actions' },
      actions.map((a) => h('button', {
        type: 'button',
        class: `btn btn-small ${a.primary ? '' : 'btn-secondary'}`,
        text: a.label,
        onclick: () => {
          el.remove();
          a.onClick();
        },
      })),
      dismissible ? h('button', { type: 'button', class: 'alert-close', 'aria-label': 'Dismiss', text: '×', onclick: () => el.remove() }) : null));
  $('alerts').append(el);
  // An error needs the user: bring it into view from wherever they are on the page.
  if (kind === 'error') el.scrollIntoView({ block: 'nearest' });
  return el;
}

/** @param {string} id */
export function dismissAlert(id) {
  $('alerts').querySelector(`[data-alert-id="${id}"]`)?.remove();
}

/** What the page knows about the browser, for the explanations of NO_WEBGPU. */
function browser() {
  return { webgpu: 'gpu' in navigator, secure: globalThis.isSecureContext };
}

/**
 * Explains an error in plain words (nothing is thrown on) as the alert `error-<id>`; returns the
 * explanation, or undefined for a cancellation. `options` may replace the title or add buttons.
 * @param {unknown} error
 * @param {ErrorContext} context
 * @param {{ id?: string, title?: string, actions?: AlertAction[] }} [options]
 */
export function showError(error, context, options = {}) {
  const e = explain(error, context, browser());
  if (e.code === 'ABORTED') return undefined;
  console.warn(`[webtune page] ${context}:`, error);
  const title = options.title ?? e.title;
  showAlert({
    id: `error-${options.id ?? context}`,
    kind: 'error',
    title,
    body: e.action,
    detail: e.detail && e.detail !== title ? `Details: ${e.detail}` : undefined,
    actions: options.actions,
  });
  return e;
}
