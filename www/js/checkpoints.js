// The current run in browser storage: what it trains on, written once when it starts; a checkpoint
// every `checkpointEvery` steps and at every pause; the adapter at the end. Saves run one after
// another. A failed save is said in plain words and training goes on: the previous checkpoint stays
// in storage (store.js writes a record in one transaction).

import { bytes, mark, setNote } from './format.js';
import { dismissAlert, showError } from './alerts.js';
import { lossHistory } from './train-view.js';
import * as store from './store.js';

/** @typedef {import('./store.js').RunRecord} RunRecord */
/** What a run's records share: all but the checkpoint and what changes with it. @typedef {Omit<RunRecord, 'step' | 'totalSteps' | 'state' | 'checkpoint' | 'metrics' | 'savedAt'>} RunBase */

/** @type {RunBase | null} */
let run = null;
/** The step of the checkpoint in storage (0: none). */
let saved = 0;
/** @type {Promise<void>} */
let queue = Promise.resolve();

/** The step of the last checkpoint in storage, 0 if none. */
export function savedStep() {
  return saved;
}

/**
 * A new run: the previous saved run goes, the run's files are stored for a resume after a reload.
 * A failure is shown; training goes on without a resumable run.
 * @param {RunBase} base @param {Array<[string, unknown]>} files
 */
export async function beginRun(base, files) {
  run = base;
  saved = 0;
  try {
    await store.clearRun();
    await store.putBlobs(files);
    store.persist();
  } catch (error) {
    showError(error, 'checkpoint');
  }
}

/** A resumed run: its files are in storage already; its checkpoint is that of `step`. @param {RunBase} base @param {number} step */
export function continueRun(base, step) {
  run = base;
  saved = step;
}

/**
 * Queues a checkpoint's save; resolves once it is saved or its failure shown (never rejects).
 * @param {Uint8Array} checkpoint @param {number} step @param {number} totalSteps @param {RunRecord['state']} state
 */
export function saveCheckpoint(checkpoint, step, totalSteps, state) {
  const base = run;
  if (!base) return queue;
  /** @type {RunRecord} */
  const record = { ...base, step, totalSteps, state, checkpoint, metrics: lossHistory(step), savedAt: Date.now() };
  const final = state === 'done' || state === 'stopped';
  queue = queue.then(async () => {
    try {
      await store.saveRun(record);
      saved = step;
      dismissAlert('error-checkpoint');
      setNote('checkpoint-status', final
        ? `The adapter of step ${step} is saved in browser storage.`
        : `Checkpoint of step ${step} saved in browser storage (${bytes(checkpoint.byteLength)}) at ${new Date().toLocaleTimeString()}.`, 'muted');
      mark('checkpointStep', String(step));
    } catch (error) {
      showError(error, 'checkpoint');
      setNote('checkpoint-status', `The ${final ? 'adapter' : 'checkpoint'} of step ${step} could not be saved${saved ? `; the checkpoint of step ${saved} is kept` : ''}.${final ? '' : ' Training continues.'}`, 'warn');
    }
  });
  return queue;
}
