// The webtune page: load a model and a dataset, train an adapter in a Web Worker, watch the loss,
// try the result, export it, and resume after a reload. Everything goes through the public engine
// API of the npm package (`createWorkerEngine` from ./webtune/index.js, npm/src/index.d.ts).

import { $, h, bytes, binaryBytes, count, duration, loss, plural, fingerprint, download, debounce } from './format.js';
import { explain, WEBGPU_HELP } from './errors.js';
import * as store from './store.js';
import { SettingsForm, renderMemory, estimateMemory, defaultsFor, sizeClass } from './settings.js';
import { LossChart } from './chart.js';
import { dropZone, modelFiles, folderName } from './files.js';

const ENGINE_URL = new URL('../webtune/index.js', import.meta.url).href;
const DEMO_URL = new URL('../demo/', import.meta.url).href;
const PREVIEW_ROWS = 8;

/** Hub models we suggest, with what their config.json says (for the memory estimate before download). */
const SUGGESTED = [
  { id: 'HuggingFaceTB/SmolLM2-135M-Instruct', parameters: 134.5e6, download: 269e6, vocabSize: 49152, hiddenSize: 576, numLayers: 30, numHeads: 9, numKvHeads: 3, intermediateSize: 1536, maxPositions: 8192, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', parameters: 361.8e6, download: 724e6, vocabSize: 49152, hiddenSize: 960, numLayers: 32, numHeads: 15, numKvHeads: 5, intermediateSize: 2560, maxPositions: 8192, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  { id: 'Qwen/Qwen2.5-0.5B-Instruct', parameters: 494e6, download: 988e6, vocabSize: 151936, hiddenSize: 896, numLayers: 24, numHeads: 14, numKvHeads: 2, intermediateSize: 4864, maxPositions: 32768, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
];

const state = {
  webtune: null, // the package's module (www/webtune/index.js)
  engine: null,
  gpu: null,
  version: '',
  busy: '', // what the engine is doing for the page outside training: 'model', 'preview', 'generate', 'export', 'adapter', 'start'
  model: null, // { info, identity, name, fromCache }
  data: { train: null, eval: null }, // { name, data: Uint8Array, key }
  preview: null,
  trainer: null,
  training: false, // a train() call is in flight (running or paused)
  pausing: false,
  run: null, // the record fields of the current run (saved with each checkpoint)
  metrics: [],
  lastCheckpointStep: 0,
  saveQueue: Promise.resolve(),
  tuned: null, // { method, source: 'train' | 'import' | 'restore', step }
  imported: null, // { files, key, info }
  savedRun: null,
  pendingResume: null,
  generating: null, // AbortController
};

let settings;
let chart;
let readyResolve;
const ready = new Promise((resolve) => { readyResolve = resolve; });
// For the browser tests and the curious: the page's state and a promise that resolves once the
// page has started (engine up or failed, saved run offered, demo loaded).
window.webtunePage = { state, ready };

function mark(key, value) {
  document.body.dataset[key] = value;
}

// --- alerts ---------------------------------------------------------------------------------------

/** Shows a message at the top. `actions`: [{label, onClick, primary}]. Replaces one with the same id. */
function showAlert({ id, kind = 'info', title, body, detail, actions = [], dismissible = true }) {
  const alerts = $('alerts');
  if (id) alerts.querySelector(`[data-alert-id="${id}"]`)?.remove();
  const el = h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: id ? { alertId: id } : {} },
    h('div', { class: 'alert-body' },
      h('p', { class: 'alert-title', text: title }),
      body ? h('p', { text: body }) : null,
      detail ? h('p', { class: 'detail', text: detail }) : null),
    h('div', { class: 'alert-actions' },
      actions.map((a) => h('button', {
        type: 'button',
        class: `btn btn-small ${a.primary ? '' : 'btn-secondary'}`,
        text: a.label,
        onclick: async () => {
          el.remove();
          await a.onClick();
        },
      })),
      dismissible ? h('button', { type: 'button', class: 'alert-close', 'aria-label': 'Dismiss', text: '×', onclick: () => el.remove() }) : null));
  alerts.append(el);
  return el;
}

function dismissAlert(id) {
  $('alerts').querySelector(`[data-alert-id="${id}"]`)?.remove();
}

/** Explains an error in plain words; nothing is thrown on. */
function showError(error, context, id = context) {
  const e = explain(error, context);
  if (e.code === 'ABORTED') return;
  console.warn(`[webtune page] ${context}:`, error);
  showAlert({ id: `error-${id}`, kind: 'error', title: e.title, body: e.action, detail: e.detail && e.detail !== e.title ? `Details: ${e.detail}` : undefined });
  return e;
}

// --- controls -------------------------------------------------------------------------------------

function trainerState() {
  return state.trainer?.state ?? 'idle';
}

function updateControls() {
  const engine = !!state.engine;
  const model = !!state.model;
  const busy = !!state.busy;
  const active = state.training;
  const tState = trainerState();
  const paused = active && tState === 'paused';
  const idle = engine && !busy && !active;

  for (const id of ['demo-load', 'hub-load', 'model-folder', 'model-files', 'data-file', 'eval-file', 'data-demo', 'adapter-files', 'settings-reset']) {
    $(id).disabled = !idle;
  }
  $('train-start').disabled = !(idle && model && state.data.train);
  $('train-pause').disabled = !(active && tState === 'running' && !state.pausing);
  $('train-resume').disabled = !paused;
  $('train-stop').disabled = !active;
  $('try-go').disabled = !(engine && model && !busy && (!active || paused));
  $('try-stop').disabled = state.busy !== 'generate';
  const canExport = engine && model && state.tuned && !busy && (!active || paused);
  $('export-peft').disabled = !canExport;
  $('export-gguf').disabled = !(canExport && state.tuned?.method !== 'prompt-tuning');
  $('pissa-row').hidden = !String(state.tuned?.init ?? '').startsWith('pissa');
  $('continue-adapter-row').hidden = !state.imported;
  for (const el of $('settings-form').elements) el.disabled = active;
  for (const el of document.querySelectorAll('input[name="eval-mode"], #eval-split, #opt-skipBadRows')) el.disabled = active;

  let pill = 'idle';
  let pillClass = '';
  if (active) {
    pill = state.pausing && tState === 'running' ? 'pausing…' : tState;
    pillClass = tState === 'paused' ? 'warn' : 'busy';
  } else if (state.trainer) {
    pill = tState === 'idle' ? 'ready' : tState;
    pillClass = tState === 'done' ? 'ok' : tState === 'failed' ? 'bad' : '';
  }
  $('train-pill').textContent = pill;
  $('train-pill').className = `status-pill ${pillClass}`;
  // While train() has ended in the worker but the page still saves the final checkpoint, the
  // run is "finishing"; "done"/"stopped" appear once the page is ready for the next action.
  const final = ['done', 'stopped', 'failed'].includes(tState);
  mark('trainState', active ? (final ? 'finishing' : tState) : state.trainer ? tState : 'idle');
}

