// A training run on the calling thread: steps the wasm `WebTrainer` through the engine's queue,
// with pause, resume, stop, checkpoints, step metrics and timings (index.d.ts `Trainer`).

import { Broadcast } from './channel.js';
import { WebtuneError, toWebtuneError } from './errors.js';

/** @typedef {import('./index.js').Trainer} Trainer */
/** @typedef {import('./index.js').StepMetrics} StepMetrics */
/** @typedef {import('./index.js').TrainerState} TrainerState */
/** @typedef {import('./index.js').TrainReport} TrainReport */
/** @typedef {import('./index.js').TrainSummary} TrainSummary */
/** @typedef {import('./engine.js').EngineImpl} EngineImpl */
/** @typedef {import('./wasm/webtune.js').WebTrainer} WebTrainer */
/** @typedef {{ state: TrainerState, stepsDone: number, metrics?: StepMetrics, error?: unknown }} TrainerUpdate */

/** Hook for the worker host: `trainer[observe](fn)` calls `fn(update)` on every state change and step. */
export const observe = Symbol('webtune.observe');

/** @type {ReadonlySet<TrainerState>} */
const FINAL = new Set(['done', 'failed']);
/** States of a `train()` call in progress. @type {ReadonlySet<TrainerState>} */
export const ACTIVE = new Set(['warming', 'running', 'paused']);

const now = () => performance.now();

/** @implements {Trainer} */
export class TrainerImpl {
  /** @type {WebTrainer | null} */ #wt;
  /** @type {EngineImpl} */ #engine;
  /** @type {TrainerState} */ #state = 'idle';
  #pauseRequested = false;
  #stopRequested = false;
  /** @type {(() => void) | null} */ #wake = null;
  /** @type {number} */ #stepsDone;
  /** @type {number} */ #totalSteps;
  /** @type {boolean} */ #isDone;
  /** @type {TrainReport} */ #report;
  /** @type {string} */ #datasetName;
  /** @type {Broadcast<StepMetrics>} */ #metrics = new Broadcast();
  /** @type {Set<(update: TrainerUpdate) => void>} */ #observers = new Set();
  // Timing over all train() calls of this trainer (pauses excluded).
  #elapsedMs = 0;
  #tokens = 0;
  #stepsTimed = 0;
  /** @type {number | undefined} */ #finalLoss;
  /** @type {number | undefined} */ #evalLoss;
  /** @type {number | undefined} */ #bestEvalLoss;
  #stoppedEarly = false;
  #disposed = false;
  /** @type {Promise<number> | null} */ #warmed = null;

  /** @param {EngineImpl} engine @param {WebTrainer} wt @param {string} datasetName */
  constructor(engine, wt, datasetName) {
    this.#engine = engine;
    this.#wt = wt;
    this.#datasetName = datasetName;
    this.#stepsDone = wt.stepsDone;
    this.#totalSteps = wt.totalSteps;
    this.#isDone = wt.isDone;
    this.#report = wt.report();
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

  /** @param {(update: TrainerUpdate) => void} fn */
  [observe](fn) {
    this.#observers.add(fn);
  }

  /** @returns {TrainSummary} */
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

  /** @param {(checkpoint: Uint8Array, step: number) => void | Promise<void>} onCheckpoint */
  async #checkpointTo(onCheckpoint) {
    const bytes = await this.#engine.exclusive(() => this.#live().checkpoint());
    await onCheckpoint(bytes, this.#stepsDone);
  }

  /** One optimizer step; returns its metrics. */
  async #step() {
    const t0 = now();
    const { raw, stepsDone, isDone, best } = await this.#engine.exclusive(async () => {
      const wt = this.#live();
      /** @type {Omit<StepMetrics, 'tokensPerSecond' | 'elapsedMs' | 'etaMs'>} */
      const raw = await wt.step();
      return { raw, stepsDone: wt.stepsDone, isDone: wt.isDone, best: wt.bestEvalLoss };
    });
    this.#stepsDone = stepsDone;
    this.#isDone = isDone;
    this.#bestEvalLoss = best ?? undefined;
    this.#elapsedMs += now() - t0;
    this.#tokens += raw.tokens;
    this.#stepsTimed++;
    this.#finalLoss = raw.loss;
    if (raw.evalLoss !== undefined) this.#evalLoss = raw.evalLoss;
    if (raw.earlyStopped) this.#stoppedEarly = true;
    const perStep = this.#elapsedMs / this.#stepsTimed;
    /** @type {StepMetrics} */
    const metrics = {
      ...raw,
      totalSteps: this.#totalSteps,
      tokensPerSecond: this.#elapsedMs > 0 ? (this.#tokens * 1000) / this.#elapsedMs : 0,
      elapsedMs: this.#elapsedMs,
      etaMs: this.#isDone ? 0 : perStep * Math.max(0, this.#totalSteps - this.#stepsDone),
    };
    return metrics;
  }

  /** @type {Trainer['warmUp']} */
  warmUp() {
    this.#checkAlive();
    // Once per trainer: the pipelines stay compiled for the engine's lifetime.
    this.#warmed ??= this.#engine.exclusive(() => this.#live().warmUp());
    return this.#warmed;
  }

  /** @type {Trainer['train']} */
  async train(options = {}) {
    this.#checkAlive();
    const { onProgress, checkpointEvery, onCheckpoint } = options;
    if (ACTIVE.has(this.#state)) {
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
    try {
      if (!this.#warmed) {
        this.#emit('warming');
        await this.warmUp();
      }
      this.#emit('running');
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
        const metrics = await this.#step();
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
    if (this.#state === 'warming' || this.#state === 'running') this.#pauseRequested = true;
  }

  resume() {
    this.#pauseRequested = false;
    this.#wake?.();
  }

  stop() {
    if (ACTIVE.has(this.#state)) {
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
    if (!ACTIVE.has(this.#state)) this.#metrics.close();
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
