// The engine on the calling thread: wraps the wasm-bindgen classes (WebModel, WebAdapter,
// WebTrainer, WebGeneration) into the public API of index.d.ts. Every wasm call goes through one
// queue, so training steps, generated tokens and exports interleave instead of overlapping.

import init, * as wasm from './wasm/webtune.js';
import { Channel, makeGeneration } from './channel.js';
import { WebtuneError, toWebtuneError } from './errors.js';
import { countersDelta, installWebGpuCounters } from './gpu-counters.js';
import { checkTensorsFitGpu, safetensorsTensors } from './limits.js';
import { directorySink, rangeReader, zipSink } from './merged.js';
import { loadModelFiles, readAdapterFiles, readDataset, toBytes } from './sources.js';
import { ACTIVE, TrainerImpl } from './trainer.js';
import { DeviceWatch, adapterName, initWatchingDevice, requireAdapterInfo } from './webgpu.js';

/** @typedef {import('./index.js').Engine} Engine */
/** @typedef {import('./index.js').GpuInfo} GpuInfo */
/** @typedef {import('./index.js').ModelInfo} ModelInfo */
/** @typedef {import('./index.js').GenerationResult} GenerationResult */

/** How long a failed GPU call waits for the device's `lost` promise before it is reported as an
 * ordinary GPU error: the browser settles that promise after the failure, late on a busy machine
 * (250 ms was seen to be too short in a loaded test run), and only failures pay the wait. */
const LOSS_REPORT_WAIT_MS = 3000;

/** @type {Promise<unknown> | undefined} */
let wasmReady;

const EXPORT_FORMATS = ['peft', 'adapterhub', 'gguf', 'merged'];

/**
 * An adapter from `readAdapterFiles`' result (PEFT or AdapterHub files).
 * @param {wasm.WebModel} model
 * @param {{ config: string, weights: Uint8Array, weightsFile: string }} files
 */
function importAdapter(model, { config, weights, weightsFile }) {
  return wasm.WebAdapter.importFiles(model, { 'adapter_config.json': new TextEncoder().encode(config), [weightsFile]: weights });
}

/**
 * Instantiates the wasm module once per thread.
 * @param {string | URL | undefined} wasmUrl
 */
