// GPU memory of a training run as the core estimates it from the model's real layer shapes
// (`engine.runFacts`, src/session/memory.rs), and whether its largest buffer fits this GPU: shown
// under the settings, beside the model's facts and before a run starts.

import { $, h, bytes, binaryBytes, count } from './format.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').GpuInfo} GpuInfo */
/** @typedef {import('../webtune/index.js').RunFacts} RunFacts */
/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */

/**
 * Why a run with this estimate does not fit the GPU's limits (empty when it fits).
 * @param {number} largestBuffer bytes @param {GpuInfo} gpu
 */
export function limitProblems(largestBuffer, gpu) {
  if (largestBuffer > gpu.maxStorageBufferBindingSize) {
    return [`its largest buffer (${binaryBytes(largestBuffer)}) is over this GPU’s limit of ${binaryBytes(gpu.maxStorageBufferBindingSize)} per binding: lower the batch size or max length`];
  }
  if (largestBuffer > gpu.maxBufferSize) {
    return [`its largest buffer (${binaryBytes(largestBuffer)}) is over this GPU’s buffer limit of ${binaryBytes(gpu.maxBufferSize)}: lower the batch size or max length`];
  }
  return [];
}

/**
 * The core's facts of training the loaded model with `config`, or null (no engine or model, or
 * options the core refuses: the settings step says what is wrong with them).
 * @param {TrainingConfig} config
 * @returns {Promise<RunFacts | null>}
 */
export async function runFacts(config) {
  const engine = session.engine;
  if (!engine || !session.model) return null;
  try {
    return await engine.runFacts(config);
  } catch (error) {
    console.warn('[webtune page] no memory estimate:', error);
    return null;
  }
}

let shown = 0;

/** The estimate under the settings for `config` (the latest call wins; empty without one). @param {TrainingConfig} config */
export async function renderMemory(config) {
  const call = ++shown;
  const facts = await runFacts(config);
  const gpu = session.engine?.gpu;
  if (call !== shown) return;
  const el = $('memory-estimate');
  if (!facts || !gpu) {
    el.replaceChildren();
    el.className = 'memory';
    return;
  }
  const m = facts.memory;
  const problems = limitProblems(m.largestBuffer, gpu);
  el.className = problems.length ? 'memory warn' : 'memory';
  el.replaceChildren(
    h('strong', { text: `≈ ${bytes(m.total)} of GPU memory to train` }),
    ` (weights ${bytes(m.weights)} as ${m.weightBytes === 2 ? 'f16' : 'f32'}, ${count(facts.trainableParameters)} trainable parameters, activations ${bytes(m.activations)}` +
      ` for ${config.batchSize ?? 4} × ${config.maxLen ?? 512} tokens${m.recomputeLayers ? ', layers recomputed in the backward pass' : ''}). `,
    problems.length
      ? h('span', { text: `Will not fit: ${problems.join('; ')}.` })
      : `Largest buffer ${binaryBytes(m.largestBuffer)}, within this GPU’s ${binaryBytes(gpu.maxStorageBufferBindingSize)} binding limit.`,
  );
}
