// Step 4, Train: starts a run (or continues a saved one from its checkpoint), pauses, resumes and
// stops it between steps, shows every step, saves checkpoints, and says what happened when a run
// fails, with one click to go on where that is possible.

import { $, loss, mark, plural, setNote, setPill, button, input } from './format.js';
import { dismissAlert, showAlert, showError } from './alerts.js';
import { dataOptions, evalMode, trainingData } from './data.js';
import { config as settingsConfig, pageOptions, snapshot, validate } from './settings.js';
import { limitProblems, runFacts } from './memory.js';
import { addPoint, examplesText, initTrainView, lossHistory, point, resetView, setHistory, showRunSettings, showStats, summaryText } from './train-view.js';
import { beginRun, continueRun, saveCheckpoint } from './checkpoints.js';
import { showRunError, showStartError } from './train-errors.js';
import * as store from './store.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').Trainer} Trainer */
/** @typedef {import('../webtune/index.js').TrainSummary} TrainSummary */
/** @typedef {import('../webtune/index.js').StepMetrics} StepMetrics */
/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('./store.js').RunRecord} RunRecord */

/** @type {Trainer | null} */
let trainer = null;
let stopping = false;
/** The options of the settings form and the data step. @returns {TrainingConfig} */
function trainingConfig() {
  return { ...settingsConfig(), ...dataOptions() };
}

function checkInputs() {
  const problems = validate();
  const data = trainingData();
  if (!data.train) problems.push('Choose training data in step 2');
  if (data.mode === 'file' && !data.eval) problems.push('Choose an evaluation file in step 2, or another evaluation option');
  if (problems.length) {
    showAlert({ id: 'error-settings', kind: 'error', title: 'Training cannot start yet.', body: `${problems.join('. ')}.` });
    return false;
  }
  dismissAlert('error-settings');
  return true;
}

/** Warns (and starts anyway) when the core's estimate of the run is over the GPU's limits. @param {TrainingConfig} config */
async function warnIfTooLarge(config) {
  const facts = await runFacts(config);
  const gpu = session.engine?.gpu;
  const problems = facts && gpu ? limitProblems(facts.memory.largestBuffer, gpu) : [];
  if (problems.length) {
    showAlert({ id: 'memory', kind: 'warn', title: 'This run may not fit the GPU.', body: `${problems.join('; ')}. Training starts anyway; if it fails, your checkpoint is kept.` });
  } else {
    dismissAlert('memory');
  }
}

/**
 * Starts a run, or with `resume` (a saved record) continues one: the same model, data and config,
 * and the checkpoint's adapter and optimizer state. `train: false` only restores the adapter.
 * The caller has restored the model and data of `resume`.
 * @param {{ resume?: RunRecord, train?: boolean }} [options]
 */
export async function startTraining({ resume, train = true } = {}) {
  if (!resume && !checkInputs()) return;
  for (const id of ['error-train', 'error-checkpoint', 'early-stop', 'resume']) dismissAlert(id);
  const engine = session.requireEngine();
  const model = session.model;
  const data = trainingData();
  if (!model || !data.train) return;
  const config = resume ? resume.config : trainingConfig();
  const page = resume ? resume.page : { ...pageOptions(), evalMode: evalMode() };
  const continueImported = resume ? !!resume.adapterKey : !!(session.imported && input('continue-adapter').checked);
  const adapterKey = resume ? resume.adapterKey : continueImported ? session.imported?.key ?? null : null;
  const adapter = !continueImported ? undefined : resume && adapterKey ? await store.getBlob(adapterKey).catch(() => undefined) : session.imported?.files;

  session.update({ busy: 'start' });
  setNote('train-note', resume ? `Restoring the checkpoint of step ${resume.step}…` : 'Preparing the data and the adapter…');
  mark('trainState', 'starting');
  if (!resume) await warnIfTooLarge(config);
  try {
    trainer = await engine.createTrainer({
      data: { name: data.train.name, data: data.train.data },
      evalData: data.eval ? { name: data.eval.name, data: data.eval.data } : undefined,
      config,
      adapter: /** @type {import('../webtune/index.js').AdapterFiles | undefined} */ (adapter),
      checkpoint: resume?.checkpoint,
    });
  } catch (error) {
    trainer = null;
    session.update({ busy: '' });
    setNote('train-note', '');
    mark('trainState', 'failed');
    showStartError(error, config);
    return;
  }
  const t = trainer;
  session.update({ tuned: { method: config.method ?? 'lora', init: config.init ?? 'default', source: resume ? 'restore' : 'train', formats: t.report.adapter.exportFormats } });
  const base = {
    id: resume?.id ?? `${Date.now()}`,
    model: model.identity,
    modelName: model.label,
    data: {
      train: { key: data.train.key, name: data.train.name },
      eval: data.eval ? { key: data.eval.key, name: data.eval.name } : null,
    },
    adapterKey,
    config,
    page,
    form: resume?.form ?? snapshot(),
    startedAt: resume?.startedAt ?? Date.now(),
  };
  showRunSettings(config);
  if (resume) {
    setHistory((resume.metrics ?? []).filter((m) => m.step <= resume.step));
    continueRun(base, resume.step);
    const last = lossHistory().at(-1);
    if (last) showStats(last, t.totalSteps);
  } else {
    resetView();
    /** @type {Array<[string, unknown]>} */
    const files = [[data.train.key, { name: data.train.name, data: data.train.data }]];
    if (data.eval) files.push([data.eval.key, { name: data.eval.name, data: data.eval.data }]);
    if (adapterKey && session.imported) files.push([adapterKey, session.imported.files]);
    await beginRun(base, files);
  }

  const rep = t.report;
  const examples = examplesText(rep);

  if (!train && resume) {
    session.update({ busy: '' });
    setNote('train-note', `Adapter restored from step ${resume.step} of ${t.totalSteps}: try it in step 5 or export it in step 6.`, 'ok');
    return;
  }

  // The starting point of the eval curve: the fresh adapter's eval loss at step 0.
  if (!resume && rep.evalExamples > 0 && !continueImported) {
    setNote('train-note', `${examples}. Measuring the starting eval loss…`);
    try {
      const evalLoss = await t.evaluate();
      addPoint({ step: 0, evalLoss });
      $('stat-eval').textContent = loss(evalLoss);
    } catch (error) {
      console.warn('[webtune page] initial evaluation failed:', error);
    }
  }

  stopping = false;
  session.update({ busy: '', run: 'running' });
  runNote = `Training on ${examples}: ${plural(t.totalSteps, 'step')}.`;
  setNote('train-note', runNote);
  $('train-progress-text').textContent = `Step ${t.stepsDone} of ${t.totalSteps}`;
  const poll = setInterval(pollTrainer, 250);
  try {
    const summary = await t.train({
      checkpointEvery: page.checkpointEvery,
      onProgress: onStep,
      onCheckpoint: (bytes, step) => saveCheckpoint(bytes, step, t.totalSteps, session.run === 'running' ? 'running' : 'paused'),
    });
    await finishRun(t, summary);
  } catch (error) {
    mark('trainState', 'failed');
    $('train-eta').textContent = '';
    showRunError(error, t.stepsDone);
  } finally {
    clearInterval(poll);
    session.update({ run: 'idle' });
  }
}

