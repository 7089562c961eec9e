// createWorkerEngine(): the engine API on the page, with the engine itself in a module Web Worker
// (worker.js). Every method is a request to the worker; progress, text chunks and training steps
// come back as events; errors come back as WebtuneErrors with the same code.

import { Broadcast, Channel, makeGeneration } from './channel.js';
import { WebtuneError, deserializeError, serializeError } from './errors.js';
import { absoluteUrl } from './sources.js';
import { ACTIVE } from './trainer.js';
import { requireWebGpuApi } from './webgpu.js';

/** @typedef {import('./index.js').StepMetrics} StepMetrics */
/** @typedef {import('./index.js').Engine} Engine */
/** @typedef {import('./index.js').Trainer} Trainer */
/** @typedef {import('./index.js').TrainerState} TrainerState */
/** @typedef {import('./index.js').TrainReport} TrainReport */
/** @typedef {import('./index.js').GpuInfo} GpuInfo */
/** @typedef {import('./index.js').ModelInfo} ModelInfo */
/** A trainer's state as the worker reports it. @typedef {{ state: TrainerState, stepsDone?: number, metrics?: StepMetrics, error?: { code: any, message: string } }} TrainerUpdate */
/** What the worker's createTrainer returns. @typedef {{ handle: number, state: TrainerState, stepsDone: number, totalSteps: number, report: TrainReport }} TrainerInfo */

class Rpc {
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: unknown) => void, onEvent?: (name: string, data: any) => void, callbacks?: Record<string, Function | undefined>}>} */
  #pending = new Map();
  #nextId = 1;
  /** @type {WebtuneError | null} */
  #dead = null;
  /** @type {Map<number, WorkerTrainer>} */
  trainers = new Map();

  /** @param {Worker} worker */
  constructor(worker) {
    this.worker = worker;
    worker.addEventListener('message', (event) => this.#onMessage(event.data));
    worker.addEventListener('error', (event) => {
      event.preventDefault?.();
      this.kill(
        new WebtuneError(
          'WORKER',
          `the webtune worker failed${event.message ? ` (${event.message})` : ''}: if it did not start, check that the package's worker.js ` +
            'is served (bundlers: exclude "webtune" from dependency pre-bundling) or pass workerUrl; see the console for details',
        ),
      );
    });
    worker.addEventListener('messageerror', () => this.kill(new WebtuneError('WORKER', 'a message from the webtune worker could not be read')));
  }

  /** Rejects everything pending and every later call with `error`. @param {WebtuneError} error */
  kill(error) {
    if (this.#dead) return;
    this.#dead = error;
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    for (const t of this.trainers.values()) t._update({ state: 'failed', error: serializeError(error) });
  }

  /**
   * @param {string} method @param {unknown[]} args
   * @param {{ onEvent?: (name: string, data: any) => void, callbacks?: Record<string, Function | undefined>, signal?: AbortSignal }} [options]
   * @returns {Promise<any>}
   */
  call(method, args, options = {}) {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onEvent: options.onEvent, callbacks: options.callbacks });
      try {
        this.worker.postMessage({ type: 'call', id, method, args });
      } catch (e) {
        this.#pending.delete(id);
        reject(new WebtuneError('INVALID_OPTIONS', `${method}: an argument cannot be sent to the worker (${/** @type {Error} */ (e).message}); pass plain data, Files, Blobs or byte arrays`));
        return;
      }
      const signal = options.signal;
      if (signal) {
        const abort = () => this.worker.postMessage({ type: 'abort', id });
        if (signal.aborted) abort();
        else signal.addEventListener('abort', abort, { once: true });
      }
    });
  }

  /** A fire-and-forget request (pause, resume, stop). @param {string} method @param {unknown[]} args */
  send(method, args) {
    this.call(method, args).catch(() => {});
  }

  /** @param {any} msg */
  #onMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'result': {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (!p) return;
        if (msg.ok) p.resolve(msg.value);
        else p.reject(deserializeError(msg.error));
        return;
      }
      case 'event':
        this.#pending.get(msg.id)?.onEvent?.(msg.name, msg.data);
        return;
      case 'trainer':
        this.trainers.get(msg.handle)?._update(msg);
        return;
      case 'callback': {
        const fn = this.#pending.get(msg.id)?.callbacks?.[msg.name];
        Promise.resolve()
          .then(() => fn?.(...msg.args))
          .then(
            () => this.worker.postMessage({ type: 'callback-result', cb: msg.cb, ok: true }),
            (e) => this.worker.postMessage({ type: 'callback-result', cb: msg.cb, ok: false, error: serializeError(e) }),
          );
        return;
      }
    }
  }
}

/**
 * URLs (objects or relative strings) become absolute strings: the worker has another base URL.
 * @param {import('./index.js').ModelSource} source
 */
