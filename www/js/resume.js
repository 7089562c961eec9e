// Saved runs: after a reload, the run in browser storage is offered (resume an unfinished one,
// restore a finished one's adapter, or discard it); after a lost GPU device or a crashed engine,
// a new engine starts and the run goes on from its last checkpoint.

import { mark } from './format.js';
import { dismissAlert, showAlert, showError } from './alerts.js';
import { restoreData, useDemoData } from './data.js';
import { restartEngine } from './engine.js';
import { loadDemoModel, loadModelOf, reloadModel, sameModel, selectTab } from './model.js';
import { applySettings } from './settings.js';
import { startTraining } from './train.js';
import { setRecovery } from './train-errors.js';
import * as store from './store.js';
import { session } from './session.js';

/** @typedef {import('./store.js').RunRecord} RunRecord */
/** @typedef {import('./store.js').NamedBytes} NamedBytes */

/** A run waiting for the user to choose its model folder again. @type {RunRecord | null} */
let pending = null;

/** @param {RunRecord} rec */
const isFinished = (rec) => rec.state === 'done' || rec.state === 'stopped';

/** @param {RunRecord} rec */
function describeRun(rec) {
  return `${rec.modelName} on ${rec.data.train.name}, saved ${new Date(rec.savedAt).toLocaleString()}.`;
}

/** Offers the saved run at the top of the page. @param {RunRecord} rec */
export function offerSavedRun(rec) {
  const finished = isFinished(rec);
  mark('savedRun', finished ? 'finished' : 'unfinished');
  showAlert({
    id: 'resume',
    kind: 'info',
    dismissible: false,
    title: finished
      ? `Your last adapter (step ${rec.step} of ${rec.totalSteps}) is saved in this browser.`
      : `Unfinished training found: step ${rec.step} of ${rec.totalSteps} is saved.`,
    body: describeRun(rec) + (rec.model.kind === 'files' ? ' You will be asked to choose the same model folder again.' : ''),
    actions: [
      { label: finished ? 'Restore the adapter' : `Resume from step ${rec.step}`, primary: true, onClick: () => resumeRun(rec) },
      { label: 'Discard', onClick: discardSavedRun },
    ],
  });
}

async function discardSavedRun() {
  pending = null;
  mark('savedRun', 'none');
  try {
    await store.clearRun();
  } catch (error) {
    showError(error, 'checkpoint');
  }
  if (!session.model && (await loadDemoModel())) await useDemoData();
}

/**
 * Continues a saved run: its model (loaded again unless it is the current one), data and settings,
 * then training from its checkpoint (a finished run: its adapter only, or with `train: false`).
 * @param {RunRecord} rec @param {{ train?: boolean }} [options]
 */
async function resumeRun(rec, { train = !isFinished(rec) } = {}) {
  dismissAlert('resume');
  if (!sameModel(rec.model, session.model?.identity)) {
    const loaded = await loadModelOf(rec.model);
    if (loaded === 'ask') {
      pending = rec;
      selectTab('tab-files');
      showAlert({
        id: 'resume', kind: 'info',
        title: `Choose the folder of “${rec.modelName}” to ${isFinished(rec) ? 'restore the adapter' : 'resume'}.`,
        body: 'Files from your disk cannot be re-opened after a reload without asking you. Use “Choose a folder…” in step 1.',
        actions: [{ label: 'Discard the saved run', onClick: discardSavedRun }],
      });
      return;
    }
    if (!loaded) return;
  }
  try {
    const trainData = /** @type {NamedBytes | undefined} */ (await store.getBlob(rec.data.train.key));
    const evalData = rec.data.eval ? /** @type {NamedBytes | undefined} */ (await store.getBlob(rec.data.eval.key)) : null;
    if (!trainData || evalData === undefined) {
      showAlert({ id: 'resume', kind: 'error', title: 'The data of the saved run are no longer in browser storage.', body: 'Choose the same files again and start a new run (the saved checkpoint needs exactly the same data).' });
      return;
    }
    restoreData(trainData, evalData, rec.page.evalMode ?? (evalData ? 'file' : 'none'), rec.config);
    applySettings({ method: 'lora', ...rec.form });
  } catch (error) {
    showError(error, 'checkpoint');
    return;
  }
  await startTraining({ resume: rec, train });
}

/**
 * A new engine after the GPU device was lost (or the engine died): the model again, then the saved
 * run from its last checkpoint (training on when `train`, else its adapter only).
 * @param {{ train?: boolean }} [options]
 */
export async function recoverEngine({ train = true } = {}) {
  for (const id of ['error-train', 'error-generate', 'error-export', 'error-adapter']) dismissAlert(id);
  /** @type {RunRecord | undefined} */
  let rec;
  try {
    rec = await store.loadRun();
  } catch (error) {
    showError(error, 'checkpoint');
  }
  const model = session.model;
  if (!(await restartEngine())) return;
  if (model && !(await reloadModel(model))) return;
  if (rec) await resumeRun(rec, { train: train && !isFinished(rec) });
}

export function initResume() {
  setRecovery(() => recoverEngine());
  /** @type {unknown} */
  let modelShown = null;
  session.onChange(() => {
    const model = session.model;
    if (model === modelShown) return;
    modelShown = model;
    const rec = pending;
    if (!rec || model?.identity.kind !== 'files') return;
    if (sameModel(rec.model, model.identity)) {
      pending = null;
      setTimeout(() => resumeRun(rec)); // once the model step has finished loading
    } else {
      showAlert({ id: 'resume', kind: 'warn', title: 'This is not the model of the saved run.', body: `The saved run used “${rec.modelName}”. Choose that folder to resume it, or start a new run.` });
    }
  });
}
