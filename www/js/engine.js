// The engine: the npm package in www/webtune/ (built by scripts/build-npm.sh) running in a Web
// Worker. The worker starts from a blob: URL so that this page's Content-Security-Policy (a meta
// tag, which does not reach a worker loaded from its own URL) holds the engine's requests to the
// same origins: this server and the Hugging Face hub. After the GPU device is lost, the engine is
// started again in a new worker, which acquires a new device.

import { $, binaryBytes, mark } from './format.js';
import { showAlert, showError } from './alerts.js';
import { session } from './session.js';

/** @typedef {typeof import('../webtune/index.js')} Webtune */
/** @typedef {import('../webtune/index.js').Engine} Engine */

const PACKAGE_URL = new URL('../webtune/index.js', import.meta.url).href;

/** @type {Webtune | null} */
let webtune = null;

/** The package (once startEngine has loaded it). */
export function pkg() {
  if (!webtune) throw new Error('the webtune package is not loaded');
  return webtune;
}

/** @param {string} text @param {string} title @param {'' | 'ok' | 'bad'} kind */
function gpuChip(text, title, kind) {
  const chip = $('gpu-chip');
  chip.textContent = text;
  chip.title = title;
  chip.className = kind ? `chip chip-${kind}` : 'chip';
}

/** @param {Engine} engine */
function showEngine(engine) {
  const g = engine.gpu;
  const backend = /webgpu/i.test(g.backend) ? 'WebGPU' : g.backend;
  const limits = `max buffer ${binaryBytes(g.maxBufferSize)}, max storage binding ${binaryBytes(g.maxStorageBufferBindingSize)}`;
  gpuChip(`GPU: ${g.name} · ${limits}`, `${backend} adapter: ${g.name}; ${limits}`, 'ok');
  $('version-chip').textContent = `webtune ${engine.version}`;
  $('footer-version').textContent = `webtune ${engine.version}`;
}

/** @param {unknown} error */
function failEngine(error) {
  mark('engine', 'failed');
  const e = showError(error, 'engine');
  gpuChip(e?.code === 'NO_WEBGPU' ? 'GPU: no WebGPU' : 'GPU: unavailable', e?.action ?? '', 'bad');
}

/** Loads the package and starts the engine; false (with an explanation shown) when it cannot. */
export async function startEngine() {
  try {
    webtune = /** @type {Webtune} */ (await import(PACKAGE_URL));
  } catch (error) {
    mark('engine', 'failed');
    gpuChip('engine missing', '', 'bad');
    showAlert({
      id: 'engine', kind: 'error', dismissible: false,
      title: 'The training engine is not built yet.',
      body: 'This page needs the webtune package in www/webtune/. From the repository, run bash scripts/build-npm.sh (or scripts/serve.sh, which builds and serves the page), then reload.',
      detail: `Details: ${/** @type {Error} */ (error).message}`,
    });
    return false;
  }
  try {
    const engine = await webtune.createWorkerEngine({ inheritCsp: true });
    showEngine(engine);
    mark('engine', 'ready');
    session.update({ engine });
    return true;
  } catch (error) {
    failEngine(error);
    return false;
  }
}

/**
 * Ends the engine (its worker, and with it a lost GPU device) and starts a new one. The model,
 * the trainer and the tuned adapter went with the old engine: the caller loads them again.
 */
export async function restartEngine() {
  const old = session.engine;
  session.update({ engine: null, model: null, tuned: null, busy: 'restart' });
  old?.dispose();
  gpuChip('GPU: starting…', '', '');
  mark('engine', 'restarting');
  try {
    return await startEngine();
  } finally {
    session.update({ busy: '' });
  }
}
