// The engine on the calling thread: wraps the wasm-bindgen classes (WebModel, WebAdapter,
// WebTrainer, WebGeneration) into the public API of index.d.ts. Every wasm call goes through one
// queue, so training steps, generated tokens and exports interleave instead of overlapping.

import init, * as wasm from './wasm/webtune.js';
import { Broadcast, Channel, makeGeneration } from './channel.js';
import { WebtuneError, toWebtuneError } from './errors.js';
import { loadModelFiles, readAdapterFiles, readDataset, toBytes } from './sources.js';

/** @typedef {import('./index.js').Engine} Engine */
/** @typedef {import('./index.js').Trainer} Trainer */
/** @typedef {import('./index.js').StepMetrics} StepMetrics */
/** @typedef {import('./index.js').TrainerState} TrainerState */

/** Hook for the worker host: `trainer[observe](fn)` calls `fn({state, stepsDone, metrics?, error?})`. */
export const observe = Symbol('webtune.observe');

export const NO_WEBGPU_HELP =
  'webtune needs WebGPU: Chrome or Edge 113+ (Windows, macOS, ChromeOS; Android 12+ from Chrome 121), ' +
  'Safari 26+ (macOS, iOS, iPadOS) or Firefox 141+ (Windows). On Linux, Chrome needs WebGPU switched on: ' +
  'enable chrome://flags/#enable-unsafe-webgpu (or start it with --enable-unsafe-webgpu). ' +
  'Check that hardware acceleration is on in the browser settings.';

/** @type {Promise<unknown> | undefined} */
let wasmReady;

/** Instantiates the wasm module once per thread. */
function loadWasm(wasmUrl) {
  const url = wasmUrl ?? new URL('./wasm/webtune_bg.wasm', import.meta.url);
  wasmReady ??= init({ module_or_path: url }).catch((e) => {
    wasmReady = undefined;
    throw new WebtuneError(
      'WASM',
      `could not load the webtune WebAssembly module from ${url} (${e?.message ?? e}): serve webtune_bg.wasm next to the package's ` +
        'index.js (bundlers: exclude "webtune" from dependency pre-bundling), or pass its URL as wasmUrl',
      { cause: e },
    );
  });
  return wasmReady;
}

/** Checks WebGPU and returns the browser's adapter info (wgpu only sees its often empty description). */
async function requireWebGpu() {
  if (globalThis.isSecureContext === false) {
    throw new WebtuneError('NO_WEBGPU', 'WebGPU only works in secure contexts: serve the page over https:// (or from http://localhost while developing)');
  }
  const gpu = /** @type {any} */ (globalThis.navigator)?.gpu;
  if (!gpu) throw new WebtuneError('NO_WEBGPU', `this browser does not expose WebGPU (navigator.gpu). ${NO_WEBGPU_HELP}`);
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch {
    // treated like "no adapter"
  }
  if (!adapter) {
    throw new WebtuneError(
      'NO_WEBGPU',
      `this browser has WebGPU but no usable GPU adapter (the GPU may be blocklisted, or hardware acceleration is off). ${NO_WEBGPU_HELP}`,
    );
  }
  return adapter.info ?? {};
}

/**
 * An options object for the wasm side, which rejects unknown keys itself (naming the valid ones).
 * @param {unknown} object @param {string} what
 */
function plainObject(object, what) {
  if (object === undefined || object === null) return undefined;
  if (typeof object !== 'object' || Array.isArray(object)) throw new WebtuneError('INVALID_OPTIONS', `${what} must be an object`);
  return object;
}

const now = () => performance.now();

/** @returns {import('./index.js').DatasetReport} */
function mapReport(r) {
  return {
    rows: r.rows,
    badRows: r.bad_rows,
    truncated: r.truncated,
    noSupervisedTokens: r.no_supervised_tokens,
    minTokens: r.min_tokens,
    meanTokens: r.mean_tokens,
    maxTokens: r.max_tokens,
    supervisedTokens: r.supervised_tokens,
  };
}