function setBusy(what) {
  state.busy = what;
  updateControls();
}

// --- engine ---------------------------------------------------------------------------------------

async function startEngine() {
  let mod;
  try {
    mod = await import(ENGINE_URL);
  } catch (error) {
    mark('engine', 'failed');
    $('gpu-chip').textContent = 'engine missing';
    $('gpu-chip').className = 'chip chip-bad';
    showAlert({
      id: 'engine', kind: 'error', dismissible: false,
      title: 'The training engine is not built yet.',
      body: 'This page needs the webtune package in www/webtune/. From the repository, run bash scripts/build-npm.sh (or scripts/serve.sh, which builds and serves the page), then reload.',
      detail: `Details: ${error.message}`,
    });
    return false;
  }
  if (!('gpu' in navigator)) {
    failEngine(Object.assign(new Error('navigator.gpu is undefined'), { code: 'NO_WEBGPU' }));
    return false;
  }
  try {
    state.webtune = mod;
    state.engine = await mod.createWorkerEngine(engineWorker());
  } catch (error) {
    failEngine(error);
    return false;
  }
  state.gpu = state.engine.gpu;
  state.version = state.engine.version;
  const g = state.gpu;
  const name = g.name || (await adapterName()) || 'unnamed adapter';
  const backend = /webgpu/i.test(g.backend) ? 'WebGPU' : g.backend;
  const limits = `max buffer ${binaryBytes(g.maxBufferSize)}, max storage binding ${binaryBytes(g.maxStorageBufferBindingSize)}`;
  $('gpu-chip').textContent = `GPU: ${name} · ${limits}`;
  $('gpu-chip').title = `${backend} adapter: ${name}; ${limits}`;
  $('gpu-chip').className = 'chip chip-ok';
  $('version-chip').textContent = `webtune ${state.version}`;
  $('footer-version').textContent = `webtune ${state.version}`;
  mark('engine', 'ready');
  renderSuggestions();
  return true;
}

/**
 * A readable name of the browser's WebGPU adapter (the engine's name can be empty: browsers hide
 * the description). Asks for the adapter's info only; no device is created here.
 */
async function adapterName() {
  try {
    const adapter = await navigator.gpu.requestAdapter();
    const info = adapter?.info ?? {};
    const name = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ');
    return name ? `${name}${info.isFallbackAdapter ? ' (software)' : ''}` : '';
  } catch {
    return '';
  }
}

/**
 * The engine's worker, started from a blob: URL that imports the package's worker.js. A worker
 * from a blob: URL inherits this page's Content-Security-Policy (one from an http(s) URL would
 * not: a meta CSP does not reach it), so the engine's own requests are held to the same origins:
 * this server and the Hugging Face hub. (`worker` is the documented WorkerEngineOptions field.)
 */
function engineWorker() {
  const workerUrl = new URL('../webtune/worker.js', import.meta.url).href;
  try {
    const source = new Blob([`import ${JSON.stringify(workerUrl)};\n`], { type: 'text/javascript' });
    return { worker: new Worker(URL.createObjectURL(source), { type: 'module', name: 'webtune' }) };
  } catch (error) {
    console.warn('[webtune page] cannot start the engine worker from a blob: URL, using worker.js directly:', error);
    return {};
  }
}

function failEngine(error) {
  mark('engine', 'failed');
  const e = showError(error, 'engine');
  $('gpu-chip').textContent = e?.code === 'NO_WEBGPU' ? 'GPU: no WebGPU' : 'GPU: unavailable';
  $('gpu-chip').className = 'chip chip-bad';
  $('gpu-chip').title = WEBGPU_HELP;
}

// --- 1 Model --------------------------------------------------------------------------------------

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    }
  };
  for (const tab of tabs) {
    tab.addEventListener('click', () => select(tab));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      const next = e.key === 'ArrowRight' ? tabs[(i + 1) % tabs.length] : e.key === 'ArrowLeft' ? tabs[(i - 1 + tabs.length) % tabs.length] : null;
      if (next) {
        e.preventDefault();
        next.focus();
        select(next);
      }
    });
  }
  return (id) => select($(id));
}
let selectTab;

