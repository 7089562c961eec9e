// What step 4 shows of a run: the statistics, the progress bar, the loss chart and the same
// history as a table (for screen readers, and to read the figures), and the settings of the run.

import { $, h, duration, loss, mark, plural, setNote } from './format.js';
import { LossChart } from './chart.js';

/** @typedef {import('../webtune/index.js').StepMetrics} StepMetrics */
/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('../webtune/index.js').TrainReport} TrainReport */
/** @typedef {import('../webtune/index.js').TrainSummary} TrainSummary */
/** @typedef {import('./store.js').MetricPoint} MetricPoint */

/** The run's loss history, one point per step (step 0: the starting eval loss). @type {MetricPoint[]} */
let history = [];
/** @type {LossChart | undefined} */
let chart;

export function initTrainView() {
  chart = new LossChart($('loss-chart'), $('chart-empty'));
}

/** The history so far (saved with each checkpoint). @param {number} [upTo] only the points up to this step */
export function lossHistory(upTo = Infinity) {
  return history.filter((m) => m.step <= upTo);
}

/** @param {MetricPoint} m */
function tableRow(m) {
  return h('tr', {}, h('th', { scope: 'row', text: String(m.step) }), h('td', { text: loss(m.loss) }), h('td', { text: loss(m.evalLoss) }));
}

/** Adds a point (merging into the last one of the same step). @param {MetricPoint} m */
export function addPoint(m) {
  const last = history[history.length - 1];
  const rows = $('loss-rows');
  if (last && last.step === m.step) {
    Object.assign(last, m);
    rows.lastElementChild?.replaceWith(tableRow(last));
  } else {
    history.push({ ...m });
    rows.append(tableRow(m));
  }
  chart?.add(m);
}

/** Replaces the history (a resumed run). @param {MetricPoint[]} points */
export function setHistory(points) {
  history = points.map((m) => ({ ...m }));
  $('loss-rows').replaceChildren(...history.map(tableRow));
  chart?.setHistory(history);
}

const KEPT = /** @type {const} */ (['epoch', 'loss', 'evalLoss', 'lr', 'gradNorm', 'tokensPerSecond', 'elapsedMs', 'etaMs']);

/** The figures of a step worth keeping in the history. @param {StepMetrics} m @returns {MetricPoint} */
export function point(m) {
  /** @type {MetricPoint} */
  const out = { step: m.step };
  for (const k of KEPT) {
    const v = m[k];
    if (v !== undefined && Number.isFinite(v)) out[k] = v;
  }
  if (m.earlyStopped) out.earlyStopped = true;
  return out;
}

/** A new run: everything back to "–". */
export function resetView() {
  setHistory([]);
  for (const id of ['stat-step', 'stat-epoch', 'stat-loss', 'stat-eval', 'stat-tps', 'stat-elapsed']) $(id).textContent = '–';
  $('train-progress', HTMLProgressElement).value = 0;
  $('train-eta').textContent = '';
  setNote('train-note', '');
  setNote('checkpoint-status', '');
  mark('step', '0');
  mark('checkpointStep', undefined);
}

/**
 * The statistics after a step (or a saved history's last step).
 * @param {MetricPoint} m @param {number} total
 */
export function showStats(m, total) {
  $('stat-step').textContent = `${m.step} / ${total}`;
  if (m.epoch !== undefined && Number.isFinite(m.epoch)) $('stat-epoch').textContent = Number.isInteger(m.epoch) ? String(m.epoch) : m.epoch.toFixed(2);
  if (m.loss !== undefined && Number.isFinite(m.loss)) $('stat-loss').textContent = loss(m.loss);
  const lastEval = [...history].reverse().find((x) => x.evalLoss !== undefined && Number.isFinite(x.evalLoss));
  if (lastEval) $('stat-eval').textContent = loss(lastEval.evalLoss);
  const tps = m.tokensPerSecond;
  if (tps !== undefined && Number.isFinite(tps)) $('stat-tps').textContent = tps >= 100 ? Math.round(tps).toLocaleString('en-US') : tps.toFixed(1);
  if (m.elapsedMs !== undefined && Number.isFinite(m.elapsedMs)) $('stat-elapsed').textContent = duration(m.elapsedMs);
  $('train-progress', HTMLProgressElement).value = total ? m.step / total : 0;
  $('train-progress-text').textContent = `Step ${m.step} of ${total}`;
  $('train-eta').textContent = m.step >= total ? '' : m.etaMs !== undefined && Number.isFinite(m.etaMs) ? `about ${duration(m.etaMs)} left` : '';
}

/** The training options of the run as JSON, as `createTrainer({config})` takes them. @param {TrainingConfig} config */
export function showRunSettings(config) {
  $('run-settings-json').textContent = JSON.stringify(config, null, 2);
  $('run-settings').hidden = false;
}

/** What a run trains on: "64 training examples, 16 evaluation examples (2 bad rows skipped: lines 4, 9)". @param {TrainReport} rep */
export function examplesText(rep) {
  const bad = rep.train.badRows;
  const lines = `line${bad.length > 1 ? 's' : ''} ${bad.slice(0, 10).map((b) => b.line).join(', ')}${bad.length > 10 ? ', …' : ''}`;
  return `${plural(rep.trainExamples, 'training example')}${rep.evalExamples ? `, ${plural(rep.evalExamples, 'evaluation example')}` : ', no evaluation'}` +
    (bad.length ? ` (${plural(bad.length, 'bad row')} skipped: ${lines})` : '');
}

/** How a run ended: "Done after 6 steps, train loss 6.0749, eval loss 5.9935." @param {TrainSummary} s */
export function summaryText(s) {
  const parts = [`${s.state === 'done' ? 'Done' : 'Stopped'} after ${plural(s.steps, 'step')}`];
  if (s.finalLoss !== undefined) parts.push(`train loss ${loss(s.finalLoss)}`);
  if (s.evalLoss !== undefined) parts.push(`eval loss ${loss(s.evalLoss)}`);
  if (s.bestEvalLoss !== undefined && s.stoppedEarly) parts.push(`best eval loss ${loss(s.bestEvalLoss)}`);
  return `${parts.join(', ')}${s.stoppedEarly ? ' (stopped early; the best adapter is kept)' : ''}.`;
}
