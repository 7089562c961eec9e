// Step 2, Data: the training file (picked, dropped, or the bundled demo's), the evaluation data (a
// file, a held-out share, or none), and a preview of the rows as the model sees them, with the
// rows that cannot be used and their line numbers.

import { $, h, bytes, fact, fingerprint, mark, plural, setPill, button, input } from './format.js';
import { dismissAlert, showError } from './alerts.js';
import { dropZone, onPick } from './files.js';
import { config, onSettingsChange } from './settings.js';
import { pkg } from './engine.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').DatasetPreview} DatasetPreview */
/** @typedef {import('../webtune/index.js').RowError} RowError */
/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('./store.js').NamedBytes} NamedBytes */
/** A dataset file and its content key (for browser storage). @typedef {NamedBytes & { key: string }} DataFile */
/** @typedef {'file' | 'split' | 'none'} EvalMode */

const PREVIEW_ROWS = 8;

/** @type {DataFile | null} */
let train = null;
/** @type {DataFile | null} */
let evalFile = null;
/** @type {DatasetPreview | null} */
let preview = null;
let previewSeq = 0;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let previewTimer;

/** @param {NamedBytes} d @returns {DataFile} */
const withKey = (d) => ({ ...d, key: `data-${fingerprint(d.data)}` });

/** @param {NamedBytes | null} d @param {boolean} [keepSkip] */
function setTrainData(d, keepSkip = false) {
  train = d && withKey(d);
  $('data-file-name').textContent = d ? `${d.name} · ${bytes(d.data.length)}` : 'Drop a file here or choose one.';
  if (!keepSkip) input('opt-skipBadRows').checked = false;
  schedulePreview(0);
  session.changed();
}

/** @param {NamedBytes | null} d */
function setEvalData(d) {
  evalFile = d && withKey(d);
  $('eval-file-name').textContent = d ? `${d.name} · ${bytes(d.data.length)}` : 'none chosen';
}

/** @param {EvalMode} mode */
function setEvalMode(mode) {
  input(`eval-mode-${mode}`).checked = true;
}

/** @returns {EvalMode} */
export function evalMode() {
  const checked = document.querySelector('input[name="eval-mode"]:checked');
  return checked instanceof HTMLInputElement ? /** @type {EvalMode} */ (checked.value) : 'none';
}

/** The data step's training options: skip bad rows, held-out share. */
export function dataOptions() {
  /** @type {TrainingConfig} */
  const c = { skipBadRows: input('opt-skipBadRows').checked };
  if (evalMode() === 'split') {
    const pct = Number(input('eval-split').value);
    if (pct > 0) c.evalSplit = Math.min(0.9, pct / 100);
  }
  return c;
}

/** The data a run trains and evaluates on (`eval` only in the "separate file" mode). */
export function trainingData() {
  return { train, eval: evalMode() === 'file' ? evalFile : null, mode: evalMode() };
}

/** The rows of the training file that cannot be used, as the last preview found them. @returns {RowError[]} */
export function badRows() {
  if (!preview) return [];
  return preview.report ? preview.report.badRows : preview.rows.flatMap((row) => (row.error ? [{ line: row.line, reason: row.error }] : []));
}

/** Restores the data choices of a saved run. @param {NamedBytes} trainData @param {NamedBytes | null} evalData @param {EvalMode} mode @param {TrainingConfig} c */
export function restoreData(trainData, evalData, mode, c) {
  setEvalData(evalData);
  setEvalMode(mode);
  input('opt-skipBadRows').checked = !!c.skipBadRows;
  if (c.evalSplit) input('eval-split').value = String(Math.round(c.evalSplit * 100));
  setTrainData(trainData, true);
}

/** @param {string} url @param {string} name @returns {Promise<NamedBytes>} */
async function fetchFile(url, name) {
  const res = await fetch(url);
  if (!res.ok) throw Object.assign(new Error(`${url}: HTTP ${res.status}`), { code: 'IO' });
  return { name, data: new Uint8Array(await res.arrayBuffer()) };
}

/** The bundled demo's training and evaluation files. */
export async function useDemoData() {
  const { demo } = pkg();
  try {
    const [t, e] = await Promise.all([fetchFile(demo.train.url, `demo ${demo.train.name}`), fetchFile(demo.eval.url, `demo ${demo.eval.name}`)]);
    setEvalData(e);
    setEvalMode('file');
    setTrainData(t);
  } catch (error) {
    showError(error, 'data');
  }
}

/** @param {File[]} files @param {'train' | 'eval'} which */
async function pick(files, which) {
  const f = files[0];
  try {
    const d = { name: f.name, data: new Uint8Array(await f.arrayBuffer()) };
    if (which === 'train') setTrainData(d);
    else {
      setEvalData(d);
      setEvalMode('file');
    }
  } catch (error) {
    showError(Object.assign(/** @type {Error} */ (error), { code: 'IO' }), 'data');
  }
}

