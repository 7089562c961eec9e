// webtune: private, in-browser fine-tuning of small language models on WebGPU.
// Types and documentation: index.d.ts. Usage: README.md.

export { WebtuneError } from './errors.js';
export { createEngine } from './engine.js';
export { createWorkerEngine } from './worker-engine.js';
export { readAdapterFiles } from './sources.js';

/**
 * The bundled demo: a 771K-parameter Llama pretrained on word games (scripts/pretrain_demo.py)
 * and a dataset that teaches it a new keyword, "Backwards: plant ->" → " tnalp" (64 training
 * rows, 16 evaluation rows), so an app can show training change answers without downloading
 * anything.
 * @type {import('./index.js').Demo}
 */
export const demo = {
  model: {
    name: 'webtune-demo-llama',
    urls: {
      'config.json': new URL('./demo/config.json', import.meta.url).href,
      'model.safetensors': new URL('./demo/model.safetensors', import.meta.url).href,
      'tokenizer.json': new URL('./demo/tokenizer.json', import.meta.url).href,
      'tokenizer_config.json': new URL('./demo/tokenizer_config.json', import.meta.url).href,
    },
  },
  train: { name: 'train.jsonl', url: new URL('./demo/train.jsonl', import.meta.url).href },
  eval: { name: 'eval.jsonl', url: new URL('./demo/eval.jsonl', import.meta.url).href },
};
