// The settings of a training run: every training option of the core (src/options.rs,
// `TrainingConfig` in npm/src/index.d.ts) as a form field with a short hint, and the defaults per
// model size. settings.js renders them as a form.

/**
 * The method choices of the form: PiSSA is LoRA with an SVD init and DoRA is LoRA with `dora`,
 * each a choice of its own on the page.
 * @typedef {'lora' | 'pissa' | 'dora' | 'prompt-tuning' | 'ia3' | 'seq-bn' | 'double-seq-bn'} Method
 */
/**
 * A field of the form. `name` is the TrainingConfig key (or a page option for `page: true`);
 * `optional` fields may be left blank (the engine's default applies).
 * @typedef {object} Field
 * @property {string} name
 * @property {string} label
 * @property {'select' | 'text' | 'number' | 'checkbox' | 'targets' | 'textarea' | 'json'} type
 * @property {Method[]} methods
 * @property {string} hint
 * @property {Array<[string, string]>} [options]
 * @property {number} [min]
 * @property {number} [max]
 * @property {number | 'any'} [step]
 * @property {boolean} [optional]
 * @property {boolean} [page]
 * @property {boolean} [wide]
 * @property {string} [placeholder]
 */
/** @typedef {{ title: string, collapsed?: boolean, fields: Field[] }} Group */
/** The form's values by field name, plus `method`. @typedef {Record<string, unknown> & { method: Method }} FormValues */
/** @typedef {import('../webtune/index.js').ModelInfo} ModelInfo */

/** @type {Method[]} */
export const LORA = ['lora', 'pissa', 'dora'];
/** @type {Method[]} */
const PROMPT = ['prompt-tuning'];
/** AdapterHub's bottleneck adapters. @type {Method[]} */
export const BOTTLENECK = ['seq-bn', 'double-seq-bn'];
/** @type {Method[]} */
const IA3 = ['ia3'];
/** @type {Method[]} */
const ALL = [...LORA, ...PROMPT, ...BOTTLENECK, ...IA3];
/** Every method, in the order of the method cards. */
export const METHODS = ALL;

/**
 * The core's options for a page method: `method` (and `dora`) of TrainingConfig.
 * @param {Method} method
 * @returns {{ method: 'lora' | 'prompt-tuning' | 'seq-bn' | 'double-seq-bn' | 'ia3', dora?: boolean }}
 */
export function coreMethod(method) {
  if (method === 'pissa' || method === 'lora') return { method: 'lora' };
  if (method === 'dora') return { method: 'lora', dora: true };
  return { method };
}

/** The `init` choices of each method. @type {Record<Method, Array<[string, string]>>} */
export const INITS = {
  lora: [
    ['default', 'Default (as PEFT)'],
    ['gaussian', 'Gaussian'],
  ],
  pissa: [
    ['pissa_niter_4', 'Fast SVD (4 iterations)'],
    ['pissa', 'Exact SVD (slower)'],
  ],
  dora: [
    ['default', 'Default (as PEFT)'],
    ['gaussian', 'Gaussian'],
  ],
  'prompt-tuning': [
    ['random', 'Random'],
    ['text', 'From a text'],
    ['sample-vocab', 'Random vocabulary tokens'],
  ],
  'seq-bn': [
    ['bert', 'BERT (small random weights)'],
    ['mam_adapter', 'Identity at start (mam_adapter)'],
    ['houlsby', 'Houlsby (truncated normal)'],
  ],
  'double-seq-bn': [
    ['bert', 'BERT (small random weights)'],
    ['mam_adapter', 'Identity at start (mam_adapter)'],
    ['houlsby', 'Houlsby (truncated normal)'],
  ],
  ia3: [['ones', 'Ones (no change at start)']],
};

