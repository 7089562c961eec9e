// The wasm side's results in the shapes index.d.ts declares. The core serialises GpuInfo,
// DatasetReport and a step's metrics with snake_case fields today; issue 11 makes every struct
// that crosses the wasm boundary camelCase with exactly the index.d.ts names. Until then these
// readers rename the fields, and they accept both spellings, so that the core's change and this
// package can land in either order. Once the core speaks camelCase, each function returns its
// argument and this file goes: engine.js is its only user.

/** @typedef {import('./index.js').DatasetReport} DatasetReport */
/** @typedef {import('./index.js').TrainReport} TrainReport */
/** @typedef {import('./index.js').DatasetPreview} DatasetPreview */

/**
 * `GpuInfo` without the name (engine.js picks a readable one).
 * @param {any} raw the result of wasm `init()`
 * @returns {{ backend: string, name: string, maxStorageBufferBindingSize: number, maxBufferSize: number }}
 */
export function gpuInfo(raw) {
  return {
    name: raw.name,
    backend: raw.backend,
    maxStorageBufferBindingSize: raw.maxStorageBufferBindingSize ?? raw.max_storage_buffer_binding_size,
    maxBufferSize: raw.maxBufferSize ?? raw.max_buffer_size,
  };
}

/** @param {any} r @returns {DatasetReport} */
export function datasetReport(r) {
  return {
    rows: r.rows,
    badRows: r.badRows ?? r.bad_rows,
    truncated: r.truncated,
    noSupervisedTokens: r.noSupervisedTokens ?? r.no_supervised_tokens,
    minTokens: r.minTokens ?? r.min_tokens,
    meanTokens: r.meanTokens ?? r.mean_tokens,
    maxTokens: r.maxTokens ?? r.max_tokens,
    supervisedTokens: r.supervisedTokens ?? r.supervised_tokens,
  };
}

/** @param {any} r the result of wasm `WebTrainer.report()` @returns {TrainReport} */
export function trainReport(r) {
  return {
    train: datasetReport(r.train),
    eval: r.eval ? datasetReport(r.eval) : null,
    trainExamples: r.trainExamples,
    evalExamples: r.evalExamples,
  };
}

/** @param {any} r the result of wasm `WebModel.previewDataset()` @returns {DatasetPreview} */
export function datasetPreview(r) {
  return {
    rows: r.rows.map((/** @type {any} */ row) => ({
      line: row.line,
      segments: row.segments,
      tokens: row.tokens,
      truncated: row.truncated,
      ...(row.error != null ? { error: row.error } : {}),
    })),
    report: r.report ? datasetReport(r.report) : null,
  };
}

/**
 * The core's part of a step's `StepMetrics` (the page-side timings are added by engine.js).
 * @param {any} raw the result of wasm `WebTrainer.step()`
 */
export function stepMetrics(raw) {
  const evalLoss = raw.evalLoss ?? raw.eval_loss;
  const earlyStopped = raw.earlyStopped ?? raw.early_stopped;
  return {
    step: /** @type {number} */ (raw.step),
    epoch: /** @type {number} */ (raw.epoch),
    loss: /** @type {number} */ (raw.loss),
    lr: /** @type {number} */ (raw.lr),
    gradNorm: /** @type {number} */ (raw.gradNorm ?? raw.grad_norm),
    tokens: /** @type {number} */ (raw.tokens),
    supervisedTokens: /** @type {number} */ (raw.supervisedTokens ?? raw.supervised_tokens),
    ...(evalLoss != null ? { evalLoss: /** @type {number} */ (evalLoss) } : {}),
    ...(earlyStopped ? { earlyStopped: true } : {}),
  };
}
