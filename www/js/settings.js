// Step 3, Settings: the form of settings-fields.js, filled with the defaults for the loaded model,
// validated as the user types, with the GPU memory estimate of the run it describes.

import { $, h, button } from './format.js';
import { FIELDS, GROUPS, INITS, LORA, BOTTLENECK, ATTENTION, SIZE_LABEL, coreMethod, defaultsFor, defaultLr, sizeClass } from './settings-fields.js';
import { renderMemory } from './memory.js';
import { renderMethodFacts } from './method-facts.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('../webtune/index.js').ModelInfo} ModelInfo */
/** @typedef {import('./settings-fields.js').Field} Field */
/** @typedef {import('./settings-fields.js').Method} Method */
/** @typedef {import('./settings-fields.js').FormValues} FormValues */

const ORDER = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'c_attn', 'c_proj', 'c_fc'];

const form = () => $('settings-form', HTMLFormElement);
/** A field's input, select or textarea. @param {string} name */
const control = (name) => /** @type {HTMLInputElement} */ (document.getElementById(`opt-${name}`));

/** @type {Set<(what: string) => void>} */
const listeners = new Set();
/** @type {ModelInfo | undefined} */
let info;
/** @type {Method} */
let lastMethod = 'lora';

/** Calls `fn(what)` after the settings changed: `what` is the field's id, or 'apply'. @param {(what: string) => void} fn */
export function onSettingsChange(fn) {
  listeners.add(fn);
}

/** @param {string} what */
function changed(what) {
  renderMemory(config());
  renderMethodFacts(config(), method());
  for (const fn of listeners) fn(what);
}

/** @returns {Method} */
function method() {
  const checked = form().querySelector('input[name="method"]:checked');
  return checked instanceof HTMLInputElement ? /** @type {Method} */ (checked.value) : 'lora';
}

/** @param {Field} f */
function renderField(f) {
  const id = `opt-${f.name}`;
  const hintId = `${id}-hint`;
  const hint = h('p', { class: 'hint', id: hintId, text: f.hint });
  let wrapper;
  if (f.type === 'checkbox') {
    wrapper = h('div', { class: 'field' },
      h('div', { class: 'check' }, h('input', { type: 'checkbox', id, 'aria-describedby': hintId }), h('label', { for: id, text: f.label })),
      hint);
  } else if (f.type === 'targets') {
    wrapper = h('div', { class: 'field' },
      h('span', { class: 'label', id: `${id}-label`, text: f.label }),
      h('div', { class: 'targets', id, role: 'group', 'aria-labelledby': `${id}-label`, 'aria-describedby': hintId }),
      hint);
  } else {
    let el;
    if (f.type === 'select') {
      el = h('select', { id, 'aria-describedby': hintId }, (f.options ?? []).map(([v, l]) => h('option', { value: v, text: l })));
    } else if (f.type === 'textarea' || f.type === 'json') {
      el = h('textarea', { id, rows: f.type === 'json' ? 2 : 4, placeholder: f.placeholder, spellcheck: 'false', 'aria-describedby': hintId });
    } else {
      el = h('input', {
        id,
        type: f.type === 'number' ? 'number' : 'text',
        min: f.min, max: f.max, step: f.step,
        placeholder: f.placeholder,
        inputmode: f.type === 'number' ? 'decimal' : undefined,
        'aria-describedby': hintId,
        spellcheck: f.type === 'text' ? 'false' : undefined,
      });
    }
    wrapper = h('div', { class: 'field' }, h('label', { for: id, text: f.label }), el, hint);
  }
  wrapper.dataset.field = f.name;
  if (f.wide) wrapper.classList.add('wide');
  return wrapper;
}

/** @param {string} value */
function setInit(value) {
  const select = $('opt-init', HTMLSelectElement);
  if (![...select.options].some((o) => o.value === value)) select.append(h('option', { value, text: value }));
  select.value = value;
}