/** The fields, in groups. @type {Group[]} */
export const GROUPS = [
  {
    title: 'Adapter',
    fields: [
      { name: 'init', label: 'Initialisation', type: 'select', methods: [...LORA, ...PROMPT, ...BOTTLENECK], hint: 'How the adapter starts. LoRA: A random, B zero (PEFT’s default); PiSSA: from an SVD of each layer.' },
      { name: 'reductionFactor', label: 'Reduction factor', type: 'number', min: 1, step: 'any', methods: BOTTLENECK, hint: 'The bottleneck is the hidden size divided by this: 16 is AdapterHub’s default; lower learns more.' },
      { name: 'nonLinearity', label: 'Non-linearity', type: 'select', options: [['', 'Default (relu / swish)'], ['relu', 'ReLU'], ['swish', 'Swish (SiLU)'], ['gelu', 'GELU'], ['gelu_new', 'GELU (tanh)'], ['tanh', 'tanh']], methods: BOTTLENECK, hint: 'Between the down and up projections.' },
      { name: 'adapterName', label: 'Adapter name', type: 'text', optional: true, methods: BOTTLENECK, placeholder: 'adapter', hint: 'AdapterHub’s name for it, part of every weight key.' },
      { name: 'initText', label: 'Init text', type: 'text', methods: PROMPT, wide: true, hint: 'Text whose token embeddings start the virtual tokens, e.g. a task description.' },
      { name: 'r', label: 'Rank r', type: 'number', min: 1, max: 1024, step: 1, methods: LORA, hint: 'Size of the low-rank update. 8–16 is typical; higher learns more and costs more.' },
      { name: 'alpha', label: 'Alpha', type: 'number', min: 0, step: 'any', methods: LORA, hint: 'Scale of the update (alpha / r). Often 2 × r.' },
      { name: 'dropout', label: 'Dropout', type: 'number', min: 0, max: 0.99, step: 0.01, methods: LORA, hint: 'Randomly drops the adapter’s input during training; 0.05 helps small datasets.' },
      { name: 'virtualTokens', label: 'Virtual tokens', type: 'number', min: 1, max: 512, step: 1, methods: PROMPT, hint: 'How many learned tokens are put before every input.' },
      { name: 'targets', label: 'Layers to adapt', type: 'targets', methods: LORA, wide: true, hint: 'LoRA is added next to these linear layers of every block. Attention (q, k, v, o) is the usual choice; adding the MLP learns more.' },
      { name: 'rslora', label: 'rsLoRA scaling', type: 'checkbox', methods: LORA, hint: 'Scale by alpha / √r instead of alpha / r: steadier at high ranks.' },
    ],
  },
  {
    title: 'Optimisation',
    fields: [
      { name: 'lr', label: 'Learning rate', type: 'number', min: 0, step: 'any', methods: ALL, hint: 'AdamW step size. LoRA: 1e-4 – 3e-4 for real models; prompt tuning: ~3e-2.' },
      { name: 'schedule', label: 'Schedule', type: 'select', options: [['linear', 'Linear decay'], ['cosine', 'Cosine decay'], ['constant', 'Constant']], methods: ALL, hint: 'How the learning rate changes over the run (after warm-up).' },
      { name: 'warmupSteps', label: 'Warm-up steps', type: 'number', min: 0, step: 1, methods: ALL, hint: 'Steps over which the learning rate ramps up from 0.' },
      { name: 'weightDecay', label: 'Weight decay', type: 'number', min: 0, step: 'any', methods: ALL, hint: 'AdamW’s decoupled weight decay; 0 is common for adapters.' },
      { name: 'clip', label: 'Gradient clip', type: 'number', min: 0, step: 'any', methods: ALL, hint: 'Largest global gradient norm; 0 turns clipping off.' },
      { name: 'batchSize', label: 'Batch size', type: 'number', min: 1, max: 512, step: 1, methods: ALL, hint: 'Examples per forward pass. Uses GPU memory; lower it if memory runs out.' },
      { name: 'gradAccum', label: 'Gradient accumulation', type: 'number', min: 1, max: 1024, step: 1, methods: ALL, hint: 'Batches summed per optimizer step: a larger effective batch without more memory.' },
    ],
  },
  {
    title: 'Length',
    fields: [
      { name: 'steps', label: 'Steps', type: 'number', min: 1, step: 1, optional: true, methods: ALL, placeholder: 'from epochs', hint: 'Optimizer steps to run. Leave blank to run whole epochs.' },
      { name: 'epochs', label: 'Epochs', type: 'number', min: 1, step: 1, methods: ALL, hint: 'Passes over the training rows (when steps is blank).' },
      { name: 'maxLen', label: 'Max length (tokens)', type: 'number', min: 2, step: 1, methods: ALL, hint: 'Longer examples are cut to this. Memory grows with it.' },
      { name: 'recompute', label: 'Recompute layers', type: 'select', options: [['auto', 'Auto (above 512 MiB of activations)'], ['on', 'On: least memory'], ['off', 'Off: fastest']], methods: ALL, hint: 'Keep only each layer’s input and recompute the layer in the backward pass: a fraction of the activation memory for about a third more compute.' },
    ],
  },
  {
    title: 'Evaluation and checkpoints',
    fields: [
      { name: 'evalEvery', label: 'Evaluate every (steps)', type: 'number', min: 1, step: 1, optional: true, methods: ALL, placeholder: 'only at the end', hint: 'Eval loss on the evaluation rows every N steps and at the end.' },
      { name: 'earlyStoppingPatience', label: 'Early-stopping patience', type: 'number', min: 1, step: 1, optional: true, methods: ALL, placeholder: 'off', hint: 'Stop after this many evaluations without improvement; the best adapter is kept.' },
      { name: 'earlyStoppingThreshold', label: 'Early-stopping threshold', type: 'number', min: 0, step: 'any', methods: ALL, hint: 'How much the eval loss must fall to count as an improvement.' },
      { name: 'checkpointEvery', label: 'Checkpoint every (steps)', type: 'number', min: 1, step: 1, page: true, methods: ALL, hint: 'Saves adapter and optimizer state to browser storage (also when paused). A reload loses at most this many steps.' },
    ],
  },
  {
    title: 'Advanced',
    collapsed: true,
    fields: [
      { name: 'seed', label: 'Seed', type: 'number', min: 0, step: 1, methods: ALL, hint: 'Same seed, data and settings give the same adapter.' },
      { name: 'shuffle', label: 'Shuffle rows each epoch', type: 'checkbox', methods: ALL, hint: 'A seeded shuffle; off keeps the file’s order.' },
      { name: 'template', label: 'Template for instruction rows', type: 'textarea', optional: true, wide: true, methods: ALL, placeholder: 'Alpaca (default)', hint: 'Jinja template for {instruction, input, output} rows; the output is what the model learns. Blank = the Alpaca template.' },
      { name: 'rankPattern', label: 'Rank per layer (JSON)', type: 'json', optional: true, methods: LORA, placeholder: '{"down_proj": 4}', hint: 'Overrides r for layers whose name matches a key.' },
      { name: 'alphaPattern', label: 'Alpha per layer (JSON)', type: 'json', optional: true, methods: LORA, placeholder: '{"down_proj": 8}', hint: 'Overrides alpha for layers whose name matches a key.' },
    ],
  },
];