function sameModel(a, b) {
  if (!a || !b || a.kind !== b.kind) return false;
  if (a.kind === 'files') {
    return ['name', 'parameters', 'vocabSize', 'hiddenSize', 'numLayers'].every((k) => a[k] === b[k]);
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

async function loadModel(source, identity, name) {
  setBusy('model');
  dismissAlert('error-model');
  const progress = $('model-progress');
  progress.hidden = false;
  $('model-progress-text').textContent = `Loading ${name}…`;
  $('model-progress-bytes').textContent = '';
  $('model-progress-bar').removeAttribute('value');
  $('model-pill').textContent = 'loading…';
  $('model-pill').className = 'status-pill busy';
  mark('model', 'loading');
  const phases = new Set();
  try {
    const info = await state.engine.loadModel(source, {
      name,
      onProgress(p) {
        phases.add(p.phase);
        const file = p.file ? ` ${p.file}` : '';
        $('model-progress-text').textContent =
          p.phase === 'download' ? `Downloading${file}…` : p.phase === 'cache' ? `Reading${file} from browser storage…` : 'Loading the weights onto the GPU…';
        if (p.total > 0) {
          $('model-progress-bar').value = Math.min(1, p.loaded / p.total);
          $('model-progress-bytes').textContent = p.phase === 'load' ? `${Math.round((100 * p.loaded) / p.total)} %` : `${bytes(p.loaded)} of ${bytes(p.total)}`;
        }
      },
    });
    const fromCache = phases.has('cache') && !phases.has('download');
    state.model = { info, identity, name: info.name || name, fromCache };
    state.tuned = null;
    state.imported = null;
    state.trainer = null;
    renderModel();
    settings.setModel(info);
    mark('model', 'loaded');
    mark('modelSource', fromCache ? 'cache' : phases.has('download') ? 'download' : 'local');
    schedulePreview();
    return true;
  } catch (error) {
    mark('model', 'failed');
    $('model-pill').textContent = state.model ? 'loaded' : 'failed';
    $('model-pill').className = `status-pill ${state.model ? 'ok' : 'bad'}`;
    showError(error, 'model');
    return false;
  } finally {
    progress.hidden = true;
    setBusy('');
    if (state.model) renderModel();
  }
}

function renderModel() {
  const m = state.model;
  if (!m) return;
  const i = m.info;
  $('model-pill').textContent = m.fromCache ? 'loaded from browser storage' : 'loaded';
  $('model-pill').className = 'status-pill ok';
  const fact = (k, v) => h('div', {}, h('dt', { text: k }), h('dd', { text: v }));
  $('model-facts').replaceChildren(
    h('div', { class: 'wide' }, h('dt', { text: 'Model' }), h('dd', { text: m.name })),
    fact('Architecture', i.architecture),
    fact('Parameters', count(i.parameters)),
    fact('Layers × hidden', `${i.numLayers} × ${i.hiddenSize}`),
    fact('Heads (KV)', `${i.numHeads} (${i.numKvHeads})`),
    fact('Vocabulary', count(i.vocabSize)),
    fact('Context', `${count(i.maxPositions)} tokens`),
    fact('Chat template', i.hasChatTemplate ? 'yes' : 'no'),
  );
  const est = estimateMemory(i, { ...defaultsFor(i), method: 'lora' }, state.gpu);
  const fit = $('model-fit');
  fit.className = `fit ${est.fits ? 'ok' : 'warn'}`;
  fit.textContent = est.fits
    ? `Weights take ${bytes(est.weights)} of GPU memory (f32); training with the default settings needs about ${bytes(est.total)}.`
    : `Training this model with the default settings will not fit this GPU: ${est.problems.join('; ')}.`;
  $('model-info').hidden = false;
  $('try-chat-row').hidden = !i.hasChatTemplate;
  $('try-chat').checked = i.hasChatTemplate;
  // Sensible generation defaults: the toy demo answers in a few tokens; real models get room.
  const toy = sizeClass(i.parameters) === 'toy';
  $('try-temperature').value = toy ? '0' : '0.7';
  $('try-max').value = toy ? '12' : '128';
  if (!state.promptEdited) $('try-prompt').value = toy ? 'Reverse: hello ->' : 'Explain in two sentences what a LoRA adapter is.';
  renderMemory($('memory-estimate'), i, settings.config(), state.gpu);
}

function renderSuggestions() {
  const body = $('hub-suggestion-rows');
  body.replaceChildren(...SUGGESTED.map((s) => {
    const d = defaultsFor(s);
    const est = estimateMemory(s, { ...d, method: 'lora' }, state.gpu);
    return h('tr', {},
      h('td', {}, h('code', { text: s.id })),
      h('td', { text: count(s.parameters) }),
      h('td', { text: bytes(s.download) }),
      h('td', {}, `≈ ${bytes(est.total)} `, h('span', { class: est.fits ? 'fits' : 'nofit', text: est.fits ? '✓ within this GPU’s limits' : '✗ over this GPU’s limits' })),
      h('td', {}, h('button', { type: 'button', class: 'btn btn-ghost btn-small', text: 'Use', onclick: () => { $('hub-id').value = s.id; $('hub-id').focus(); } })));
  }));
}

async function loadDemoModel() {
  return loadModel({ url: DEMO_URL, cache: false }, { kind: 'demo' }, 'webtune demo (toy Llama)');
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw Object.assign(new Error(`${url}: HTTP ${res.status}`), { code: 'IO' });
  return new Uint8Array(await res.arrayBuffer());
}

async function loadDemoData() {
  try {
    const [train, evalData] = await Promise.all([fetchBytes(`${DEMO_URL}train.jsonl`), fetchBytes(`${DEMO_URL}eval.jsonl`)]);
    setEvalData({ name: 'demo eval.jsonl', data: evalData });
    setEvalMode('file');
    setTrainData({ name: 'demo train.jsonl', data: train });
  } catch (error) {
    showError(error, 'data');
  }
}

async function loadDemo() {
  if (await loadDemoModel()) await loadDemoData();
}

/**
 * The hosts a model may come from, as the page's Content-Security-Policy says: this page's own
 * origin and the Hugging Face hub (the engine's worker fetches, and a meta CSP does not reach into
 * workers, so the page checks it here too).
 */
function allowedModelHost(url) {
  try {
    const u = new URL(url, location.href);
    if (u.origin === location.origin) return true;
    return u.protocol === 'https:' && (u.hostname === 'huggingface.co' || /\.(huggingface\.co|hf\.co)$/.test(u.hostname));
  } catch {
    return false;
  }
}

const HOST_HELP = 'For your privacy this page only downloads from the Hugging Face hub (huggingface.co) and from its own server. ' +
  'For a model elsewhere, download its files and choose them under “Your files”.';

/** A Hugging Face id (`owner/name`), a hub page URL or a folder URL → a ModelSource. */
function hubSource() {
  const raw = $('hub-id').value.trim();
  const revision = $('hub-revision').value.trim() || 'main';
  const cache = $('hub-cache').checked;
  let base = $('hub-base').value.trim().replace(/\/+$/, '') || 'https://huggingface.co';
  if (!raw) return null;
  if (!allowedModelHost(base)) return { error: `${base} is not the Hugging Face hub or this page’s server. ${HOST_HELP}` };
  let id = raw;
  if (/^https?:\/\//i.test(raw)) {
    const url = new URL(raw);
    const m = url.pathname.match(/^\/([^/]+\/[^/]+)(?:\/(?:tree|resolve|blob)\/([^/]+))?\/?$/);
    if (url.hostname === 'huggingface.co' && m) {
      id = m[1];
      base = url.origin;
      return { source: { hub: id, revision: m[2] ?? revision, baseUrl: base, cache }, identity: { kind: 'hub', id, revision: m[2] ?? revision, baseUrl: base }, name: id };
    }
    if (!allowedModelHost(url.href)) return { error: `${url.origin} is not the Hugging Face hub or this page’s server. ${HOST_HELP}` };
    const folder = url.href.endsWith('/') ? url.href : `${url.href}/`;
    return { source: { url: folder, cache }, identity: { kind: 'url', url: folder }, name: folder };
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(id)) return { error: `“${raw}” is not a model id like HuggingFaceTB/SmolLM2-135M-Instruct` };
  return { source: { hub: id, revision, baseUrl: base, cache }, identity: { kind: 'hub', id, revision, baseUrl: base }, name: id };
}

async function loadHub() {
  const s = hubSource();
  if (!s) {
    $('hub-id').focus();
    return false;
  }
  if (s.error) {
    showAlert({ id: 'error-model', kind: 'error', title: 'This model source cannot be used.', body: s.error });
    return false;
  }
  return loadModel(s.source, s.identity, s.name);
}

async function loadLocalModel(fileList) {
  const files = modelFiles([...fileList]);
  const paths = Object.keys(files);
  if (!paths.some((p) => /(^|\/)config\.json$/.test(p))) {
    showAlert({
      id: 'error-model', kind: 'error', title: 'No config.json among the chosen files.',
      body: 'Choose the model’s folder, or select config.json, the .safetensors file(s), tokenizer.json and tokenizer_config.json together.',
    });
    return false;
  }
  const name = folderName(paths) ?? 'local model';
  const ok = await loadModel({ files }, null, name);
  if (ok) {
    const i = state.model.info;
    state.model.identity = { kind: 'files', name, parameters: i.parameters, vocabSize: i.vocabSize, hiddenSize: i.hiddenSize, numLayers: i.numLayers };
    if (state.pendingResume) {
      const rec = state.pendingResume;
      if (sameModel(rec.model, state.model.identity)) {
        state.pendingResume = null;
        await resumeRun(rec);
      } else {
        showAlert({ id: 'resume', kind: 'warn', title: 'This is not the model of the saved run.', body: `The saved run used “${rec.modelName}”. Choose that folder to resume it, or start a new run.` });
      }
    }
  }
  return ok;
}

// --- 2 Data ---------------------------------------------------------------------------------------

async function readFile(file) {
  return { name: file.name, data: new Uint8Array(await file.arrayBuffer()) };
}

function setTrainData(d) {
  state.data.train = { ...d, key: `data-${fingerprint(d.data)}` };
  $('data-file-name').textContent = `${d.name} · ${bytes(d.data.length)}`;
  $('opt-skipBadRows').checked = false;
  schedulePreview(0);
  updateControls();
}

function setEvalData(d) {
  state.data.eval = d ? { ...d, key: `data-${fingerprint(d.data)}` } : null;
  $('eval-file-name').textContent = d ? `${d.name} · ${bytes(d.data.length)}` : 'none chosen';
}

function setEvalMode(mode) {
  for (const r of document.querySelectorAll('input[name="eval-mode"]')) r.checked = r.value === mode;
}

function evalMode() {
  return document.querySelector('input[name="eval-mode"]:checked')?.value ?? 'none';
}

/** The TrainingConfig of the form plus the data-section options. */
function trainingConfig() {
  const c = settings.config();
  c.skipBadRows = $('opt-skipBadRows').checked;
  if (evalMode() === 'split') {
    const pct = Number($('eval-split').value);
    if (pct > 0) c.evalSplit = Math.min(0.9, pct / 100);
  }
  return c;
}

let previewSeq = 0;
let previewTimer;
function schedulePreview(ms = 250) {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(updatePreview, ms);
}

async function updatePreview() {
  if (!state.engine || !state.model || !state.data.train) return;
  if (state.busy || state.training) {
    schedulePreview(500);
    return;
  }
  const seq = ++previewSeq;
  const d = state.data.train;
  setBusy('preview');
  mark('preview', 'loading');
  try {
    const p = await state.engine.previewDataset({ name: d.name, data: d.data }, trainingConfig(), PREVIEW_ROWS);
    if (seq !== previewSeq) return;
    state.preview = p;
    renderPreview(p);
    dismissAlert('error-data');
    mark('preview', 'ready');
  } catch (error) {
    mark('preview', 'failed');
    $('data-pill').textContent = 'cannot be read';
    $('data-pill').className = 'status-pill bad';
    showError(error, 'data');
  } finally {
    setBusy('');
  }
}

function renderPreview(p) {
  const r = p.report;
  const fact = (k, v) => h('div', {}, h('dt', { text: k }), h('dd', { text: v }));
  const bad = r ? r.badRows : p.rows.filter((row) => row.error).map((row) => ({ line: row.line, reason: row.error }));
  const facts = [];
  if (r) {
    facts.push(
      fact('Usable rows', r.rows.toLocaleString('en-US')),
      fact('Bad rows', String(bad.length)),
      fact('Tokens per row', `${r.minTokens} – ${r.maxTokens} (mean ${r.meanTokens.toFixed(1)})`),
      fact('Supervised tokens', r.supervisedTokens.toLocaleString('en-US')),
      fact('Cut to max length', String(r.truncated)),
    );
    if (r.noSupervisedTokens) facts.push(fact('Dropped (nothing to learn)', String(r.noSupervisedTokens)));
  } else {
    facts.push(fact('Usable rows', '0'));
  }
  $('data-facts').replaceChildren(...facts);

  $('bad-rows').hidden = bad.length === 0;
  if (bad.length) {
    $('bad-rows-title').textContent = r
      ? `${plural(bad.length, 'row')} cannot be used`
      : 'No row can be used';
    const shown = bad.slice(0, 200);
    $('bad-rows-list').replaceChildren(...shown.map((b) => h('li', {}, h('span', { class: 'line-no', text: `Line ${b.line}` }), `: ${b.reason}`)),
      bad.length > shown.length ? h('li', { class: 'muted', text: `… and ${bad.length - shown.length} more` }) : null);
    $('skip-bad-label').textContent = r && r.rows > 0
      ? `Skip ${bad.length === 1 ? 'this row' : `these ${bad.length} rows`} and train on the ${r.rows.toLocaleString('en-US')} good ones`
      : 'Skip bad rows (no good rows left)';
    $('opt-skipBadRows').disabled = !(r && r.rows > 0);
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
  const pill = $('data-pill');
  if (!r) {
    pill.textContent = 'no usable rows';
    pill.className = 'status-pill bad';
  } else if (bad.length) {
    pill.textContent = `${r.rows} rows · ${bad.length} bad`;
    pill.className = 'status-pill warn';
  } else {
    pill.textContent = `${r.rows.toLocaleString('en-US')} rows`;
    pill.className = 'status-pill ok';
  }
}

// --- 4 Train --------------------------------------------------------------------------------------

function setNote(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = `note ${kind}`;
}

function resetTrainView() {
  state.metrics = [];
  chart.clear();
  for (const id of ['stat-step', 'stat-epoch', 'stat-loss', 'stat-eval', 'stat-tps', 'stat-elapsed']) $(id).textContent = '–';
  $('train-progress').value = 0;
  $('train-eta').textContent = '';
  setNote('train-note', '');
  setNote('checkpoint-status', '');
  mark('step', '0');
  delete document.body.dataset.checkpointStep;
}

function showMetrics(m, total) {
  $('stat-step').textContent = `${m.step} / ${total}`;
  if (Number.isFinite(m.epoch)) $('stat-epoch').textContent = Number.isInteger(m.epoch) ? String(m.epoch) : m.epoch.toFixed(2);
  if (Number.isFinite(m.loss)) $('stat-loss').textContent = loss(m.loss);
  const lastEval = [...state.metrics].reverse().find((x) => Number.isFinite(x.evalLoss));
  if (lastEval) $('stat-eval').textContent = loss(lastEval.evalLoss);
  if (Number.isFinite(m.tokensPerSecond)) $('stat-tps').textContent = m.tokensPerSecond >= 100 ? Math.round(m.tokensPerSecond).toLocaleString('en-US') : m.tokensPerSecond.toFixed(1);
  if (Number.isFinite(m.elapsedMs)) $('stat-elapsed').textContent = duration(m.elapsedMs);
  $('train-progress').value = total ? m.step / total : 0;
  $('train-progress-text').textContent = `Step ${m.step} of ${total}`;
  $('train-eta').textContent = m.step >= total ? '' : Number.isFinite(m.etaMs) ? `about ${duration(m.etaMs)} left` : '';
}

function compactMetrics(m) {
  const out = { step: m.step };
  for (const k of ['epoch', 'loss', 'evalLoss', 'lr', 'gradNorm', 'tokensPerSecond', 'elapsedMs', 'etaMs']) if (Number.isFinite(m[k])) out[k] = m[k];
  if (m.earlyStopped) out.earlyStopped = true;
  return out;
}

function checkTrainingInputs() {
  const problems = settings.validate();
  if (!state.data.train) problems.push('Choose training data in step 2');
  if (evalMode() === 'file' && !state.data.eval) problems.push('Choose an evaluation file in step 2, or another evaluation option');
  if (problems.length) {
    showAlert({ id: 'error-settings', kind: 'error', title: 'Training cannot start yet.', body: `${problems.join('. ')}.` });
    return false;
  }
  dismissAlert('error-settings');
  const est = estimateMemory(state.model.info, trainingConfig(), state.gpu);
  if (!est.fits) {
    showAlert({ id: 'memory', kind: 'warn', title: 'This run may not fit the GPU.', body: `${est.problems.join('; ')}. Training starts anyway; if it fails, your checkpoint is kept.` });
  } else {
    dismissAlert('memory');
  }
  return true;
}

/**
 * Starts a run, or with `resume` (a saved record) continues one: the same model, data and config,
 * and the checkpoint's adapter and optimizer state. `train: false` only restores the adapter.
 */
async function startTraining({ resume, train = true } = {}) {
  if (!resume && !checkTrainingInputs()) return;
  for (const id of ['error-train', 'error-checkpoint', 'early-stop', 'resume']) dismissAlert(id);
  const config = resume ? resume.config : trainingConfig();
  const page = resume ? resume.page : { ...settings.pageOptions(), evalMode: evalMode() };
  const trainData = state.data.train;
  const evalData = page.evalMode === 'file' ? state.data.eval : null;
  const continueImported = resume ? !!resume.adapterKey : !!(state.imported && $('continue-adapter').checked);
  let adapter;
  if (continueImported) adapter = resume ? await store.getBlob(resume.adapterKey).catch(() => undefined) : state.imported.files;

  setBusy('start');
  setNote('train-note', resume ? `Restoring the checkpoint of step ${resume.step}…` : 'Preparing the data and the adapter…');
  mark('trainState', 'starting');
  let trainer;
  try {
    trainer = await state.engine.createTrainer({
      data: { name: trainData.name, data: trainData.data },
      evalData: evalData ? { name: evalData.name, data: evalData.data } : undefined,
      config,
      adapter,
      checkpoint: resume?.checkpoint,
    });
  } catch (error) {
    setBusy('');
    setNote('train-note', '');
    mark('trainState', 'failed');
    showError(error, config.skipBadRows === false && error?.code === 'INVALID_DATASET' ? 'data' : 'train', 'train');
    return;
  }
  state.trainer = trainer;
  state.tuned = { method: config.method, init: config.init, source: resume ? 'restore' : 'train' };
  const rep = trainer.report;
  state.run = {
    id: resume?.id ?? `${Date.now()}`,
    model: state.model.identity,
    modelName: state.model.name,
    data: {
      train: { key: trainData.key, name: trainData.name },
      eval: evalData ? { key: evalData.key, name: evalData.name } : null,
    },
    adapterKey: continueImported ? (resume?.adapterKey ?? state.imported.key) : null,
    config,
    page,
    form: resume?.form ?? settings.snapshot(),
    totalSteps: trainer.totalSteps,
    startedAt: resume?.startedAt ?? Date.now(),
  };

  if (!resume) {
    resetTrainView();
    state.lastCheckpointStep = 0;
    // The run's data go to browser storage once, so that a resume after a reload has them.
    try {
      await store.clearRun();
      const blobs = [[trainData.key, { name: trainData.name, data: trainData.data }]];
      if (evalData) blobs.push([evalData.key, { name: evalData.name, data: evalData.data }]);
      if (state.run.adapterKey) blobs.push([state.run.adapterKey, state.imported.files]);
      await store.putBlobs(blobs);
      store.persist();
    } catch (error) {
      showError(error, 'checkpoint');
    }
  } else {
    state.metrics = (resume.metrics ?? []).filter((m) => m.step <= resume.step);
    chart.setHistory(state.metrics);
    state.lastCheckpointStep = resume.step;
    const last = state.metrics[state.metrics.length - 1];
    if (last) showMetrics(last, trainer.totalSteps);
  }

  const examples = `${plural(rep.trainExamples, 'training example')}${rep.evalExamples ? `, ${plural(rep.evalExamples, 'evaluation example')}` : ', no evaluation'}`;
  const skipped = rep.train?.badRows?.length ? ` (${plural(rep.train.badRows.length, 'bad row')} skipped)` : '';

  if (!train) {
    setBusy('');
    state.training = false;
    setNote('train-note', `Adapter restored from step ${resume.step} of ${trainer.totalSteps}: try it in step 5 or export it in step 6.`, 'ok');
    updateControls();
    return;
  }

  // The starting point of the eval curve: the fresh adapter's eval loss at step 0.
  if (!resume && rep.evalExamples > 0 && !continueImported) {
    setNote('train-note', `${examples}${skipped}. Measuring the starting eval loss…`);
    try {
      const evalLoss = await trainer.evaluate();
      const m = { step: 0, evalLoss };
      state.metrics.push(m);
      chart.add(m);
      $('stat-eval').textContent = loss(evalLoss);
    } catch (error) {
      console.warn('[webtune page] initial evaluation failed:', error);
    }
  }

  setBusy('');
  state.training = true;
  state.pausing = false;
  setNote('train-note', `Training on ${examples}${skipped}: ${plural(trainer.totalSteps, 'step')}.`);
  $('train-progress-text').textContent = `Step ${trainer.stepsDone} of ${trainer.totalSteps}`;
  updateControls();
  const poll = setInterval(pollTrainer, 250);
  const checkpointEvery = page.checkpointEvery;
  try {
    const summary = await trainer.train({
      checkpointEvery,
      onProgress: onStep,
      onCheckpoint: saveCheckpoint,
    });
    await finishRun(summary);
  } catch (error) {
    mark('trainState', 'failed');
    const e = showError(error, 'train', 'train');
    setNote('train-note', `Training stopped at step ${trainer.stepsDone} because of an error.${state.lastCheckpointStep ? ` The checkpoint of step ${state.lastCheckpointStep} is kept in browser storage.` : ''}`, 'warn');
    if (state.lastCheckpointStep && ['GPU', 'WORKER', 'WASM'].includes(e?.code)) offerReload();
  } finally {
    clearInterval(poll);
    state.training = false;
    state.pausing = false;
    updateControls();
  }
}

function offerReload() {
  showAlert({
    id: 'reload', kind: 'info', title: 'Your work is safe.',
    body: `The checkpoint of step ${state.lastCheckpointStep} is in browser storage. Reload the page to get a fresh GPU device, then choose “Resume”.`,
    actions: [{ label: 'Reload now', primary: true, onClick: () => location.reload() }],
  });
}

function onStep(m) {
  const c = compactMetrics(m);
  state.metrics.push(c);
  chart.add(c);
  showMetrics(c, state.trainer.totalSteps);
  if (m.earlyStopped) {
    setNote('train-note', `Stopped early at step ${m.step}: the eval loss stopped improving. The best adapter is kept.`, 'warn');
    showAlert({ id: 'early-stop', kind: 'info', title: `Early stopping at step ${m.step}`, body: 'The eval loss did not improve for the set number of evaluations, so training ended; the adapter with the best eval loss is kept.' });
  }
  mark('step', String(m.step));
}

function pollTrainer() {
  const s = trainerState();
  if (s === 'paused') {
    if (state.pausing) {
      state.pausing = false;
      setNote('train-note', `Paused after step ${state.trainer.stepsDone}. Resume, or try the adapter so far in step 5.`, 'warn');
    }
    $('train-eta').textContent = 'paused';
  }
  updateControls();
}

/** Saves a checkpoint (never throws: a failed save warns and training goes on). */
function saveCheckpoint(checkpoint, step) {
  const record = {
    ...state.run,
    step,
    totalSteps: state.trainer?.totalSteps ?? state.run.totalSteps,
    state: state.pausing || trainerState() === 'paused' ? 'paused' : 'running',
    checkpoint,
    metrics: state.metrics.filter((m) => m.step <= step),
    savedAt: Date.now(),
  };
  state.saveQueue = state.saveQueue.then(async () => {
    try {
      await store.saveRun(record);
      state.lastCheckpointStep = step;
      dismissAlert('error-checkpoint');
      setNote('checkpoint-status', `Checkpoint of step ${step} saved in browser storage (${bytes(checkpoint.byteLength)}) at ${new Date().toLocaleTimeString()}.`, 'muted');
      mark('checkpointStep', String(step));
    } catch (error) {
      showError(error, 'checkpoint');
      setNote('checkpoint-status', `The checkpoint of step ${step} could not be saved${state.lastCheckpointStep ? `; the one of step ${state.lastCheckpointStep} is kept` : ''}. Training continues.`, 'warn');
    }
  });
  return state.saveQueue;
}

async function finishRun(summary) {
  const trainer = state.trainer;
  const done = summary.state === 'done';
  const parts = [`${done ? 'Done' : 'Stopped'} after ${plural(summary.steps, 'step')}`];
  if (Number.isFinite(summary.finalLoss)) parts.push(`train loss ${loss(summary.finalLoss)}`);
  if (Number.isFinite(summary.evalLoss)) parts.push(`eval loss ${loss(summary.evalLoss)}`);
  if (Number.isFinite(summary.bestEvalLoss) && summary.stoppedEarly) parts.push(`best eval loss ${loss(summary.bestEvalLoss)}`);
  setNote('train-note', `${parts.join(', ')}${summary.stoppedEarly ? ' (stopped early; the best adapter is kept)' : ''}. Try it in step 5, download it in step 6.`, 'ok');
  $('train-eta').textContent = '';
  state.tuned.step = summary.steps;
  // Keep the finished adapter in browser storage too, so that a reload can restore it.
  try {
    const bytesNow = await trainer.checkpoint();
    await state.saveQueue;
    state.pausing = false;
    await store.saveRun({
      ...state.run, step: trainer.stepsDone, totalSteps: trainer.totalSteps, state: summary.state,
      checkpoint: bytesNow, metrics: state.metrics, savedAt: Date.now(),
    });
    state.lastCheckpointStep = trainer.stepsDone;
    setNote('checkpoint-status', `The adapter of step ${trainer.stepsDone} is saved in browser storage.`, 'muted');
    mark('checkpointStep', String(trainer.stepsDone));
  } catch (error) {
    showError(error, 'checkpoint');
  }
}

// --- resume after a reload ------------------------------------------------------------------------

function describeRun(rec) {
  const when = new Date(rec.savedAt).toLocaleString();
  return `${rec.modelName} on ${rec.data?.train?.name ?? 'your data'}, saved ${when}.`;
}

function offerSavedRun(rec) {
  state.savedRun = rec;
  const finished = rec.state === 'done' || rec.state === 'stopped';
  mark('savedRun', finished ? 'finished' : 'unfinished');
  showAlert({
    id: 'resume',
    kind: 'info',
    dismissible: false,
    title: finished
      ? `Your last adapter (step ${rec.step} of ${rec.totalSteps}) is saved in this browser.`
      : `Unfinished training found: step ${rec.step} of ${rec.totalSteps} is saved.`,
    body: describeRun(rec) + (rec.model.kind === 'files' ? ' You will be asked to choose the same model folder again.' : ''),
    actions: [
      { label: finished ? 'Restore the adapter' : `Resume from step ${rec.step}`, primary: true, onClick: () => resumeRun(rec) },
      { label: 'Discard', onClick: discardSavedRun },
    ],
  });
}

async function discardSavedRun() {
  state.savedRun = null;
  state.pendingResume = null;
  mark('savedRun', 'none');
  try {
    await store.clearRun();
  } catch (error) {
    showError(error, 'checkpoint');
  }
  if (!state.model) await loadDemo();
}

async function resumeRun(rec) {
  dismissAlert('resume');
  state.savedRun = null;
  const finished = rec.state === 'done' || rec.state === 'stopped';
  if (!sameModel(rec.model, state.model?.identity)) {
    const m = rec.model;
    let ok = false;
    if (m.kind === 'demo') ok = await loadDemoModel();
    else if (m.kind === 'hub') ok = await loadModel({ hub: m.id, revision: m.revision, baseUrl: m.baseUrl, cache: true }, m, m.id);
    else if (m.kind === 'url') ok = await loadModel({ url: m.url, cache: true }, m, m.url);
    else {
      state.pendingResume = rec;
      selectTab('tab-files');
      showAlert({
        id: 'resume', kind: 'info',
        title: `Choose the folder of “${rec.modelName}” to ${finished ? 'restore the adapter' : 'resume'}.`,
        body: 'Files from your disk cannot be re-opened after a reload without asking you. Use “Choose a folder…” in step 1.',
        actions: [{ label: 'Discard the saved run', onClick: discardSavedRun }],
      });
      return;
    }
    if (!ok) return;
  }
  try {
    const train = await store.getBlob(rec.data.train.key);
    const evalData = rec.data.eval ? await store.getBlob(rec.data.eval.key) : null;
    if (!train || (rec.data.eval && !evalData)) {
      showAlert({ id: 'resume', kind: 'error', title: 'The data of the saved run are no longer in browser storage.', body: 'Choose the same files again and start a new run (the saved checkpoint needs exactly the same data).' });
      return;
    }
    setEvalData(evalData);
    setEvalMode(rec.page.evalMode ?? (evalData ? 'file' : 'none'));
    state.data.train = { ...train, key: rec.data.train.key };
    $('data-file-name').textContent = `${train.name} · ${bytes(train.data.length)}`;
    settings.apply(rec.form ?? {});
    $('opt-skipBadRows').checked = !!rec.config.skipBadRows;
    if (rec.config.evalSplit) $('eval-split').value = String(Math.round(rec.config.evalSplit * 100));
    schedulePreview(0);
  } catch (error) {
    showError(error, 'checkpoint');
    return;
  }
  await startTraining({ resume: rec, train: !finished });
}

// --- 5 Try ----------------------------------------------------------------------------------------

async function generate(event) {
  event?.preventDefault();
  if ($('try-go').disabled) return;
  const prompt = $('try-prompt').value;
  if (!prompt.trim()) {
    $('try-prompt').focus();
    return;
  }
  const options = {
    temperature: Number($('try-temperature').value),
    topP: Number($('try-topp').value),
    maxTokens: Math.max(1, Math.round(Number($('try-max').value))),
    chat: !$('try-chat-row').hidden && $('try-chat').checked,
    seed: Math.floor(Math.random() * 2 ** 31),
  };
  const controller = new AbortController();
  state.generating = controller;
  setBusy('generate');
  mark('generate', 'running');
  const columns = [['base', $('out-base'), $('out-base-info')], ['tuned', $('out-tuned'), $('out-tuned-info')]];
  for (const [, out, info] of columns) {
    out.textContent = '';
    info.textContent = '';
  }
  try {
    for (const [which, out, info] of columns) {
      if (which === 'tuned' && !state.tuned) {
        info.textContent = 'No adapter yet: train one (step 4) or import one (step 6).';
        continue;
      }
      if (controller.signal.aborted) break;
      info.textContent = 'generating…';
      const started = performance.now();
      let tokens = 0;
      const gen = state.engine.generate(prompt, { ...options, adapter: which, signal: controller.signal });
      for await (const chunk of gen) {
        out.append(chunk);
        tokens++;
      }
      const result = await gen.result;
      // The whole text decodes multi-byte characters that single tokens split.
      if (result.text) out.textContent = result.text;
      const secs = (performance.now() - started) / 1000;
      const reason = { eos: 'end of text', length: 'max tokens reached', context: 'context full', aborted: 'stopped' }[result.finishReason] ?? result.finishReason;
      info.textContent = `${plural(tokens, 'token')} in ${secs.toFixed(1)} s · ${reason}`;
      if (!result.text && !out.textContent) out.replaceChildren(h('span', { class: 'muted', text: '(no text: the model ended its answer at once)' }));
    }
    mark('generate', 'done');
  } catch (error) {
    mark('generate', 'failed');
    showError(error, 'generate');
  } finally {
    state.generating = null;
    setBusy('');
  }
}

// --- 6 Export -------------------------------------------------------------------------------------

async function exportAdapter(format) {
  setBusy('export');
  setNote('export-status', format === 'gguf' ? 'Writing the GGUF file…' : 'Writing the PEFT files…');
  try {
    const x = await state.engine.exportAdapter({ format, pissaAsLora: $('export-pissa-as-lora').checked });
    download(x.blob, x.fileName);
    setNote('export-status', `Saved ${x.fileName} (${bytes(x.blob.size)}) to your downloads.`, 'ok');
    mark('exported', format);
  } catch (error) {
    setNote('export-status', '');
    showError(error, 'export');
  } finally {
    setBusy('');
  }
}

async function importAdapter(fileList) {
  setBusy('adapter');
  try {
    const { config, weights } = await state.webtune.readAdapterFiles([...fileList]);
    const files = { 'adapter_config.json': new TextEncoder().encode(config), 'adapter_model.safetensors': weights };
    const info = await state.engine.loadAdapter(files);
    let cfg = {};
    try {
      cfg = JSON.parse(config);
    } catch { /* the engine accepted it, so this does not matter */ }
    state.imported = { files, key: `adapter-${fingerprint(weights)}`, info };
    state.tuned = { method: info.peftType === 'PROMPT_TUNING' ? 'prompt-tuning' : 'lora', init: typeof cfg.init_lora_weights === 'string' ? cfg.init_lora_weights : 'default', source: 'import' };
    $('continue-adapter').checked = true;
    $('adapter-import-name').textContent = `Imported: ${info.peftType}, ${count(info.trainableParameters)} parameters.`;
    setNote('export-status', 'Adapter imported: try it in step 5, export it again, or continue training it (step 4, “Start from the imported adapter”).', 'ok');
    mark('adapter', 'imported');
  } catch (error) {
    showError(error, 'adapter');
  } finally {
    setBusy('');
  }
}

// --- wiring ---------------------------------------------------------------------------------------

function wire() {
  selectTab = setupTabs();
  $('demo-load').addEventListener('click', () => loadDemo());
  $('hub-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!$('hub-load').disabled) loadHub();
  });
  $('model-folder').addEventListener('change', (e) => {
    if (e.target.files.length) loadLocalModel(e.target.files);
    e.target.value = '';
  });
  $('model-files').addEventListener('change', (e) => {
    if (e.target.files.length) loadLocalModel(e.target.files);
    e.target.value = '';
  });
  dropZone($('model-drop'), $('model-folder'), (files) => {
    if (!$('model-folder').disabled) loadLocalModel(files);
  });

  const pickData = async (files, which) => {
    const f = files[0];
    if (!f) return;
    try {
      const d = await readFile(f);
      if (which === 'train') setTrainData(d);
      else {
        setEvalData(d);
        setEvalMode('file');
      }
    } catch (error) {
      showError(Object.assign(error, { code: 'IO' }), 'data');
    }
  };
  $('data-file').addEventListener('change', (e) => {
    pickData(e.target.files, 'train');
    e.target.value = '';
  });
  $('eval-file').addEventListener('change', (e) => {
    pickData(e.target.files, 'eval');
    e.target.value = '';
  });
  dropZone($('data-drop'), $('data-file'), (files) => {
    if (!$('data-file').disabled) pickData(files, 'train');
  });
  $('data-demo').addEventListener('click', () => loadDemoData());
  $('opt-skipBadRows').addEventListener('change', () => schedulePreview(0));

  $('settings-reset').addEventListener('click', () => settings.reset());
  $('train-start').addEventListener('click', () => startTraining());
  $('train-pause').addEventListener('click', () => {
    state.pausing = true;
    state.trainer?.pause();
    setNote('train-note', 'Pausing after this step…');
    updateControls();
  });
  $('train-resume').addEventListener('click', () => {
    state.trainer?.resume();
    setNote('train-note', 'Training resumed.');
    updateControls();
  });
  $('train-stop').addEventListener('click', () => {
    state.trainer?.stop();
    setNote('train-note', 'Stopping after this step…');
    $('train-stop').disabled = true;
  });

  $('try-form').addEventListener('submit', generate);
  $('try-stop').addEventListener('click', () => state.generating?.abort());
  $('export-peft').addEventListener('click', () => exportAdapter('peft'));
  $('export-gguf').addEventListener('click', () => exportAdapter('gguf'));
  $('adapter-files').addEventListener('change', (e) => {
    if (e.target.files.length) importAdapter(e.target.files);
    e.target.value = '';
  });
  dropZone($('adapter-drop'), $('adapter-files'), (files) => {
    if (!$('adapter-files').disabled) importAdapter(files);
  });
  for (const el of document.querySelectorAll('input[name="eval-mode"], #eval-split')) el.addEventListener('change', () => updateControls());

  const refreshEstimate = debounce(() => {
    if (state.model) renderMemory($('memory-estimate'), state.model.info, settings.config(), state.gpu);
  }, 100);
  settings = new SettingsForm({
    onChange(what) {
      refreshEstimate();
      if (what === 'opt-template' || what === 'opt-maxLen' || what === 'apply') schedulePreview(400);
    },
  });
  chart = new LossChart($('loss-chart'), $('chart-empty'));
  $('try-prompt').value = 'Reverse: hello ->';
  $('try-prompt').addEventListener('input', () => { state.promptEdited = true; });
  updateControls();
}

async function main() {
  wire();
  try {
    if (!(await startEngine())) return;
    updateControls();
    let saved;
    try {
      saved = await store.loadRun();
    } catch (error) {
      console.warn('[webtune page] cannot read saved runs:', error);
    }
    // The demo loads at once (it is small and bundled), so the page works offline right away; a
    // saved run is offered on top of it.
    await loadDemo();
    if (saved?.checkpoint) offerSavedRun(saved);
    else mark('savedRun', 'none');
  } finally {
    mark('ready', 'true');
    readyResolve();
    updateControls();
  }
}

main();
