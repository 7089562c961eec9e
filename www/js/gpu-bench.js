// The GPU section: measures what a LoRA training step costs on this GPU (`engine.bench()`): per
// step, kernel dispatches, queue submits and buffer creations counted at the WebGPU API, host and
// wall milliseconds; per transformer layer and for the optimizer, the core's kernel counts.

import { $, h, mark, setNote } from './format.js';
import { showError } from './alerts.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').BenchResult} BenchResult */

/** The preset the second button measures, with few layers so that a software GPU copes. */
const SHAPE = { shape: 'smollm2-135m', layers: 2 };

/** @param {string} id */
const button = (id) => /** @type {HTMLButtonElement} */ ($(id));

/** @param {BenchResult} r */
function showResult(r) {
  const head = ['Step', 'Dispatches', 'Submits', 'Buffers created', 'Pipelines compiled', 'Host ms', 'Wall ms'];
  const rows = r.steps.map((s) => [s.step, s.dispatches, s.submits, s.bufferCreations, s.pipelines, s.hostMs, s.wallMs]);
  $('bench-result').replaceChildren(
    h('p', { text:
      `${r.model}, ${r.layers} layers, ${r.weightsDtype} weights, LoRA ${r.lora}, batch ${r.batchSize} × ${r.seqLen} tokens` +
      `${r.estimate.recomputeLayers ? ', layers recomputed' : ''}. Warm-up: ${r.shapesWarmed} shape(s) in ${r.warmUpMs} ms.` +
      `${r.steps.every((s) => s.replayed) ? ' Each step replays its forward and backward passes, recorded once.' : ''}` }),
    h('table', { class: 'bench-table', 'aria-label': 'Training steps measured' },
      h('thead', {}, h('tr', {}, head.map((text) => h('th', { scope: 'col', text })))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', { text: String(c) })))))),
    h('dl', { class: 'stats', id: 'bench-stats' },
      [['Dispatches per layer', r.dispatchesPerLayer], ['Outside the layers', r.dispatchesOutsideLayers],
        ['Optimizer', r.optimizerDispatches], ['Median host ms', r.median.hostMs], ['Median wall ms', r.median.wallMs]]
        .map(([dt, dd]) => h('div', {}, h('dt', { text: String(dt) }), h('dd', { text: String(dd) })))),
  );
}

/** @param {import('../webtune/index.js').BenchOptions} options */
async function measure(options) {
  const engine = session.requireEngine();
  session.update({ busy: 'bench' });
  mark('bench', 'running');
  setNote('bench-status', 'Measuring: compiling the kernels, then timing the steps…');
  try {
    const result = await engine.bench({ steps: 3, ...options });
    showResult(result);
    setNote('bench-status', `Median step: ${result.median.dispatches} dispatches, ${result.median.submits} submits, ${result.median.wallMs} ms.`, 'ok');
    mark('bench', 'done');
  } catch (error) {
    setNote('bench-status', '');
    showError(error, 'bench');
    mark('bench', 'failed');
  } finally {
    session.update({ busy: '' });
  }
}

function render() {
  button('bench-model').disabled = !(session.idle && session.model);
  button('bench-shape').disabled = !session.idle;
}

export function initGpuStep() {
  button('bench-model').addEventListener('click', () => measure({ seqLen: 32 }));
  button('bench-shape').addEventListener('click', () => measure({ ...SHAPE, seqLen: 64 }));
  session.onChange(render);
  render();
}