function modelSource(source) {
  const s = /** @type {any} */ (source);
  if (!s || typeof s !== 'object') return s;
  if (s.url !== undefined) return { ...s, url: absoluteUrl(s.url) };
  if (s.urls && typeof s.urls === 'object') return { ...s, urls: Object.fromEntries(Object.entries(s.urls).map(([k, v]) => [k, absoluteUrl(v)])) };
  if (s.baseUrl !== undefined) return { ...s, baseUrl: absoluteUrl(s.baseUrl) };
  return s;
}

/** @param {import('./index.js').DatasetSource} source */
function dataSource(source) {
  const s = /** @type {any} */ (source);
  if (s instanceof URL) return { url: s.href };
  if (s && typeof s === 'object' && !Array.isArray(s) && !(s instanceof Blob) && s.url !== undefined) return { ...s, url: absoluteUrl(s.url) };
  return s;
}

/** @implements {Trainer} */
class WorkerTrainer {
  /** @type {Rpc} */ #rpc;
  /** @type {number} */ #handle;
  /** @type {TrainerState} */ #state;
  /** @type {number} */ #stepsDone;
  /** @type {number} */ #totalSteps;
  /** @type {TrainReport} */ #report;
  /** @type {Broadcast<StepMetrics>} */ #metrics = new Broadcast();
  /** @type {((m: StepMetrics) => void) | undefined} */ #onProgress;
  #disposed = false;

  /** @param {Rpc} rpc @param {TrainerInfo} info */
  constructor(rpc, info) {
    this.#rpc = rpc;
    this.#handle = info.handle;
    this.#state = info.state;
    this.#stepsDone = info.stepsDone;
    this.#totalSteps = info.totalSteps;
    this.#report = info.report;
    rpc.trainers.set(info.handle, this);
  }

  get state() {
    return this.#state;
  }
  get stepsDone() {
    return this.#stepsDone;
  }
  get totalSteps() {
    return this.#totalSteps;
  }
  get report() {
    return this.#report;
  }

  /** @internal state updates from the worker @param {TrainerUpdate} u */
  _update(u) {
    if (u.stepsDone !== undefined) this.#stepsDone = u.stepsDone;
    this.#state = u.state;
    if (u.metrics) {
      this.#metrics.push(u.metrics);
      this.#onProgress?.(u.metrics);
    }
    if (u.state === 'done' || u.state === 'failed' || u.state === 'stopped') {
      this.#metrics.close(u.state === 'failed' && u.error ? deserializeError(u.error) : undefined);
      if (this.#disposed) this.#rpc.trainers.delete(this.#handle);
    }
  }

  /** @internal the trainer was disposed: end the metrics iterators */
  _detach() {
    this.#metrics.close();
  }

  /** @type {Trainer['train']} */
  async train(options = {}) {
    const { onProgress, checkpointEvery, onCheckpoint } = options;
    if (ACTIVE.has(this.#state)) {
      throw new WebtuneError('INVALID_STATE', 'this trainer is already training: use pause(), resume() or stop()');
    }
    this.#onProgress = onProgress;
    try {
      return await this.#rpc.call('trainer.train', [this.#handle, { checkpointEvery, checkpoint: !!onCheckpoint }], {
        callbacks: { checkpoint: onCheckpoint },
      });
    } finally {
      this.#onProgress = undefined;
    }
  }

  metrics() {
    return this.#metrics.iterator(this.#state === 'done' || this.#state === 'failed');
  }

  pause() {
    this.#rpc.send('trainer.pause', [this.#handle]);
  }
  resume() {
    this.#rpc.send('trainer.resume', [this.#handle]);
  }
  stop() {
    this.#rpc.send('trainer.stop', [this.#handle]);
  }
  evaluate() {
    return this.#rpc.call('trainer.evaluate', [this.#handle]);
  }
  warmUp() {
    return this.#rpc.call('trainer.warmUp', [this.#handle]);
  }
  checkpoint() {
    return this.#rpc.call('trainer.checkpoint', [this.#handle]);
  }
  dispose() {
    this.#rpc.send('trainer.dispose', [this.#handle]);
    // A running trainer ends with a "stopped" update first.
    if (!ACTIVE.has(this.#state)) {
      this.#rpc.trainers.delete(this.#handle);
      this._detach();
    } else {
      this.#disposed = true;
    }
  }
}

/** @implements {Engine} */
class WorkerEngine {
  /** @type {Rpc} */ #rpc;
  /** @type {ModelInfo | null} */ #info = null;
  #disposed = false;

  /** @param {Rpc} rpc @param {GpuInfo} gpu @param {string} version */
  constructor(rpc, gpu, version) {
    this.#rpc = rpc;
    /** @readonly */ this.gpu = gpu;
    /** @readonly */ this.version = version;
  }

  get model() {
    return this.#info ? { ...this.#info } : null;
  }

