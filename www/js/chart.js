// The live loss chart: train loss per step and eval loss at its evaluations, drawn with uPlot
// (vendored under www/vendor/uplot, MIT).

import uPlot from '../vendor/uplot/uPlot.esm.js';

/** A point of the loss history. @typedef {{ step: number, loss?: number, evalLoss?: number }} LossPoint */

/** @param {string} name @param {string} fallback */
function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** @param {number | undefined} x */
const finite = (x) => (x !== undefined && Number.isFinite(x) ? x : null);

export class LossChart {
  /** @type {number[]} */ steps = [];
  /** @type {Array<number | null>} */ train = [];
  /** @type {Array<number | null>} */ eval = [];
  /** @type {uPlot | undefined} */ plot;
  pending = false;

  /** @param {HTMLElement} container @param {HTMLElement} emptyNote */
  constructor(container, emptyNote) {
    this.container = container;
    this.emptyNote = emptyNote;
    new ResizeObserver(() => this.resize()).observe(container);
  }

  width() {
    return Math.max(240, Math.floor(this.container.clientWidth));
  }

  create() {
    const axisStroke = cssVar('--muted', '#5a6374');
    const grid = cssVar('--border', '#e1e5ee');
    const trainColor = cssVar('--series-train', '#4338ca');
    const evalColor = cssVar('--series-eval', '#d97706');
    /** @param {uPlot} u @param {number | null} v */
    const fmt = (u, v) => (v == null ? '–' : v.toFixed(4));
    this.plot = new uPlot({
      width: this.width(),
      height: 280,
      scales: { x: { time: false } },
      cursor: { drag: { x: false, y: false } },
      axes: [
        { stroke: axisStroke, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: 'step', labelSize: 20, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] },
        { stroke: axisStroke, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: 'loss', labelSize: 20, size: 56, values: (u, vals) => vals.map((v) => v.toFixed(2)) },
      ],
      series: [
        { label: 'step', value: (u, v) => (v == null ? '–' : String(v)) },
        { label: 'train loss', stroke: trainColor, width: 2, value: fmt, points: { show: false } },
        { label: 'eval loss', stroke: evalColor, width: 2, dash: [6, 4], value: fmt, spanGaps: true, points: { show: true, size: 7, fill: evalColor, stroke: evalColor } },
      ],
    }, this.data(), this.container);
  }

  /** @returns {uPlot.AlignedData} */
  data() {
    return [this.steps, this.train, this.eval];
  }

  /** Replaces the whole history. @param {LossPoint[]} points */
  setHistory(points) {
    this.steps = [];
    this.train = [];
    this.eval = [];
    for (const p of points) this.add(p, false);
    this.render();
  }

  /** Adds a point; a second point for the same step merges into it (e.g. eval at step 0). @param {LossPoint} point @param {boolean} [render] */
  add({ step, loss, evalLoss }, render = true) {
    const last = this.steps.length - 1;
    if (last >= 0 && this.steps[last] === step) {
      this.train[last] = finite(loss) ?? this.train[last];
      this.eval[last] = finite(evalLoss) ?? this.eval[last];
    } else {
      this.steps.push(step);
      this.train.push(finite(loss));
      this.eval.push(finite(evalLoss));
    }
    if (render) this.render();
  }

  /** Redraws at most once per animation frame. */
  render() {
    this.emptyNote.hidden = this.steps.length > 0;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.plot) this.create();
      else this.plot.setData(this.data());
      this.container.dataset.points = String(this.steps.length);
    });
  }

  resize() {
    this.plot?.setSize({ width: this.width(), height: 280 });
  }
}
