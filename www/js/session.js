// What the steps of the page share, and nothing else: the engine, the loaded model, what the
// engine is busy with, the training run's phase and the adapter that "tuned" means. Each step keeps
// its own details (files, form values, the trainer) in its own module. A step changes the session
// with `update()`, and every step re-renders its controls on the `change` event.

/** @typedef {import('../webtune/index.js').Engine} Engine */
/** @typedef {import('../webtune/index.js').ModelInfo} ModelInfo */
/** @typedef {import('../webtune/index.js').AdapterFiles} AdapterFiles */

/**
 * How to load a model again (resume after a reload, or on a new GPU device). Files from the
 * user's disk cannot be re-opened after a reload: `files` is only a description of them then.
 * @typedef {{ kind: 'demo' }
 *   | { kind: 'hub', id: string, revision: string, baseUrl: string }
 *   | { kind: 'url', url: string }
 *   | { kind: 'files', name: string, parameters: number, vocabSize: number, hiddenSize: number, numLayers: number }} ModelIdentity
 */
/** @typedef {{ info: ModelInfo, identity: ModelIdentity, label: string, fromCache: boolean }} LoadedModel */
/** `formats`: what the adapter exports as (the core's `AdapterInfo.exportFormats`).
 * @typedef {{ method: string, init: string, source: 'train' | 'import' | 'restore', formats?: import('../webtune/index.js').ExportFormat[] }} TunedAdapter */
/** @typedef {{ files: Record<string, Uint8Array>, key: string, peftType: string, trainableParameters: number }} ImportedAdapter */
/**
 * What the engine is doing for the page outside training.
 * @typedef {'' | 'model' | 'preview' | 'generate' | 'export' | 'adapter' | 'start' | 'restart' | 'bench'} Busy
 */
/**
 * The training run: none, steps running, a pause asked for, paused, or the final save after the
 * last step.
 * @typedef {'idle' | 'running' | 'pausing' | 'paused' | 'finishing'} RunPhase
 */

/**
 * @typedef {object} SessionState
 * @property {Engine | null} engine
 * @property {LoadedModel | null} model
 * @property {Busy} busy
 * @property {RunPhase} run
 * @property {TunedAdapter | null} tuned
 * @property {ImportedAdapter | null} imported
 */

class Session extends EventTarget {
  /** @type {SessionState} */
  #state = { engine: null, model: null, busy: '', run: 'idle', tuned: null, imported: null };

  get engine() {
    return this.#state.engine;
  }
  get model() {
    return this.#state.model;
  }
  get busy() {
    return this.#state.busy;
  }
  get run() {
    return this.#state.run;
  }
  get tuned() {
    return this.#state.tuned;
  }
  get imported() {
    return this.#state.imported;
  }

  /** The engine, which the steps only use once it has started. */
  requireEngine() {
    if (!this.#state.engine) throw new Error('the engine has not started');
    return this.#state.engine;
  }

  /** Whether the engine can take a new task from the page: started, not busy, not training. */
  get idle() {
    return !!this.#state.engine && !this.#state.busy && this.#state.run === 'idle';
  }

  /** Whether generation and export may use the GPU now: idle, or the run is paused. */
  get canUseAdapter() {
    return !!this.#state.engine && !!this.#state.model && !this.#state.busy && (this.#state.run === 'idle' || this.#state.run === 'paused');
  }

  /** @param {Partial<SessionState>} patch */
  update(patch) {
    Object.assign(this.#state, patch);
    this.dispatchEvent(new Event('change'));
  }

  /** Tells the steps that something they show may have changed (e.g. a data file was chosen). */
  changed() {
    this.dispatchEvent(new Event('change'));
  }

  /** @param {() => void} render */
  onChange(render) {
    this.addEventListener('change', render);
  }
}

export const session = new Session();