  /** @type {Engine['loadModel']} */
  async loadModel(source, options = {}) {
    const { name, onProgress, signal } = options;
    if (signal?.aborted) throw new WebtuneError('ABORTED', 'loading the model was aborted');
    const info = await this.#rpc.call('loadModel', [modelSource(source), { name, progress: !!onProgress }], {
      onEvent: (event, data) => {
        if (event === 'progress') onProgress?.(data);
      },
      signal,
    });
    this.#info = info;
    return { ...info };
  }

  /** @type {Engine['previewDataset']} */
  previewDataset(data, config, maxRows) {
    return this.#rpc.call('previewDataset', [dataSource(data), config, maxRows]);
  }

  /** @type {Engine['runFacts']} */
  runFacts(config) {
    return this.#rpc.call('runFacts', [config]);
  }

  /** @type {Engine['modelPresets']} */
  modelPresets() {
    return this.#rpc.call('modelPresets', []);
  }

  /** @type {Engine['presetFacts']} */
  presetFacts(name, config) {
    return this.#rpc.call('presetFacts', [name, config]);
  }

  /** @type {Engine['bench']} */
  bench(options) {
    return this.#rpc.call('bench', [options]);
  }

  /** @type {Engine['createTrainer']} */
  async createTrainer(options) {
    const o = /** @type {any} */ (options ?? {});
    const info = await this.#rpc.call('createTrainer', [
      {
        ...o,
        data: dataSource(o.data),
        ...(o.evalData !== undefined ? { evalData: dataSource(o.evalData) } : {}),
      },
    ]);
    // The engine disposed the previous trainer.
    for (const [handle, old] of this.#rpc.trainers) {
      this.#rpc.trainers.delete(handle);
      old._detach();
    }
    return new WorkerTrainer(this.#rpc, info);
  }

  /** @type {Engine['loadAdapter']} */
  loadAdapter(files) {
    return this.#rpc.call('loadAdapter', [files]);
  }

  /** @type {Engine['generate']} */
  generate(prompt, options = {}) {
    const { signal, ...rest } = options;
    /** @type {Channel<string>} */
    const chunks = new Channel();
    const result = this.#rpc.call('generate', [prompt, rest], {
      onEvent: (event, data) => {
        if (event === 'chunk') chunks.push(data);
      },
      signal,
    });
    result.then(
      () => chunks.close(),
      (e) => chunks.close(e),
    );
    return makeGeneration(chunks, result);
  }

  /** @type {Engine['evaluate']} */
  evaluate(data, options = {}) {
    return this.#rpc.call('evaluate', [dataSource(data), options]);
  }

  /** @type {Engine['exportAdapter']} */
  exportAdapter(options) {
    return this.#rpc.call('exportAdapter', [options]);
  }

  dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#rpc.kill(new WebtuneError('ENGINE_DISPOSED', 'this engine was disposed: create a new one with createWorkerEngine()'));
    this.#rpc.worker.terminate();
  }
}

/**
 * A module worker running `url`. Browsers only start same-origin worker scripts, so a cross-origin
 * one (webtune imported from a CDN) runs through a same-origin blob that imports it; so does one
 * that should inherit the page's Content-Security-Policy (`inheritCsp`).
 * @param {string} url @param {boolean} viaBlob
 */
function startWorker(url, viaBlob) {
  if (!viaBlob && new URL(url).origin === globalThis.location?.origin) return new Worker(url, { type: 'module' });
  const blob = new Blob([`import ${JSON.stringify(url)};\n`], { type: 'text/javascript' });
  return new Worker(URL.createObjectURL(blob), { type: 'module' });
}

/**
 * Starts a module worker running worker.js and an engine in it; resolves when its GPU is ready.
 * Without WebGPU on this thread it rejects at once (no worker, no download).
 * @param {import('./index.js').WorkerEngineOptions} [options]
 * @returns {Promise<import('./index.js').Engine>}
 */
export async function createWorkerEngine(options = {}) {
  if (typeof Worker === 'undefined') throw new WebtuneError('WORKER', 'this environment has no Web Workers: use createEngine() instead');
  requireWebGpuApi();
  /** @type {Worker} */
  let worker;
  try {
    const sameOrigin = new URL(import.meta.url).origin === globalThis.location?.origin;
    if (options.worker) worker = options.worker;
    else if (options.workerUrl !== undefined) worker = startWorker(absoluteUrl(options.workerUrl), !!options.inheritCsp);
    else if (!sameOrigin || options.inheritCsp) worker = startWorker(new URL('./worker.js', import.meta.url).href, true);
    // Written out so that bundlers (Vite, webpack) see the worker and bundle it.
    else worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    throw new WebtuneError('WORKER', `could not start the webtune worker (${/** @type {Error} */ (e).message}): pass workerUrl or worker`);
  }
  const rpc = new Rpc(worker);
  const wasmUrl = options.wasmUrl !== undefined ? absoluteUrl(options.wasmUrl) : undefined;
  try {
    const { gpu, version } = await rpc.call('init', [{ wasmUrl }]);
    return new WorkerEngine(rpc, gpu, version);
  } catch (e) {
    if (!options.worker) worker.terminate();
    throw e;
  }
}
