// createWorkerEngine(): the engine API on the page, with the engine itself in a module Web Worker
// (worker.js). Every method is a request to the worker; progress, text chunks and training steps
// come back as events; errors come back as WebtuneErrors with the same code.

import { Broadcast, Channel, makeGeneration } from './channel.js';
import { WebtuneError, deserializeError, serializeError } from './errors.js';
import { absoluteUrl } from './sources.js';

/** @typedef {import('./index.js').StepMetrics} StepMetrics */

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

  /** Rejects everything pending and every later call with `error`. */
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

  /** A fire-and-forget request (pause, resume, stop). */
  send(method, args) {
    this.call(method, args).catch(() => {});
  }

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

/** URLs (objects or relative strings) become absolute strings: the worker has another base URL. */
function modelSource(source) {
  const s = /** @type {any} */ (source);
  if (!s || typeof s !== 'object') return s;
  if (s.url !== undefined) return { ...s, url: absoluteUrl(s.url) };
  if (s.urls && typeof s.urls === 'object') return { ...s, urls: Object.fromEntries(Object.entries(s.urls).map(([k, v]) => [k, absoluteUrl(v)])) };
  if (s.baseUrl !== undefined) return { ...s, baseUrl: absoluteUrl(s.baseUrl) };
  return s;
}

function dataSource(source) {
  const s = /** @type {any} */ (source);
  if (s instanceof URL) return { url: s.href };
  if (s && typeof s === 'object' && !Array.isArray(s) && !(s instanceof Blob) && s.url !== undefined) return { ...s, url: absoluteUrl(s.url) };
  return s;
}

class WorkerTrainer {
  #rpc;
  #handle;
  #state;
  #stepsDone;
  #totalSteps;
  #report;
  /** @type {Broadcast<StepMetrics>} */ #metrics = new Broadcast();
  /** @type {((m: StepMetrics) => void) | undefined} */ #onProgress;
  #disposed = false;

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

  /** @internal state updates from the worker */
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

  async train(options = {}) {
    const { onProgress, checkpointEvery, onCheckpoint } = options;
    if (this.#state === 'running' || this.#state === 'paused') {
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
  checkpoint() {
    return this.#rpc.call('trainer.checkpoint', [this.#handle]);
  }
  dispose() {
    this.#rpc.send('trainer.dispose', [this.#handle]);
    // A running trainer ends with a "stopped" update first.
    if (this.#state !== 'running' && this.#state !== 'paused') {
      this.#rpc.trainers.delete(this.#handle);
      this._detach();
    } else {
      this.#disposed = true;
    }
  }
}

class WorkerEngine {
  #rpc;
  /** @type {import('./index.js').ModelInfo | null} */ #info = null;
  #disposed = false;

  constructor(rpc, gpu, version) {
    this.#rpc = rpc;
    /** @readonly */ this.gpu = gpu;
    /** @readonly */ this.version = version;
  }

  get model() {
    return this.#info ? { ...this.#info } : null;
  }

  async loadModel(source, options = {}) {
    const { name, onProgress, signal } = options;
    if (signal?.aborted) throw new WebtuneError('ABORTED', 'loading the model was aborted');
    const info = await this.#rpc.call('loadModel', [modelSource(source), { name, progress: !!onProgress }], {
      onEvent: (event, data) => event === 'progress' && onProgress?.(data),
      signal,
    });
    this.#info = info;
    return { ...info };
  }

  previewDataset(data, config, maxRows) {
    return this.#rpc.call('previewDataset', [dataSource(data), config, maxRows]);
  }

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

  loadAdapter(files) {
    return this.#rpc.call('loadAdapter', [files]);
  }

  generate(prompt, options = {}) {
    const { signal, ...rest } = options;
    const chunks = new Channel();
    const result = this.#rpc.call('generate', [prompt, rest], {
      onEvent: (event, data) => event === 'chunk' && chunks.push(data),
      signal,
    });
    result.then(
      () => chunks.close(),
      (e) => chunks.close(e),
    );
    return makeGeneration(chunks, result);
  }

  evaluate(data, options = {}) {
    return this.#rpc.call('evaluate', [dataSource(data), options]);
  }

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
 * one (webtune imported from a CDN) runs through a same-origin blob that imports it.
 * @param {string} url
 */
function startWorker(url) {
  if (new URL(url).origin === globalThis.location?.origin) return new Worker(url, { type: 'module' });
  const blob = new Blob([`import ${JSON.stringify(url)};\n`], { type: 'text/javascript' });
  return new Worker(URL.createObjectURL(blob), { type: 'module' });
}

/**
 * Starts a module worker running worker.js and an engine in it; resolves when its GPU is ready.
 * @param {import('./index.js').WorkerEngineOptions} [options]
 * @returns {Promise<import('./index.js').Engine>}
 */
export async function createWorkerEngine(options = {}) {
  if (typeof Worker === 'undefined') throw new WebtuneError('WORKER', 'this environment has no Web Workers: use createEngine() instead');
  /** @type {Worker} */
  let worker;
  try {
    if (options.worker) worker = options.worker;
    else if (options.workerUrl !== undefined) worker = startWorker(absoluteUrl(options.workerUrl));
    else if (new URL(import.meta.url).origin !== globalThis.location?.origin) worker = startWorker(import.meta.url.replace(/[^/]*$/, 'worker.js'));
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
