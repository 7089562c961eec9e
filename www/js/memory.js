// GPU memory of a training run, and whether its biggest buffer fits the GPU's limits: shown under
// the settings, beside the model's facts and for the suggested hub models.

import { $, h, bytes, binaryBytes, count } from './format.js';

/** @typedef {import('../webtune/index.js').GpuInfo} GpuInfo */
/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/**
 * What the estimate needs of a model (a loaded model's ModelInfo, or a suggested model's facts).
 * @typedef {{ parameters: number, vocabSize: number, hiddenSize: number, numLayers: number, numHeads: number,
 *   numKvHeads: number, intermediateSize: number, maxPositions: number }} ModelShape
 */
/** @typedef {{ weights: number, total: number, largest: number, trainable: number, fits: boolean, problems: string[] }} MemoryEstimate */

/** [in, out] of a linear layer by its name suffix. @param {string} name @param {ModelShape} m */
function linearShape(name, m) {
  const h = m.hiddenSize;
  const hd = h / m.numHeads;
  switch (name) {
    case 'q_proj': return [h, m.numHeads * hd];
    case 'k_proj':
    case 'v_proj': return [h, m.numKvHeads * hd];
    case 'o_proj': return [m.numHeads * hd, h];
    case 'gate_proj':
    case 'up_proj':
    case 'c_fc': return [h, m.intermediateSize];
    case 'down_proj': return [m.intermediateSize, h];
    case 'c_attn': return [h, 3 * h];
    case 'c_proj': return [h + m.intermediateSize, 2 * h]; // attn.c_proj + mlp.c_proj together
    default: return [h, h];
  }
}

/**
 * Rough GPU memory of training `model` with `config`: weights as f32, the adapter with its
 * gradients and AdamW moments, activations and the logits of one batch; and the largest buffer
 * against the GPU's limits. This is the one place the page derives layer shapes itself: the core's
 * run facts (trainable parameters, adapted layers and a memory estimate in bytes, from the run
 * set-up of issue 11) replace it once the wasm binding returns them.
 * @param {ModelShape} model @param {TrainingConfig} config @param {GpuInfo | null} gpu
 * @returns {MemoryEstimate}
 */
export function estimateMemory(model, config, gpu) {
  const batch = config.batchSize ?? 4;
  const len = Math.min(config.maxLen ?? 512, model.maxPositions || Infinity);
  const tokens = batch * len;
  const weights = 4 * model.parameters;
  let trainable;
  if (config.method === 'prompt-tuning') trainable = (config.virtualTokens ?? 20) * model.hiddenSize;
  else {
    const r = config.r ?? 8;
    trainable = (config.targets ?? []).reduce((sum, t) => {
      const [i, o] = linearShape(t, model);
      return sum + r * (i + o);
    }, 0) * model.numLayers;
  }
  const perToken = model.numLayers * (12 * model.hiddenSize + 4 * model.intermediateSize + 3 * model.numHeads * len);
  const activations = 4 * tokens * perToken;
  const logits = 4 * tokens * model.vocabSize * 3;
  const total = Math.round((weights + 16 * trainable + activations + logits) * 1.15);
  const largest = Math.max(
    4 * model.vocabSize * model.hiddenSize,
    4 * tokens * model.vocabSize,
    4 * batch * model.numHeads * len * len,
    4 * model.intermediateSize * model.hiddenSize,
  );
  const problems = [];
  if (gpu) {
    if (largest > gpu.maxStorageBufferBindingSize) {
      problems.push(`its largest buffer (${binaryBytes(largest)}) is over this GPU’s limit of ${binaryBytes(gpu.maxStorageBufferBindingSize)} per binding: lower the batch size or max length`);
    } else if (largest > gpu.maxBufferSize) {
      problems.push(`its largest buffer (${binaryBytes(largest)}) is over this GPU’s buffer limit of ${binaryBytes(gpu.maxBufferSize)}: lower the batch size or max length`);
    }
  }
  return { weights, total, largest, trainable, fits: problems.length === 0, problems };
}

/**
 * The estimate under the settings (empty without a model).
 * @param {ModelShape | null} model @param {TrainingConfig} config @param {GpuInfo | null} gpu
 */
export function renderMemory(model, config, gpu) {
  const el = $('memory-estimate');
  if (!model) {
    el.replaceChildren();
    el.className = 'memory';
    return;
  }
  const m = estimateMemory(model, config, gpu);
  el.className = m.fits ? 'memory' : 'memory warn';
  el.replaceChildren(
    h('strong', { text: `≈ ${bytes(m.total)} of GPU memory to train` }),
    ` (weights ${bytes(m.weights)} as f32, ${count(m.trainable)} trainable parameters, activations for ${config.batchSize ?? 4} × ${config.maxLen ?? 512} tokens). `,
    m.fits
      ? `Largest buffer ${binaryBytes(m.largest)}, within this GPU’s ${gpu ? binaryBytes(gpu.maxStorageBufferBindingSize) : '?'} binding limit.`
      : h('span', { text: `Will not fit: ${m.problems.join('; ')}.` }),
  );
}