/** A call on a wasm object, with its error turned into a WebtuneError. */
async function guard(fn) {
  try {
    return await fn();
  } catch (e) {
    throw toWebtuneError(e);
  }
}

/**
 * Creates an engine on this thread (page or worker). Rejects with `NO_WEBGPU` when the browser has
 * no usable WebGPU, `WASM` when the wasm file cannot be loaded.
 * @param {import('./index.js').EngineOptions} [options]
 * @returns {Promise<Engine>}
 */
export async function createEngine(options = {}) {
  const adapterInfo = await requireWebGpu();
  await loadWasm(options.wasmUrl);
  const gpu = await guard(() => wasm.init());
  const described = [adapterInfo.vendor, adapterInfo.architecture, adapterInfo.description].filter(Boolean).join(' ');
  return new MainEngine(
    {
      name: gpu.name || described || 'WebGPU adapter',
      backend: gpu.backend,
      maxStorageBufferBindingSize: gpu.maxStorageBufferBindingSize,
      maxBufferSize: gpu.maxBufferSize,
      shaderF16: gpu.shaderF16,
      memoryBytes: gpu.memoryBytes,
    },
    wasm.version(),
  );
}

class MainEngine {
  /** @type {any} */ #model = null;
  /** @type {import('./index.js').ModelInfo | null} */ #info = null;
  /** The tuned adapter: a trainer's live adapter or a loaded one. @type {null | {trainer: TrainerImpl} | {adapter: any}} */
  #tuned = null;
  /** @type {Set<TrainerImpl>} */ #trainers = new Set();
  /** @type {Promise<unknown>} */ #queue = Promise.resolve();
  #disposed = false;

  constructor(gpu, version) {
    /** @readonly */ this.gpu = gpu;
    /** @readonly */ this.version = version;
  }

  get model() {
    return this.#info ? { ...this.#info } : null;
  }

  #checkAlive() {
    if (this.#disposed) throw new WebtuneError('ENGINE_DISPOSED', 'this engine was disposed: create a new one with createEngine()');
  }

