// Step 1, Model: the bundled demo, a folder or files from the user's disk, or a model from the
// Hugging Face hub (or a folder URL of this server); the loaded model's facts and whether
// training it fits this GPU.

import { $, bytes, count, fact, mark, setPill, button, input } from './format.js';
import { dismissAlert, showAlert, showError } from './alerts.js';
import { dropZone, folderName, modelFiles, onPick } from './files.js';
import { hubChoice, renderSuggestions } from './hub.js';
import { limitProblems, runFacts } from './memory.js';
import { defaultConfig } from './settings-fields.js';
import { pkg } from './engine.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').ModelSource} ModelSource */
/** @typedef {import('../webtune/index.js').ModelInfo} ModelInfo */
/** @typedef {import('./session.js').ModelIdentity} ModelIdentity */

const DEMO_LABEL = 'webtune demo (toy Llama)';

/** How the loaded model was loaded, to load it again on a new engine (picked files stay readable until a reload). @type {ModelSource | null} */
let currentSource = null;

/** Whether two identities name the same model (files: the same folder name and shape). @param {ModelIdentity | undefined} a @param {ModelIdentity | undefined} b */
export function sameModel(a, b) {
  if (!a || !b || a.kind !== b.kind) return false;
  if (a.kind === 'files' && b.kind === 'files') {
    return a.name === b.name && a.parameters === b.parameters && a.vocabSize === b.vocabSize && a.hiddenSize === b.hiddenSize && a.numLayers === b.numLayers;
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

/** @param {string} text @param {string} amount @param {number | undefined} fraction (undefined: unknown) */
function progress(text, amount, fraction) {
  $('model-progress-text').textContent = text;
  $('model-progress-bytes').textContent = amount;
  const bar = $('model-progress-bar', HTMLProgressElement);
  if (fraction === undefined) bar.removeAttribute('value');
  else bar.value = Math.min(1, fraction);
}

/**
 * Loads a model into the engine with progress; true when it loaded. A failure is explained and
 * the model loaded before stays.
 * @param {ModelSource} source
 * @param {ModelIdentity | ((info: ModelInfo) => ModelIdentity)} identity
 * @param {string} label what the page calls it
 */
async function loadModel(source, identity, label) {
  const engine = session.requireEngine();
  session.update({ busy: 'model' });
  dismissAlert('error-model');
  $('model-progress').hidden = false;
  progress(`Loading ${label}…`, '', undefined);
  setPill('model-pill', 'loading…', 'busy');
  mark('model', 'loading');
  const phases = new Set();
  try {
    const info = await engine.loadModel(source, {
      name: 'files' in source ? label : undefined,
      onProgress(p) {
        phases.add(p.phase);
        const file = p.file ? ` ${p.file}` : '';
        const text = p.phase === 'download' ? `Downloading${file}…` : p.phase === 'cache' ? `Reading${file} from browser storage…` : 'Loading the weights onto the GPU…';
        if (p.total > 0) progress(text, p.phase === 'load' ? `${Math.round((100 * p.loaded) / p.total)} %` : `${bytes(p.loaded)} of ${bytes(p.total)}`, p.loaded / p.total);
        else $('model-progress-text').textContent = text;
      },
    });
    const fromCache = phases.has('cache') && !phases.has('download');
    currentSource = source;
    session.update({ model: { info, identity: typeof identity === 'function' ? identity(info) : identity, label, fromCache }, tuned: null, imported: null });
    renderModel();
    mark('model', 'loaded');
    mark('modelSource', fromCache ? 'cache' : phases.has('download') ? 'download' : 'local');
    return true;
  } catch (error) {
    if (session.model) renderModel();
    else setPill('model-pill', 'failed', 'bad');
    mark('model', 'failed');
    showError(error, 'model');
    return false;
  } finally {
    $('model-progress').hidden = true;
    session.update({ busy: '' });
  }
}

export function loadDemoModel() {
  return loadModel({ ...pkg().demo.model, cache: false }, { kind: 'demo' }, DEMO_LABEL);
}

/**
 * Loads the model of a saved run; 'ask' when it came from the user's disk and must be chosen
 * again (a reload forgets picked files).
 * @param {ModelIdentity} m
 * @returns {Promise<boolean | 'ask'>}
 */
export async function loadModelOf(m) {
  if (m.kind === 'demo') return loadDemoModel();
  if (m.kind === 'hub') return loadModel({ hub: m.id, revision: m.revision, baseUrl: m.baseUrl, cache: true }, m, m.id);
  if (m.kind === 'url') return loadModel({ url: m.url, cache: true }, m, m.url);
  return 'ask';
}

/** Loads `model`, the last loaded model, again (into a new engine). @param {import('./session.js').LoadedModel} model */
export async function reloadModel(model) {
  if (!currentSource) return false;
  return loadModel(currentSource, model.identity, model.label);
}

/** @param {File[]} picked */
async function loadLocalModel(picked) {
  const files = modelFiles(picked);
  const paths = Object.keys(files);
  if (!paths.some((p) => /(^|\/)config\.json$/.test(p))) {
    showAlert({
      id: 'error-model', kind: 'error', title: 'No config.json among the chosen files.',
      body: 'Choose the model’s folder, or select config.json, the .safetensors file(s), tokenizer.json and tokenizer_config.json together.',
    });
    return;
  }
  const name = folderName(paths) ?? 'local model';
  await loadModel({ files }, (i) => ({ kind: 'files', name, parameters: i.parameters, vocabSize: i.vocabSize, hiddenSize: i.hiddenSize, numLayers: i.numLayers }), name);
}

function renderModel() {
  const m = session.model;
  if (!m) return;
  const i = m.info;
  setPill('model-pill', m.fromCache ? 'loaded from browser storage' : 'loaded', 'ok');
  $('model-facts').replaceChildren(
    fact('Model', m.label, 'wide'),
    fact('Architecture', i.architecture),
    fact('Parameters', count(i.parameters)),
    fact('Layers × hidden', `${i.numLayers} × ${i.hiddenSize}`),
    fact('Heads (KV)', `${i.numHeads} (${i.numKvHeads})`),
    fact('Vocabulary', count(i.vocabSize)),
    fact('Context', `${count(i.maxPositions)} tokens`),
    fact('Chat template', i.hasChatTemplate ? 'yes' : 'no'),
  );
  $('model-info').hidden = false;
  showFit(m);
}

/** What training `m` with the default settings needs, as the core estimates it. @param {import('./session.js').LoadedModel} m */
async function showFit(m) {
  const facts = await runFacts(defaultConfig(m.info));
  const gpu = session.engine?.gpu;
  const fit = $('model-fit');
  if (!facts || !gpu || session.model !== m) {
    if (session.model === m) fit.textContent = '';
    return;
  }
  const problems = limitProblems(facts.memory.largestBuffer, gpu);
  fit.className = `fit ${problems.length ? 'warn' : 'ok'}`;
  fit.textContent = problems.length
    ? `Training this model with the default settings will not fit this GPU: ${problems.join('; ')}.`
    : `Weights take ${bytes(facts.memory.weights)} of GPU memory (f32); training with the default settings needs about ${bytes(facts.memory.total)}.`;
}

/** Selects a tab of the model sources. @type {(id: string) => void} */
export let selectTab = () => {};

function setupTabs() {
  const tabs = /** @type {HTMLButtonElement[]} */ ([...document.querySelectorAll('#model-section [role="tab"]')]);
  /** @param {HTMLButtonElement} tab */
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls') ?? '').hidden = !on;
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
  selectTab = (id) => select($(id, HTMLButtonElement));
}

export function initModelStep() {
  setupTabs();
  button('demo-load').addEventListener('click', () => loadDemoModel());
  $('hub-form', HTMLFormElement).addEventListener('submit', (e) => {
    e.preventDefault();
    if (button('hub-load').disabled) return;
    const choice = hubChoice();
    if (!choice) input('hub-id').focus();
    else if ('error' in choice) showAlert({ id: 'error-model', kind: 'error', title: 'This model source cannot be used.', body: choice.error });
    else loadModel(choice.source, choice.identity, choice.label);
  });
  onPick(input('model-folder'), loadLocalModel);
  onPick(input('model-files'), loadLocalModel);
  dropZone($('model-drop'), input('model-folder'), loadLocalModel);

  /** @type {unknown} */
  let gpuShown = null;
  session.onChange(() => {
    for (const id of ['demo-load', 'hub-load']) button(id).disabled = !session.idle;
    for (const id of ['model-folder', 'model-files']) input(id).disabled = !session.idle;
    const engine = session.engine;
    if (engine && engine.gpu !== gpuShown) {
      gpuShown = engine.gpu;
      renderSuggestions(engine).catch((error) => console.warn('[webtune page] no model suggestions:', error));
    }
  });
}