function loadWasm(wasmUrl) {
  const url = wasmUrl ?? new URL('./wasm/webtune_bg.wasm', import.meta.url);
  wasmReady ??= init({ module_or_path: url }).catch((/** @type {any} */ e) => {
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

/**
 * An options object for the wasm side, which rejects unknown keys itself (naming the valid ones).
 * @param {unknown} object @param {string} what
 */
function plainObject(object, what) {
  if (object === undefined || object === null) return undefined;
  if (typeof object !== 'object' || Array.isArray(object)) throw new WebtuneError('INVALID_OPTIONS', `${what} must be an object`);
  return object;
}

/**
 * Creates an engine on this thread (page or worker). Rejects with `NO_WEBGPU` when the browser has
 * no usable WebGPU, `WASM` when the wasm file cannot be loaded.
 * @param {import('./index.js').EngineOptions} [options]
 * @returns {Promise<Engine>}
 */
export async function createEngine(options = {}) {
  const adapterInfo = await requireAdapterInfo();
  await loadWasm(options.wasmUrl);
  let started;
  try {
    started = await initWatchingDevice(() => wasm.init());
  } catch (e) {
    throw toWebtuneError(e);
  }
  /** @type {GpuInfo} */
  const gpu = started.result;
  return new MainEngine({ ...gpu, name: adapterName(gpu.name, adapterInfo) }, wasm.version(), started.watch);
}

/** @implements {Engine} */
class MainEngine {
  /** @type {wasm.WebModel | null} */ #model = null;
  /** @type {ModelInfo | null} */ #info = null;
  /** The loaded model's files again (the merged export reads them). @type {null | (() => Promise<Record<string, Blob | Uint8Array>>)} */
  #baseFiles = null;
  /** The tuned adapter: a trainer's live adapter or a loaded one. @type {null | {trainer: TrainerImpl} | {adapter: wasm.WebAdapter}} */
  #tuned = null;
  /** @type {Set<TrainerImpl>} */ #trainers = new Set();
  /** @type {Promise<unknown>} */ #queue = Promise.resolve();
  #disposed = false;
  #device;

  /** @param {GpuInfo} gpu @param {string} version @param {DeviceWatch} device */
  constructor(gpu, version, device) {
    /** @readonly */ this.gpu = gpu;
    /** @readonly */ this.version = version;
    this.#device = device;
  }

  get model() {
    return this.#info ? { ...this.#info } : null;
  }

  #checkAlive() {
    if (this.#disposed) throw new WebtuneError('ENGINE_DISPOSED', 'this engine was disposed: create a new one with createEngine()');
    this.#device.check();
  }

  /**
   * A failed wasm call as a WebtuneError: `DEVICE_LOST` when the GPU device went away, whatever
   * the wasm side made of that (a failed read-back, a panic).
   * @param {unknown} e
   */
  async #failure(e) {
    const error = toWebtuneError(e);
    if ((error.code === 'GPU' || error.code === 'INTERNAL') && (await this.#device.isLost(LOSS_REPORT_WAIT_MS))) return this.#device.error();
    return error;
  }

  /**
   * Runs `fn` after every earlier queued wasm call has finished.
   * @template T @param {() => T | Promise<T>} fn @returns {Promise<T>}
   */
  exclusive(fn) {
    const run = this.#queue.then(async () => {
      this.#checkAlive();
      try {
        return await fn();
      } catch (e) {
        throw await this.#failure(e);
      }
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Frees wasm objects once everything queued so far is done (also after dispose()).
   * @param {...({ free(): void } | null | undefined)} objects
   */
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

  /** @param {string} action */
  #requireIdle(action) {
    for (const t of this.#trainers) {
      if (ACTIVE.has(t.state)) {
        throw new WebtuneError('INVALID_STATE', `a trainer is still training: stop() it (and await train()) before ${action}`);
      }
    }
  }

  /** @param {null | {trainer: TrainerImpl} | {adapter: wasm.WebAdapter}} tuned */
  #setTuned(tuned) {
    const old = this.#tuned;
    this.#tuned = tuned;
    if (old && 'adapter' in old) this.release(old.adapter);
  }

  /** @type {Engine['loadModel']} */
  async loadModel(source, options = {}) {
    this.#checkAlive();
    this.#requireIdle('loading another model');
    const { onProgress, signal } = options;
    /** @param {string} file @param {Blob | Uint8Array} weights */
    const checkWeights = async (file, weights) => checkTensorsFitGpu(await safetensorsTensors(weights), this.gpu, file);
    const { files, name, base } = await loadModelFiles(source, { onProgress, signal, checkWeights });
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
    this.#baseFiles = base;
    this.#info = { name: options.name ?? name ?? 'model', ...model.info() };
    onProgress?.({ phase: 'load', loaded: 1, total: 1 });
    return { .../** @type {ModelInfo} */ (this.#info) };
  }

  /** @type {Engine['previewDataset']} */
  async previewDataset(data, config, maxRows = 20) {
    const model = this.#requireModel();
    const { name, bytes } = await readDataset(data);
    return this.exclusive(() => model.previewDataset(name, bytes, plainObject(config, 'config'), maxRows));
  }

  /** @type {Engine['runFacts']} */
  async runFacts(config) {
    const model = this.#requireModel();
    return this.exclusive(() => model.runFacts(plainObject(config, 'config')));
  }

  /** @type {Engine['bench']} */
  async bench(options = {}) {
    this.#checkAlive();
    const opts = /** @type {import('./index.js').BenchOptions} */ (plainObject(options, 'options') ?? {});
    const model = opts.shape ? null : this.#requireModel();
    installWebGpuCounters();
    const counters = /** @type {{ snapshot(): Record<string, number> }} */ (/** @type {any} */ (globalThis).webgpuCounters);
    return this.exclusive(async () => {
      const bench = model ? await wasm.WebBench.ofModel(model, opts) : await wasm.WebBench.ofShape(opts);
      try {
        const warmStart = performance.now();
        const shapesWarmed = await bench.warmUp();
        const warmUpMs = Math.round(performance.now() - warmStart);
        /** @type {import('./index.js').BenchStep[]} */
        const steps = [];
        for (let step = 1; step <= (opts.steps ?? 3); step++) {
          const before = counters.snapshot();
          const { loss, dispatches, replayed } = await bench.step();
          const d = countersDelta(before, counters.snapshot());
          steps.push({
            step,
            loss,
            dispatches: d.dispatches,
            coreDispatches: dispatches,
            replayed,
            submits: d.submits,
            bufferCreations: d.bufferCreations,
            bufferWrites: d.bufferWrites,
            bindGroups: d.bindGroups,
            pipelines: d.pipelines,
            hostMs: d.hostMs,
            wallMs: d.wallMs,
          });
        }
        const shares = await bench.shares();
        /** @param {'dispatches' | 'submits' | 'bufferCreations' | 'hostMs' | 'wallMs'} key */
        const median = (key) => {
          const sorted = steps.map((s) => s[key]).sort((a, b) => a - b);
          return sorted[Math.floor(sorted.length / 2)];
        };
        return {
          ...bench.info(),
          shapesWarmed,
          warmUpMs,
          steps,
          median: { dispatches: median('dispatches'), submits: median('submits'), bufferCreations: median('bufferCreations'), hostMs: median('hostMs'), wallMs: median('wallMs') },
          ...shares,
        };
      } finally {
        bench.free();
      }
    });
  }

  /** @type {Engine['modelPresets']} */
  async modelPresets() {
    this.#checkAlive();
    return wasm.modelPresets();
  }

  /** @type {Engine['presetFacts']} */
  async presetFacts(name, config) {
    this.#checkAlive();
    return this.exclusive(() => wasm.presetFacts(String(name), plainObject(config, 'config')));
  }

  /** @type {Engine['createTrainer']} */
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
      const init = adapterFiles ? await importAdapter(model, adapterFiles) : undefined;
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

  /** @internal the trainer is disposed: its adapter stays the tuned one. @param {TrainerImpl} trainer */
  forgetTrainer(trainer) {
    this.#trainers.delete(trainer);
    if (this.#tuned && 'trainer' in this.#tuned && this.#tuned.trainer === trainer) {
      const adapter = trainer.takeAdapter();
      this.#tuned = adapter ? { adapter } : null;
    }
  }

  /** @type {Engine['loadAdapter']} */
  async loadAdapter(files) {
    const model = this.#requireModel();
    this.#requireIdle('loading an adapter');
    const adapterFiles = await readAdapterFiles(files);
    const adapter = await this.exclusive(() => importAdapter(model, adapterFiles));
    this.#setTuned({ adapter });
    return adapter.info();
  }

  /**
   * Runs `fn` with the chosen adapter (inside `exclusive`).
   * @template T
   * @param {'tuned' | 'base' | undefined} which
   * @param {(adapter: wasm.WebAdapter) => T | Promise<T>} fn
   * @returns {Promise<T>}
   */
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

  /** @type {Engine['generate']} */
  generate(prompt, options = {}) {
    const { adapter, chat, signal, ...sampling } = options;
    /** @type {Channel<string>} */
    const chunks = new Channel();
    const result = (async () => {
      /** @type {wasm.WebGeneration | undefined} */
      let generation;
      try {
        const model = this.#requireModel();
        if (signal?.aborted) return { text: '', finishReason: /** @type {const} */ ('aborted') };
        const started = await this.exclusive(() =>
          this.#withAdapter(adapter, (a) => model.generate(chat ? model.chatPrompt(String(prompt)) : String(prompt), a, plainObject(sampling, 'generate options'))),
        );
        generation = started;
        /** @type {GenerationResult['finishReason']} */
        let finishReason;
        for (;;) {
          if (signal?.aborted) {
            finishReason = 'aborted';
            break;
          }
          const token = await this.exclusive(() => started.next());
          if (token === null) {
            finishReason = started.finishReason;
            break;
          }
          if (token.text) chunks.push(token.text);
        }
        return { text: started.text(), finishReason };
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

  /** @type {Engine['evaluate']} */
  async evaluate(data, options = {}) {
    this.#requireModel();
    const { name, bytes } = await readDataset(data);
    const config = plainObject(options.config, 'config');
    const loss = await this.exclusive(() => this.#withAdapter(options.adapter, (a) => a.evaluate(name, bytes, config)));
    return { loss, perplexity: Math.exp(loss) };
  }

  /** @type {Engine['exportAdapter']} */
  async exportAdapter(options) {
    this.#requireModel();
    const format = options?.format;
    if (!EXPORT_FORMATS.includes(format)) {
      throw new WebtuneError('INVALID_OPTIONS', `exportAdapter needs {format}: one of ${EXPORT_FORMATS.map((f) => `"${f}"`).join(', ')}, not ${JSON.stringify(format)}`);
    }
    if (!this.#tuned) throw new WebtuneError('NO_ADAPTER', 'there is no tuned adapter to export: train one (createTrainer, train) or loadAdapter() first');
    if (format === 'merged') return this.#exportMerged(options.directory);
    const card = 'trainer' in this.#tuned ? this.#tuned.trainer.card() : undefined;
    const baseModel = options.baseModel ?? this.#info?.name ?? 'model';
    const out = await this.exclusive(() => this.#withAdapter('tuned', (a) => a.export(format, baseModel, options.pissaAsLora ?? true, card)));
    /** @type {Record<string, Uint8Array<ArrayBuffer>>} */
    const files = { ...out };
    if (format === 'peft' || format === 'adapterhub') {
      const zip = files['adapter.zip'];
      delete files['adapter.zip'];
      return { files, blob: new Blob([zip], { type: 'application/zip' }), fileName: 'adapter.zip' };
    }
    return { files, blob: new Blob([files['adapter.gguf']], { type: 'application/octet-stream' }), fileName: 'adapter.gguf' };
  }

  /**
   * The tuned adapter folded into the base model, streamed from the wasm side into `directory`
   * (File System Access API) or a zip Blob assembled from the pieces.
   * @param {FileSystemDirectoryHandle | undefined} directory
   * @returns {Promise<import('./index.js').ExportedAdapter>}
   */
  async #exportMerged(directory) {
    this.#requireModel();
    const base = this.#baseFiles;
    if (!base) throw new WebtuneError('NO_MODEL', 'the model\'s files are not available for merging: load the model again');
    const { sizes, readRange } = await rangeReader(await base());
    const sink = directory ? directorySink(directory) : zipSink();
    await this.exclusive(() =>
      this.#withAdapter('tuned', async (adapter) => {
        const merged = adapter.merged(sizes, readRange);
        try {
          for (let chunk = await merged.next(); chunk; chunk = await merged.next()) await sink.write(chunk);
        } catch (e) {
          if ('abort' in sink) await sink.abort();
          throw e;
        } finally {
          merged.free();
        }
      }),
    );
    const name = `${(this.#info?.name ?? 'model').split('/').pop()}-merged`;
    if ('written' in sink) return { files: {}, blob: new Blob([]), fileName: name, written: sink.written };
    return { files: {}, blob: sink.finish(), fileName: `${name}.zip` };
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
    this.#baseFiles = null;
    this.#info = null;
    // After everything queued so far (a running step finishes first).
    for (const t of trainers) t.release();
    if (tuned && 'adapter' in tuned) this.release(tuned.adapter);
    this.release(model);
  }
}

/** @typedef {MainEngine} EngineImpl the engine a trainer runs on */