  /**
   * Runs `fn` after every earlier queued wasm call has finished.
   * @template T @param {() => T | Promise<T>} fn @returns {Promise<T>}
   */
  exclusive(fn) {
    const run = this.#queue.then(() => {
      this.#checkAlive();
      return guard(fn);
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Frees wasm objects once everything queued so far is done (also after dispose()). */
  release(...objects) {
    this.#queue = this.#queue.then(() => {
      for (const o of objects) {
        try {
          o?.free();
        } catch {
          // already freed
        }
      }
    });
  }

  #requireModel() {
    this.#checkAlive();
    if (!this.#model) throw new WebtuneError('NO_MODEL', 'no model is loaded: call engine.loadModel() first');
    return this.#model;
  }

  #requireIdle(action) {
    for (const t of this.#trainers) {
      if (t.state === 'running' || t.state === 'paused') {
        throw new WebtuneError('INVALID_STATE', `a trainer is still training: stop() it (and await train()) before ${action}`);
      }
    }
  }

  #setTuned(tuned) {
    const old = this.#tuned;
    this.#tuned = tuned;
    if (old && 'adapter' in old) this.release(old.adapter);
  }

  async loadModel(source, options = {}) {
    this.#checkAlive();
    this.#requireIdle('loading another model');
    const { onProgress, signal } = options;
    const { files, name } = await loadModelFiles(source, { onProgress, signal });
    if (signal?.aborted) throw new WebtuneError('ABORTED', 'loading the model was aborted');
    onProgress?.({ phase: 'load', loaded: 0, total: 1 });
    const model = await this.exclusive(() => wasm.WebModel.load(files));
    try {
      this.#requireIdle('loading another model'); // a trainer may have started meanwhile
    } catch (e) {
      this.release(model);
      throw e;
    }
    // The old model, its trainers and adapters go.
    for (const t of this.#trainers) t.dispose();
    this.#setTuned(null);
    this.release(this.#model);
    this.#model = model;
    this.#info = { name: options.name ?? name ?? 'model', ...model.info() };
    onProgress?.({ phase: 'load', loaded: 1, total: 1 });
    return { ...this.#info };
  }

  async previewDataset(data, config, maxRows = 20) {
    const model = this.#requireModel();
    const { name, bytes } = await readDataset(data);
    const r = await this.exclusive(() => model.previewDataset(name, bytes, plainObject(config, 'config'), maxRows));
    return {
      rows: r.rows.map((row) => ({
        line: row.line,
        segments: row.segments,
        tokens: row.tokens,
        truncated: row.truncated,
        ...(row.error != null ? { error: row.error } : {}),
      })),
      report: r.report ? mapReport(r.report) : null,
    };
  }

  async createTrainer(options) {
    const model = this.#requireModel();
    this.#requireIdle('creating another trainer');
    if (!options || options.data === undefined) throw new WebtuneError('INVALID_OPTIONS', 'createTrainer needs {data}: a File, {name, data}, {url} or rows');
    const train = await readDataset(options.data, 'data');
    const evalData = options.evalData !== undefined ? await readDataset(options.evalData, 'evalData') : undefined;
    const config = plainObject(options.config, 'config');
    const adapterFiles = options.adapter !== undefined ? await readAdapterFiles(options.adapter) : undefined;
    const checkpoint = options.checkpoint !== undefined ? await toBytes(options.checkpoint, 'checkpoint') : undefined;
    const wt = await this.exclusive(async () => {
      const init = adapterFiles ? await wasm.WebAdapter.import(model, adapterFiles.config, adapterFiles.weights) : undefined;
      const trainer = await wasm.WebTrainer.create(model, train.name, train.bytes, evalData?.name, evalData?.bytes, config, init);
      if (checkpoint) {
        try {
          trainer.restore(checkpoint);
        } catch (e) {
          trainer.free();
          throw e;
        }
      }
      return trainer;
    });
    for (const t of this.#trainers) t.dispose();
    const trainer = new TrainerImpl(this, wt, train.name);
    this.#trainers.add(trainer);
    this.#setTuned({ trainer });
    return trainer;
  }

  /** @internal */
  forgetTrainer(trainer) {
    this.#trainers.delete(trainer);
    if (this.#tuned && 'trainer' in this.#tuned && this.#tuned.trainer === trainer) {
      // Keep its adapter as the tuned one.
      const adapter = trainer.takeAdapter();
      this.#tuned = adapter ? { adapter } : null;
    }
  }

  async loadAdapter(files) {
    const model = this.#requireModel();
    this.#requireIdle('loading an adapter');
    const { config, weights } = await readAdapterFiles(files);
    const adapter = await this.exclusive(() => wasm.WebAdapter.import(model, config, weights));
    this.#setTuned({ adapter });
    const info = adapter.info();
    return { peftType: info.peftType, trainableParameters: info.trainableParameters };
  }

  /** Runs `fn` with the chosen adapter (inside `exclusive`). */
  async #withAdapter(which, fn) {
    const model = this.#requireModel();
    const choice = which ?? (this.#tuned ? 'tuned' : 'base');
    if (choice !== 'tuned' && choice !== 'base') throw new WebtuneError('INVALID_OPTIONS', `adapter must be "tuned" or "base", not ${JSON.stringify(which)}`);
    if (choice === 'base') {
      const base = wasm.WebAdapter.base(model);
      try {
        return await fn(base);
      } finally {
        base.free();
      }
    }
    const tuned = this.#tuned;
    if (!tuned) throw new WebtuneError('NO_ADAPTER', 'there is no tuned adapter yet: train one (createTrainer, train) or loadAdapter() first');
    if ('adapter' in tuned) return await fn(tuned.adapter);
    const snapshot = tuned.trainer.snapshot();
    try {
      return await fn(snapshot);
    } finally {
      snapshot.free();
    }
  }

  generate(prompt, options = {}) {
    const { adapter, chat, signal, ...sampling } = options;
    const chunks = new Channel();
    const result = (async () => {
      let generation;
      try {
        const model = this.#requireModel();
        if (signal?.aborted) return { text: '', finishReason: /** @type {const} */ ('aborted') };
        generation = await this.exclusive(() =>
          this.#withAdapter(adapter, (a) => model.generate(chat ? model.chatPrompt(String(prompt)) : String(prompt), a, plainObject(sampling, 'generate options'))),
        );
        /** @type {'eos' | 'length' | 'context' | 'aborted'} */
        let finishReason;
        for (;;) {
          if (signal?.aborted) {
            finishReason = 'aborted';
            break;
          }
          const token = await this.exclusive(() => generation.next());
          if (token === null) {
            finishReason = generation.finishReason;
            break;
          }
          if (token.text) chunks.push(token.text);
        }
        return { text: generation.text(), finishReason };
      } catch (e) {
        throw toWebtuneError(e);
      } finally {
        this.release(generation);
      }
    })();
    result.then(
      () => chunks.close(),
      (e) => chunks.close(e),
    );
    return makeGeneration(chunks, result);
  }

  async evaluate(data, options = {}) {
    this.#requireModel();
    const { name, bytes } = await readDataset(data);
    const config = plainObject(options.config, 'config');
    const loss = await this.exclusive(() => this.#withAdapter(options.adapter, (a) => a.evaluate(name, bytes, config)));
    return { loss, perplexity: Math.exp(loss) };
  }

  async exportAdapter(options) {
    this.#requireModel();
    const format = options?.format;
    if (format !== 'peft' && format !== 'gguf') {
      throw new WebtuneError('INVALID_OPTIONS', `exportAdapter needs {format: "peft"} or {format: "gguf"}, not ${JSON.stringify(format)}`);
    }
    if (!this.#tuned) throw new WebtuneError('NO_ADAPTER', 'there is no tuned adapter to export: train one (createTrainer, train) or loadAdapter() first');
    const card = 'trainer' in this.#tuned ? this.#tuned.trainer.card() : undefined;
    const baseModel = options.baseModel ?? this.#info?.name ?? 'model';
    const out = await this.exclusive(() => this.#withAdapter('tuned', (a) => a.export(format, baseModel, options.pissaAsLora ?? true, card)));
    /** @type {Record<string, Uint8Array<ArrayBuffer>>} */
    const files = { ...out };
    if (format === 'peft') {
      const zip = files['adapter.zip'];
      delete files['adapter.zip'];
      return { files, blob: new Blob([zip], { type: 'application/zip' }), fileName: 'adapter.zip' };
    }
    return { files, blob: new Blob([files['adapter.gguf']], { type: 'application/octet-stream' }), fileName: 'adapter.gguf' };
  }

  dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    const trainers = [...this.#trainers];
    for (const t of trainers) t.halt();
    const tuned = this.#tuned;
    const model = this.#model;
    this.#trainers.clear();
    this.#tuned = null;
    this.#model = null;
    this.#info = null;
    // After everything queued so far (a running step finishes first).
    for (const t of trainers) t.release();
    if (tuned && 'adapter' in tuned) this.release(tuned.adapter);
    this.release(model);
  }
}

const FINAL = new Set(['done', 'failed']);

class TrainerImpl {
  /** @type {any} */ #wt;
  /** @type {MainEngine} */ #engine;
  /** @type {TrainerState} */ #state = 'idle';
  #pauseRequested = false;
  #stopRequested = false;
  /** @type {(() => void) | null} */ #wake = null;
  #stepsDone;
  #totalSteps;
  #isDone;
  #report;
  #datasetName;
  /** @type {Broadcast<StepMetrics>} */ #metrics = new Broadcast();
  /** @type {Set<(update: any) => void>} */ #observers = new Set();
  // Timing over all train() calls of this trainer (pauses excluded).
  #elapsedMs = 0;
  #tokens = 0;
  #stepsTimed = 0;
  /** @type {number | undefined} */ #finalLoss;
  /** @type {number | undefined} */ #evalLoss;
  /** @type {number | undefined} */ #bestEvalLoss;
  #stoppedEarly = false;
  #disposed = false;

  constructor(engine, wt, datasetName) {
    this.#engine = engine;
    this.#wt = wt;
    this.#datasetName = datasetName;
    this.#stepsDone = wt.stepsDone;
    this.#totalSteps = wt.totalSteps;
    this.#isDone = wt.isDone;
    const r = wt.report();
    this.#report = {
      train: mapReport(r.train),
      eval: r.eval ? mapReport(r.eval) : null,
      trainExamples: r.trainExamples,
      evalExamples: r.evalExamples,
    };
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

  #checkAlive() {
    if (this.#disposed) throw new WebtuneError('INVALID_STATE', 'this trainer was disposed (or replaced by a newer one)');
  }

  /** The wasm trainer, if not freed. */
  #live() {
    if (!this.#wt) throw new WebtuneError('INVALID_STATE', 'this trainer was disposed (or replaced by a newer one)');
    return this.#wt;
  }

  /** @param {TrainerState} state @param {StepMetrics} [metrics] @param {unknown} [error] */
  #emit(state, metrics, error) {
    this.#state = state;
    if (metrics) this.#metrics.push(metrics);
    if (FINAL.has(state) || state === 'stopped') this.#metrics.close(state === 'failed' ? error : undefined);
    for (const fn of this.#observers) fn({ state, stepsDone: this.#stepsDone, metrics, error });
  }

  [observe](fn) {
    this.#observers.add(fn);
  }

  #summary() {
    return {
      steps: this.#stepsDone,
      finalLoss: this.#finalLoss,
      evalLoss: this.#evalLoss,
      bestEvalLoss: this.#bestEvalLoss,
      stoppedEarly: this.#stoppedEarly,
      state: /** @type {'done' | 'stopped'} */ (this.#state),
    };
  }

  async #checkpointTo(onCheckpoint) {
    const bytes = await this.#engine.exclusive(() => this.#live().checkpoint());
    await onCheckpoint(bytes, this.#stepsDone);
  }

  async train(options = {}) {
    this.#checkAlive();
    const { onProgress, checkpointEvery, onCheckpoint } = options;
    if (this.#state === 'running' || this.#state === 'paused') {
      throw new WebtuneError('INVALID_STATE', 'this trainer is already training: use pause(), resume() or stop()');
    }
    if (this.#state === 'failed') throw new WebtuneError('INVALID_STATE', 'training failed earlier: create a new trainer (from a checkpoint to continue)');
    if (this.#state === 'done' || this.#isDone) {
      if (this.#state !== 'done') this.#emit('done');
      return this.#summary();
    }
    if (checkpointEvery !== undefined && !(Number.isInteger(checkpointEvery) && checkpointEvery > 0)) {
      throw new WebtuneError('INVALID_OPTIONS', `checkpointEvery must be a positive whole number of steps, not ${checkpointEvery}`);
    }
    this.#stopRequested = false;
    this.#emit('running');
    try {
      for (;;) {
        if (this.#stopRequested || this.#disposed) {
          this.#emit('stopped');
          break;
        }
        if (this.#pauseRequested) {
          this.#emit('paused');
          if (onCheckpoint) await this.#checkpointTo(onCheckpoint);
          if (this.#pauseRequested && !this.#stopRequested && !this.#disposed) {
            await new Promise((resolve) => (this.#wake = /** @type {() => void} */ (resolve)));
          }
          this.#wake = null;
          if (!this.#stopRequested && !this.#disposed) this.#emit('running');
          continue;
        }
        if (this.#isDone) {
          this.#emit('done');
          break;
        }
        const t0 = now();
        const { raw, stepsDone, isDone, best } = await this.#engine.exclusive(async () => {
          const wt = this.#live();
          const raw = await wt.step();
          return { raw, stepsDone: wt.stepsDone, isDone: wt.isDone, best: wt.bestEvalLoss };
        });
        const dt = now() - t0;
        this.#stepsDone = stepsDone;
        this.#isDone = isDone;
        this.#bestEvalLoss = best ?? undefined;
        this.#elapsedMs += dt;
        this.#tokens += raw.tokens;
        this.#stepsTimed++;
        this.#finalLoss = raw.loss;
        if (raw.eval_loss !== undefined && raw.eval_loss !== null) this.#evalLoss = raw.eval_loss;
        if (raw.early_stopped) this.#stoppedEarly = true;
        const perStep = this.#elapsedMs / this.#stepsTimed;
        /** @type {StepMetrics} */
        const metrics = {
          step: raw.step,
          totalSteps: this.#totalSteps,
          epoch: raw.epoch,
          loss: raw.loss,
          lr: raw.lr,
          gradNorm: raw.grad_norm,
          tokens: raw.tokens,
          supervisedTokens: raw.supervised_tokens,
          ...(raw.eval_loss != null ? { evalLoss: raw.eval_loss } : {}),
          ...(raw.early_stopped ? { earlyStopped: true } : {}),
          tokensPerSecond: this.#elapsedMs > 0 ? (this.#tokens * 1000) / this.#elapsedMs : 0,
          elapsedMs: this.#elapsedMs,
          etaMs: this.#isDone ? 0 : perStep * Math.max(0, this.#totalSteps - this.#stepsDone),
        };
        this.#emit('running', metrics);
        onProgress?.(metrics);
        if (onCheckpoint && checkpointEvery && this.#stepsDone % checkpointEvery === 0) await this.#checkpointTo(onCheckpoint);
      }
    } catch (e) {
      const error = toWebtuneError(e);
      this.#emit('failed', undefined, error);
      throw error;
    }
    return this.#summary();
  }

  metrics() {
    return this.#metrics.iterator(FINAL.has(this.#state));
  }

  pause() {
    if (this.#state === 'running') this.#pauseRequested = true;
  }

  resume() {
    this.#pauseRequested = false;
    this.#wake?.();
  }

  stop() {
    if (this.#state === 'running' || this.#state === 'paused') {
      this.#stopRequested = true;
      this.#pauseRequested = false;
      this.#wake?.();
    }
  }

  async evaluate() {
    this.#checkAlive();
    return this.#engine.exclusive(() => this.#live().evaluate());
  }

  async checkpoint() {
    this.#checkAlive();
    return this.#engine.exclusive(() => this.#live().checkpoint());
  }

  dispose() {
    if (this.#disposed) return;
    this.halt();
    this.#engine.forgetTrainer(this);
    this.release();
  }

  // --- for the engine ------------------------------------------------------------------------

  /** Marks the trainer disposed and lets a running train() end with state "stopped". */
  halt() {
    this.#disposed = true;
    this.#stopRequested = true;
    this.#pauseRequested = false;
    this.#wake?.();
    if (this.#state !== 'running' && this.#state !== 'paused') this.#metrics.close();
  }

  /** Frees the wasm trainer after the queued work (a running step) is done. */
  release() {
    const wt = this.#wt;
    this.#wt = null;
    this.#engine.release(wt);
  }

  /** A WebAdapter snapshot of the current adapter (caller frees it). Call inside `exclusive`. */
  snapshot() {
    if (!this.#wt) throw new WebtuneError('NO_ADAPTER', 'the trainer holding the tuned adapter was disposed');
    return this.#wt.adapter();
  }

  /** The adapter as a standalone WebAdapter before the trainer goes (sync; null if it cannot). */
  takeAdapter() {
    try {
      return this.#wt ? this.#wt.adapter() : null;
    } catch {
      return null; // a step is running: the adapter goes with the trainer
    }
  }

  /** What the exported model card says about the run. */
  card() {
    return { steps: this.#stepsDone, finalLoss: this.#finalLoss, evalLoss: this.#evalLoss, dataset: this.#datasetName };
  }
}