/** @param {StepMetrics} m */
function onStep(m) {
  addPoint(point(m));
  showStats(point(m), trainer?.totalSteps ?? m.totalSteps);
  if (m.earlyStopped) {
    setNote('train-note', `Stopped early at step ${m.step}: the eval loss stopped improving. The best adapter is kept.`, 'warn');
    showAlert({ id: 'early-stop', kind: 'info', title: `Early stopping at step ${m.step}`, body: 'The eval loss did not improve for the set number of evaluations, so training ended; the adapter with the best eval loss is kept.' });
  }
  mark('step', String(m.step));
}

/** What the note says while the run trains. */
let runNote = '';
/** The note shows the warm-up. */
let warmingShown = false;

/** The worker's trainer reports its state by messages: a pause shows once it happened. */
function pollTrainer() {
  if (!trainer) return;
  if (trainer.state === 'warming' && !warmingShown) {
    warmingShown = true;
    setNote('train-note', 'Preparing GPU kernels for the batch shapes of this run, so that no step waits for them…');
  } else if (trainer.state !== 'warming' && warmingShown) {
    warmingShown = false;
    setNote('train-note', runNote);
  }
  if (trainer.state === 'paused' && session.run === 'pausing') {
    setNote('train-note', `Paused after step ${trainer.stepsDone}. Resume, or try the adapter so far in step 5.`, 'warn');
    $('train-eta').textContent = 'paused';
    session.update({ run: 'paused' });
  } else {
    render();
  }
}

/** @param {Trainer} t @param {TrainSummary} summary */
async function finishRun(t, summary) {
  session.update({ run: 'finishing' });
  setNote('train-note', `${summaryText(summary)} Try it in step 5, download it in step 6.`, 'ok');
  $('train-eta').textContent = '';
  // Keep the finished adapter in browser storage too, so that a reload can restore it.
  try {
    await saveCheckpoint(await t.checkpoint(), t.stepsDone, t.totalSteps, summary.state);
  } catch (error) {
    showError(error, 'checkpoint');
  }
}

function render() {
  const run = session.run;
  const state = trainer?.state ?? 'idle';
  const active = run !== 'idle';
  button('train-start').disabled = !(session.idle && session.model && trainingData().train);
  button('train-pause').disabled = run !== 'running';
  button('train-resume').disabled = run !== 'paused';
  button('train-stop').disabled = !active || run === 'finishing' || stopping;
  $('continue-adapter-row').hidden = !session.imported;
  let pill = 'idle';
  let kind = '';
  if (active) {
    pill = run === 'finishing' ? 'saving…' : run === 'pausing' ? 'pausing…' : state === 'warming' ? 'preparing…' : run;
    kind = run === 'paused' ? 'warn' : 'busy';
  } else if (trainer) {
    pill = state === 'idle' ? 'ready' : state;
    kind = state === 'done' ? 'ok' : state === 'failed' ? 'bad' : '';
  }
  setPill('train-pill', pill, kind);
  // "done"/"stopped" appear once the final save is over and the page is ready for the next action.
  const final = ['done', 'stopped', 'failed'].includes(state);
  if (session.busy !== 'start') mark('trainState', active ? (final || run === 'finishing' ? 'finishing' : state) : trainer ? state : 'idle');
}

export function initTrainStep() {
  initTrainView();
  button('train-start').addEventListener('click', () => startTraining());
  button('train-pause').addEventListener('click', () => {
    trainer?.pause();
    setNote('train-note', 'Pausing after this step…');
    session.update({ run: 'pausing' });
  });
  button('train-resume').addEventListener('click', () => {
    trainer?.resume();
    setNote('train-note', 'Training resumed.');
    session.update({ run: 'running' });
  });
  button('train-stop').addEventListener('click', () => {
    trainer?.stop();
    stopping = true;
    setNote('train-note', 'Stopping after this step…');
    render();
  });
  /** @type {unknown} */
  let modelShown = null;
  session.onChange(() => {
    // A new model (or engine) ends the old trainer.
    if (session.model !== modelShown) {
      modelShown = session.model;
      if (session.run === 'idle') trainer = null;
    }
    render();
  });
}
