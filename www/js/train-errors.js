// Why a run of step 4 could not start or stopped, in plain words, and the one click that goes on
// after a lost GPU device or a dead engine: a new engine, then the saved run from its checkpoint.

import { setNote } from './format.js';
import { showError } from './alerts.js';
import { errorCode } from './errors.js';
import { badRows, trainingData } from './data.js';
import { savedStep } from './checkpoints.js';

/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */

/** Failures after which a new engine (new worker, new GPU device) can go on from the checkpoint. */
const RECOVERABLE = ['DEVICE_LOST', 'WORKER', 'WASM'];

/** Starts the engine again and resumes the saved run (resume.js registers it). @type {() => void} */
let recover = () => {};

/** @param {() => void} fn */
export function setRecovery(fn) {
  recover = fn;
}

/**
 * The button that goes on after a lost device or a dead engine: a new engine, then the saved run
 * from its checkpoint (if there is one).
 * @param {unknown} error
 * @returns {import('./alerts.js').AlertAction[]}
 */
function recoveryActions(error) {
  const code = errorCode(error);
  if (code === undefined || !RECOVERABLE.includes(code)) return [];
  const saved = savedStep() > 0;
  const label = code === 'DEVICE_LOST'
    ? (saved ? 'Resume on a new GPU device' : 'Restart on a new GPU device')
    : (saved ? 'Restart the engine and resume' : 'Restart the engine');
  return [{ label, primary: true, onClick: recover }];
}

/**
 * Why a new trainer failed: a bad row is named from the preview's own list (line and reason), so
 * that the message needs no parsing.
 * @param {unknown} error @param {TrainingConfig} config
 */
export function showStartError(error, config) {
  const bad = badRows()[0];
  const name = trainingData().train?.name ?? 'the file';
  if (errorCode(error) === 'INVALID_DATASET' && !config.skipBadRows && bad) {
    showError(error, 'data', { id: 'train', title: `Line ${bad.line} of ${name} cannot be used: ${bad.reason}` });
  } else {
    showError(error, 'train', { id: 'train', actions: recoveryActions(error) });
  }
}

/**
 * A run stopped by an error at `step`: what happened, whether its checkpoint is kept, and the way on.
 * @param {unknown} error @param {number} step
 */
export function showRunError(error, step) {
  const saved = savedStep();
  showError(error, 'train', { id: 'train', actions: recoveryActions(error) });
  setNote('train-note', `Training stopped at step ${step} because of an error.${saved ? ` The checkpoint of step ${saved} is kept in browser storage.` : ''}`, 'warn');
}