function updateInitOptions() {
  const select = $('opt-init', HTMLSelectElement);
  const current = select.value;
  select.replaceChildren(...INITS[method()].map(([v, l]) => h('option', { value: v, text: l })));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

function updateVisibility() {
  const m = method();
  for (const f of FIELDS) {
    const el = form().querySelector(`[data-field="${f.name}"]`);
    if (!(el instanceof HTMLElement)) continue;
    let show = f.methods.includes(m);
    if (f.name === 'initText') show = show && $('opt-init', HTMLSelectElement).value === 'text';
    el.hidden = !show;
  }
}

/** Fills the form from values (a defaults object, or a saved snapshot). @param {Partial<FormValues>} values */
export function applySettings(values) {
  if (values.method) {
    for (const radio of form().querySelectorAll('input[name="method"]')) {
      if (radio instanceof HTMLInputElement) radio.checked = radio.value === values.method;
    }
  }
  updateInitOptions();
  for (const f of FIELDS) {
    if (!(f.name in values)) continue;
    const v = values[f.name];
    if (f.type === 'checkbox') control(f.name).checked = !!v;
    else if (f.type === 'targets') {
      const set = new Set(Array.isArray(v) ? v : []);
      for (const cb of targetBoxes()) cb.checked = set.has(cb.value);
    } else if (f.type === 'json') {
      control(f.name).value = v && typeof v === 'object' ? (Object.keys(v).length ? JSON.stringify(v) : '') : String(v ?? '');
    } else {
      control(f.name).value = String(v ?? '');
    }
  }
  if (typeof values.init === 'string') setInit(values.init);
  updateVisibility();
  lastMethod = method();
  changed('apply');
}

/** The model changed: its layers become the target choices and its size picks the defaults. */
function setModel(/** @type {ModelInfo | undefined} */ model) {
  info = model;
  const rank = (/** @type {string} */ n) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  const layers = [...(model?.linearLayers ?? ATTENTION)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  $('opt-targets').replaceChildren(...layers.map((name) => {
    const id = `opt-target-${name}`;
    return h('div', { class: 'check' }, h('input', { type: 'checkbox', id, value: name, name: 'target' }), h('label', { for: id, text: name }));
  }));
  applySettings(defaultsFor(model));
  $('settings-preset').textContent = model
    ? `Defaults for ${SIZE_LABEL[sizeClass(model.parameters)]}; each setting says what it does.`
    : 'Defaults for the loaded model’s size; each setting says what it does.';
}

/** @param {Event} event */
function onInput(event) {
  const target = /** @type {HTMLInputElement} */ (event.target);
  if (target.name === 'method') {
    updateInitOptions();
    // Keep a learning rate the user typed; switch an untouched default to the new method's.
    const lr = control('lr');
    const m = method();
    if (Number(lr.value) === defaultLr(lastMethod, info)) lr.value = String(defaultLr(m, info));
    lastMethod = m;
  }
  updateVisibility();
  validate();
  changed(target.id || target.name);
}

function targetBoxes() {
  return /** @type {HTMLInputElement[]} */ ([...form().querySelectorAll('input[name="target"]')]);
}

function targets() {
  return targetBoxes().filter((cb) => cb.checked).map((cb) => cb.value);
}

/** Marks invalid fields; returns a list of problems (empty when all is well). */
export function validate() {
  const problems = [];
  for (const f of FIELDS) {
    const el = control(f.name);
    if (!el || el.closest('[data-field]')?.hasAttribute('hidden')) continue;
    el.classList.remove('invalid');
    if (f.type === 'json' && el.value.trim()) {
      try {
        const v = JSON.parse(el.value);
        if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every(Number.isFinite)) throw new Error();
      } catch {
        el.classList.add('invalid');
        problems.push(`${f.label}: write a JSON object of numbers, e.g. ${f.placeholder}`);
      }
    }
    if (f.type === 'number') {
      if (el.value === '' && !f.optional) {
        el.classList.add('invalid');
        problems.push(`${f.label} is empty`);
      } else if (el.value !== '' && !el.checkValidity()) {
        problems.push(`${f.label}: ${el.validationMessage}`);
      }
    }
  }
  if (LORA.includes(method()) && targets().length === 0) problems.push('Choose at least one layer to adapt');
  if (method() === 'prompt-tuning' && control('init').value === 'text' && !control('initText').value.trim()) {
    control('initText').classList.add('invalid');
    problems.push('Init text is empty');
  }
  return problems;
}

/** @param {string} name */
function num(name) {
  const v = control(name).value.trim();
  return v === '' ? undefined : Number(v);
}

/** The TrainingConfig the form describes (without the data step's options). @returns {TrainingConfig} */
export function config() {
  const m = method();
  /** @type {Record<string, unknown>} */
  const c = {
    ...coreMethod(m),
    init: m === 'ia3' ? undefined : control('init').value,
    schedule: control('schedule').value,
    recompute: control('recompute').value,
    shuffle: control('shuffle').checked,
  };
  for (const name of ['lr', 'warmupSteps', 'weightDecay', 'clip', 'batchSize', 'gradAccum', 'steps', 'epochs', 'maxLen', 'evalEvery',
    'earlyStoppingPatience', 'earlyStoppingThreshold', 'seed']) c[name] = num(name);
  const template = control('template').value;
  if (template.trim()) c.template = template;
  if (c.method === 'lora') {
    Object.assign(c, { r: num('r'), alpha: num('alpha'), dropout: num('dropout'), targets: targets(), rslora: control('rslora').checked });
    for (const name of ['rankPattern', 'alphaPattern']) {
      const text = control(name).value.trim();
      if (!text) continue;
      try {
        c[name] = JSON.parse(text);
      } catch {
        /* reported by validate() */
      }
    }
  } else if (BOTTLENECK.includes(m)) {
    c.reductionFactor = num('reductionFactor');
    for (const name of ['nonLinearity', 'adapterName']) {
      const value = control(name).value.trim();
      if (value) c[name] = value;
    }
  } else if (m === 'prompt-tuning') {
    c.virtualTokens = num('virtualTokens');
    if (c.init === 'text') c.initText = control('initText').value;
  }
  for (const key of Object.keys(c)) if (c[key] === undefined || Number.isNaN(c[key])) delete c[key];
  return /** @type {TrainingConfig} */ (c);
}

/** Page-level options (not part of the engine's TrainingConfig). */
export function pageOptions() {
  return { checkpointEvery: num('checkpointEvery') };
}

/** Values to save with a checkpoint and to restore the form from. @returns {FormValues} */
export function snapshot() {
  /** @type {FormValues} */
  const values = { method: method() };
  for (const f of FIELDS) {
    if (f.type === 'checkbox') values[f.name] = control(f.name).checked;
    else if (f.type === 'targets') values[f.name] = targets();
    else values[f.name] = control(f.name).value;
  }
  return values;
}

export function initSettingsStep() {
  $('settings-fields').replaceChildren(...GROUPS.map((group) => {
    const fields = h('div', { class: 'fields' }, group.fields.map(renderField));
    return group.collapsed
      ? h('details', { class: 'settings-group' }, h('summary', { text: group.title }), fields)
      : h('div', { class: 'settings-group' }, h('h3', { text: group.title }), fields);
  }));
  form().addEventListener('input', onInput);
  form().addEventListener('change', onInput);
  button('settings-reset').addEventListener('click', () => applySettings(defaultsFor(info)));
  setModel(undefined);
  /** @type {ModelInfo | undefined} */
  let shown;
  session.onChange(() => {
    const model = session.model?.info;
    if (model !== shown) {
      shown = model;
      setModel(model);
    }
    button('settings-reset').disabled = !session.idle;
    for (const el of form().elements) {
      if (el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement) el.disabled = session.run !== 'idle';
    }
  });
}