/** Shows the preview again after `ms` (the latest request wins). */
function schedulePreview(ms = 250) {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(updatePreview, ms);
}

async function updatePreview() {
  const engine = session.engine;
  if (!engine || !session.model || !train) return;
  if (session.busy || session.run !== 'idle') {
    schedulePreview(500);
    return;
  }
  const seq = ++previewSeq;
  const d = train;
  session.update({ busy: 'preview' });
  mark('preview', 'loading');
  try {
    const p = await engine.previewDataset({ name: d.name, data: d.data }, { ...config(), ...dataOptions() }, PREVIEW_ROWS);
    if (seq !== previewSeq) return;
    preview = p;
    renderPreview(p);
    dismissAlert('error-data');
    mark('preview', 'ready');
  } catch (error) {
    mark('preview', 'failed');
    setPill('data-pill', 'cannot be read', 'bad');
    showError(error, 'data');
  } finally {
    session.update({ busy: '' });
  }
}

/** @param {DatasetPreview} p */
function renderPreview(p) {
  const r = p.report;
  const bad = badRows();
  $('data-facts').replaceChildren(...(r
    ? [
      fact('Usable rows', r.rows.toLocaleString('en-US')),
      fact('Bad rows', String(bad.length)),
      fact('Tokens per row', `${r.minTokens} – ${r.maxTokens} (mean ${r.meanTokens.toFixed(1)})`),
      fact('Supervised tokens', r.supervisedTokens.toLocaleString('en-US')),
      fact('Cut to max length', String(r.truncated)),
      ...(r.noSupervisedTokens ? [fact('Dropped (nothing to learn)', String(r.noSupervisedTokens))] : []),
    ]
    : [fact('Usable rows', '0')]));

  $('bad-rows').hidden = bad.length === 0;
  if (bad.length) {
    $('bad-rows-title').textContent = r ? `${plural(bad.length, 'row')} cannot be used` : 'No row can be used';
    const shown = bad.slice(0, 200);
    const more = bad.length > shown.length ? [h('li', { class: 'muted', text: `… and ${bad.length - shown.length} more` })] : [];
    $('bad-rows-list').replaceChildren(...shown.map((b) => h('li', {}, h('span', { class: 'line-no', text: `Line ${b.line}` }), `: ${b.reason}`)), ...more);
    $('skip-bad-label').textContent = r && r.rows > 0
      ? `Skip ${bad.length === 1 ? 'this row' : `these ${bad.length} rows`} and train on the ${r.rows.toLocaleString('en-US')} good ones`
      : 'Skip bad rows (no good rows left)';
  }

  $('data-preview').replaceChildren(...p.rows.map((row) => {
    const text = h('p', { class: 'text' }, row.segments.map((s) => (s.supervised ? h('mark', { class: 'sup', text: s.text }) : s.text)));
    const meta = h('div', { class: 'meta' },
      h('span', { text: `line ${row.line}` }),
      row.error ? null : h('span', { text: `${row.tokens} tokens` }),
      row.truncated ? h('span', { text: 'cut to max length' }) : null);
    return h('li', { class: row.error ? 'bad' : '' }, meta, row.error ? h('p', { class: 'row-error', text: row.error }) : text);
  }));
  $('data-report').hidden = false;
  if (!r) setPill('data-pill', 'no usable rows', 'bad');
  else if (bad.length) setPill('data-pill', `${r.rows} rows · ${bad.length} bad`, 'warn');
  else setPill('data-pill', `${r.rows.toLocaleString('en-US')} rows`, 'ok');
  render();
}

function render() {
  for (const id of ['data-file', 'eval-file']) input(id).disabled = !session.idle;
  button('data-demo').disabled = !session.idle;
  const running = session.run !== 'idle';
  for (const el of document.querySelectorAll('input[name="eval-mode"], #eval-split')) /** @type {HTMLInputElement} */ (el).disabled = running;
  const r = preview?.report;
  input('opt-skipBadRows').disabled = running || (badRows().length > 0 && !(r && r.rows > 0));
}

export function initDataStep() {
  onPick(input('data-file'), (files) => pick(files, 'train'));
  onPick(input('eval-file'), (files) => pick(files, 'eval'));
  dropZone($('data-drop'), input('data-file'), (files) => pick(files, 'train'));
  button('data-demo').addEventListener('click', () => useDemoData());
  input('opt-skipBadRows').addEventListener('change', () => schedulePreview(0));
  for (const el of document.querySelectorAll('input[name="eval-mode"], #eval-split')) el.addEventListener('change', () => session.changed());
  onSettingsChange((what) => {
    if (what === 'opt-template' || what === 'opt-maxLen' || what === 'apply') schedulePreview(400);
  });
  /** @type {unknown} */
  let modelShown = null;
  session.onChange(() => {
    if (session.model !== modelShown) {
      modelShown = session.model;
      schedulePreview(0);
    }
    render();
  });
}