export const FIELDS = GROUPS.flatMap((g) => g.fields);

/** Model size classes with their defaults. @param {number} parameters @returns {SizeClass} */
export function sizeClass(parameters) {
  if (parameters < 20e6) return 'toy';
  if (parameters < 250e6) return 'small';
  if (parameters < 1e9) return 'medium';
  return 'large';
}

/** @typedef {'toy' | 'small' | 'medium' | 'large'} SizeClass */

/** @type {Record<SizeClass, string>} */
export const SIZE_LABEL = {
  toy: 'a toy model (under 20 M parameters)',
  small: 'a small model (~100–250 M parameters)',
  medium: 'a medium model (~250 M – 1 B parameters)',
  large: 'a large model (1 B+ parameters)',
};

export const ATTENTION = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

/**
 * Defaults for a model: `info` is the engine's ModelInfo, a suggested model's facts, or undefined
 * before one is loaded.
 * @param {{ parameters: number, linearLayers?: string[], defaultTargets?: string[] } | undefined} info
 * @returns {FormValues}
 */
export function defaultsFor(info) {
  const size = info ? sizeClass(info.parameters) : 'toy';
  const layers = info?.linearLayers ?? ATTENTION;
  let targets = ATTENTION.filter((t) => layers.includes(t));
  if (targets.length === 0) targets = info?.defaultTargets ?? layers;
  /** @type {FormValues} */
  const common = {
    method: 'lora',
    init: 'default',
    initText: '',
    r: 8,
    alpha: 16,
    dropout: 0,
    targets,
    rslora: false,
    virtualTokens: 20,
    reductionFactor: 16,
    nonLinearity: '',
    adapterName: '',
    lr: 2e-4,
    schedule: 'linear',
    recompute: 'auto',
    warmupSteps: 0,
    weightDecay: 0,
    clip: 1,
    batchSize: 4,
    gradAccum: 1,
    steps: '',
    epochs: 1,
    maxLen: 256,
    evalEvery: 50,
    earlyStoppingPatience: '',
    earlyStoppingThreshold: 0,
    checkpointEvery: 25,
    seed: 42,
    shuffle: true,
    template: '',
    rankPattern: '',
    alphaPattern: '',
  };
  switch (size) {
    case 'toy':
      return { ...common, lr: 1e-2, steps: 40, maxLen: 128, evalEvery: 5, checkpointEvery: 5, virtualTokens: 8 };
    case 'small':
      return { ...common, dropout: 0.05 };
    case 'medium':
      return { ...common, dropout: 0.05, batchSize: 2, gradAccum: 4, checkpointEvery: 20 };
    default:
      return { ...common, dropout: 0.05, lr: 1e-4, batchSize: 1, gradAccum: 8, checkpointEvery: 10 };
  }
}

/**
 * The default learning rate of a method for a model of this size.
 * @param {Method} method @param {ModelInfo | undefined} info
 */
export function defaultLr(method, info) {
  const toy = !info || sizeClass(info.parameters) === 'toy';
  if (method === 'prompt-tuning') return 3e-2;
  if (method === 'ia3') return toy ? 3e-2 : 3e-3;
  if (BOTTLENECK.includes(method)) return toy ? 1e-2 : 1e-4;
  return /** @type {number} */ (defaultsFor(info).lr);
}

/**
 * The TrainingConfig of the default settings, for memory estimates of a model before the form
 * shows it.
 * @param {{ parameters: number, linearLayers?: string[], defaultTargets?: string[] }} info
 * @returns {import('../webtune/index.js').TrainingConfig}
 */
export function defaultConfig(info) {
  const d = defaultsFor(info);
  return { method: 'lora', batchSize: Number(d.batchSize), maxLen: Number(d.maxLen), r: Number(d.r), targets: /** @type {string[]} */ (d.targets) };
}
