// The Settings step: every training option of the core (src/options.rs, `TrainingConfig` in
// npm/src/index.d.ts) as a form field with a short hint, defaults per model size, the config the
// form describes, and a GPU memory estimate.

import { $, h, bytes, binaryBytes, count } from './format.js';

const LORA = ['lora', 'pissa'];
const PROMPT = ['prompt-tuning'];
const ALL = [...LORA, ...PROMPT];

const INITS = {
  lora: [
    ['default', 'Default (as PEFT)'],
    ['gaussian', 'Gaussian'],
  ],
  pissa: [
    ['pissa_niter_4', 'Fast SVD (4 iterations)'],
    ['pissa', 'Exact SVD (slower)'],
  ],
  'prompt-tuning': [
    ['random', 'Random'],
    ['text', 'From a text'],
    ['sample-vocab', 'Random vocabulary tokens'],
  ],
};

/**
 * The fields, in groups. `name` is the TrainingConfig key (or a page option for `page: true`);
 * `optional` fields may be left blank (the engine's default applies).
 */
export const GROUPS = [
  {
    title: 'Adapter',
    fields: [
      { name: 'init', label: 'Initialisation', type: 'select', methods: ALL, hint: 'How the adapter starts. LoRA: A random, B zero (PEFT’s default); PiSSA: from an SVD of each layer.' },
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

const FIELDS = GROUPS.flatMap((g) => g.fields);

/** Model size classes with their defaults. */
export function sizeClass(parameters) {
  if (parameters < 20e6) return 'toy';
  if (parameters < 250e6) return 'small';
  if (parameters < 1e9) return 'medium';
  return 'large';
}

const SIZE_LABEL = {
  toy: 'a toy model (under 20 M parameters)',
  small: 'a small model (~100–250 M parameters)',
  medium: 'a medium model (~250 M – 1 B parameters)',
  large: 'a large model (1 B+ parameters)',
};

const ATTENTION = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

/** Defaults for a model: `info` is the engine's ModelInfo (or undefined before one is loaded). */
export function defaultsFor(info) {
  const size = info ? sizeClass(info.parameters) : 'toy';
  const layers = info?.linearLayers ?? ATTENTION;
  let targets = ATTENTION.filter((t) => layers.includes(t));
  if (targets.length === 0) targets = info?.defaultTargets ?? layers;
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
    lr: 2e-4,
    schedule: 'linear',
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

/** The default learning rate of a method for a model of this size. */
function defaultLr(method, info) {
  if (method === 'prompt-tuning') return 3e-2;
  return defaultsFor(info).lr;
}

export class SettingsForm {
  constructor({ onChange }) {
    this.onChange = onChange;
    this.info = undefined;
    this.form = $('settings-form');
    this.container = $('settings-fields');
    this.render();
    this.form.addEventListener('input', (e) => this.changed(e));
    this.form.addEventListener('change', (e) => this.changed(e));
    this.apply(defaultsFor(undefined));
  }

  get method() {
    return this.form.querySelector('input[name="method"]:checked')?.value ?? 'lora';
  }

  render() {
    this.container.replaceChildren();
    for (const group of GROUPS) {
      const fields = h('div', { class: 'fields' }, group.fields.map((f) => this.renderField(f)));
      const node = group.collapsed
        ? h('details', { class: 'settings-group' }, h('summary', { text: group.title }), fields)
        : h('div', { class: 'settings-group' }, h('h3', { text: group.title }), fields);
      this.container.append(node);
    }
  }

  renderField(f) {
    const id = `opt-${f.name}`;
    const hintId = `${id}-hint`;
    const hint = h('p', { class: 'hint', id: hintId, text: f.hint });
    let wrapper;
    if (f.type === 'checkbox') {
      wrapper = h('div', { class: 'field' },
        h('div', { class: 'check' }, h('input', { type: 'checkbox', id, 'aria-describedby': hintId }), h('label', { for: id, text: f.label })),
        hint);
    } else if (f.type === 'targets') {
      wrapper = h('div', { class: 'field' },
        h('span', { class: 'label', id: `${id}-label`, text: f.label }),
        h('div', { class: 'targets', id, role: 'group', 'aria-labelledby': `${id}-label`, 'aria-describedby': hintId }),
        hint);
    } else {
      let input;
      if (f.type === 'select') {
        input = h('select', { id, 'aria-describedby': hintId }, (f.options ?? []).map(([v, l]) => h('option', { value: v, text: l })));
      } else if (f.type === 'textarea' || f.type === 'json') {
        input = h('textarea', { id, rows: f.type === 'json' ? 2 : 4, placeholder: f.placeholder, spellcheck: 'false', 'aria-describedby': hintId });
      } else {
        input = h('input', {
          id,
          type: f.type === 'number' ? 'number' : 'text',
          min: f.min, max: f.max, step: f.step,
          placeholder: f.placeholder,
          inputmode: f.type === 'number' ? 'decimal' : undefined,
          'aria-describedby': hintId,
          spellcheck: f.type === 'text' ? 'false' : undefined,
        });
      }
      wrapper = h('div', { class: 'field' }, h('label', { for: id, text: f.label }), input, hint);
    }
    wrapper.dataset.field = f.name;
    if (f.wide) wrapper.classList.add('wide');
    return wrapper;
  }

  /** The model changed: its layers become the target choices and its size picks the defaults. */
  setModel(info) {
    this.info = info;
    const order = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'c_attn', 'c_proj', 'c_fc'];
    const rank = (n) => (order.includes(n) ? order.indexOf(n) : order.length);
    const layers = [...(info?.linearLayers ?? ATTENTION)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const box = $('opt-targets');
    box.replaceChildren(...layers.map((name) => {
      const id = `opt-target-${name}`;
      return h('div', { class: 'check' }, h('input', { type: 'checkbox', id, value: name, name: 'target' }), h('label', { for: id, text: name }));
    }));
    const d = defaultsFor(info);
    this.apply(d);
    $('settings-preset').textContent = info
      ? `Defaults for ${SIZE_LABEL[sizeClass(info.parameters)]}; each setting says what it does.`
      : 'Defaults for the loaded model’s size; each setting says what it does.';
  }

  reset() {
    this.apply(defaultsFor(this.info));
  }

  /** Fills the form from values (a defaults object, or a saved config + page options). */
  apply(values) {
    if (values.method) {
      for (const radio of this.form.querySelectorAll('input[name="method"]')) radio.checked = radio.value === values.method;
    }
    this.updateInitOptions();
    for (const f of FIELDS) {
      if (!(f.name in values)) continue;
      const v = values[f.name];
      if (f.type === 'checkbox') $(`opt-${f.name}`).checked = !!v;
      else if (f.type === 'targets') {
        const set = new Set(v ?? []);
        for (const cb of this.form.querySelectorAll('input[name="target"]')) cb.checked = set.has(cb.value);
      } else if (f.type === 'json') {
        $(`opt-${f.name}`).value = v && typeof v === 'object' ? (Object.keys(v).length ? JSON.stringify(v) : '') : (v ?? '');
      } else {
        $(`opt-${f.name}`).value = v ?? '';
      }
    }
    if (values.init) this.setInit(values.init);
    this.updateVisibility();
    this.lastMethod = this.method;
    this.onChange?.('apply');
  }

  setInit(value) {
    const select = $('opt-init');
    if (![...select.options].some((o) => o.value === value)) select.append(h('option', { value, text: value }));
    select.value = value;
  }

  updateInitOptions() {
    const select = $('opt-init');
    const current = select.value;
    select.replaceChildren(...INITS[this.method].map(([v, l]) => h('option', { value: v, text: l })));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  updateVisibility() {
    const method = this.method;
    for (const f of FIELDS) {
      const el = this.form.querySelector(`[data-field="${f.name}"]`);
      if (!el) continue;
      let show = f.methods.includes(method);
      if (f.name === 'initText') show = show && $('opt-init').value === 'text';
      el.hidden = !show;
    }
  }

  changed(event) {
    if (event.target.name === 'method') {
      const method = this.method;
      this.updateInitOptions();
      // Keep a learning rate the user typed; switch an untouched default to the new method's.
      const lr = $('opt-lr');
      if (Number(lr.value) === defaultLr(this.lastMethod, this.info)) lr.value = defaultLr(method, this.info);
      this.lastMethod = method;
    }
    this.updateVisibility();
    this.validate();
    this.onChange?.(event.target.id || event.target.name);
  }

  /** Marks invalid fields; returns a list of problems (empty when all is well). */
  validate() {
    const problems = [];
    for (const f of FIELDS) {
      const el = $(`opt-${f.name}`);
      if (!el || el.closest('[data-field]')?.hidden) continue;
      el.classList.remove('invalid');
      if (f.type === 'json' && el.value.trim()) {
        try {
          const v = JSON.parse(el.value);
          if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every(Number.isFinite)) throw new Error();
        } catch {
          el.classList.add('invalid');
          problems.push(`${f.label}: write a JSON object of numbers, e.g. ${f.placeholder}`);
        }
      }
      if (f.type === 'number') {
        if (el.value === '' && !f.optional) {
          el.classList.add('invalid');
          problems.push(`${f.label} is empty`);
        } else if (el.value !== '' && !el.checkValidity()) {
          problems.push(`${f.label}: ${el.validationMessage}`);
        }
      }
    }
    if (LORA.includes(this.method) && this.targets().length === 0) problems.push('Choose at least one layer to adapt');
    if (this.method === 'prompt-tuning' && $('opt-init').value === 'text' && !$('opt-initText').value.trim()) {
      $('opt-initText').classList.add('invalid');
      problems.push('Init text is empty');
    }
    return problems;
  }

  targets() {
    return [...this.form.querySelectorAll('input[name="target"]:checked')].map((cb) => cb.value);
  }

  num(name) {
    const v = $(`opt-${name}`).value.trim();
    return v === '' ? undefined : Number(v);
  }

  /** The TrainingConfig the form describes (without the data-section options). */
  config() {
    const method = this.method;
    const c = {
      method: method === 'prompt-tuning' ? 'prompt-tuning' : 'lora',
      init: $('opt-init').value,
      lr: this.num('lr'),
      schedule: $('opt-schedule').value,
      warmupSteps: this.num('warmupSteps'),
      weightDecay: this.num('weightDecay'),
      clip: this.num('clip'),
      batchSize: this.num('batchSize'),
      gradAccum: this.num('gradAccum'),
      steps: this.num('steps'),
      epochs: this.num('epochs'),
      maxLen: this.num('maxLen'),
      evalEvery: this.num('evalEvery'),
      earlyStoppingPatience: this.num('earlyStoppingPatience'),
      earlyStoppingThreshold: this.num('earlyStoppingThreshold'),
      shuffle: $('opt-shuffle').checked,
      seed: this.num('seed'),
    };
    const template = $('opt-template').value;
    if (template.trim()) c.template = template;
    if (c.method === 'lora') {
      Object.assign(c, {
        r: this.num('r'),
        alpha: this.num('alpha'),
        dropout: this.num('dropout'),
        targets: this.targets(),
        rslora: $('opt-rslora').checked,
      });
      for (const name of ['rankPattern', 'alphaPattern']) {
        const text = $(`opt-${name}`).value.trim();
        if (text) {
          try {
            c[name] = JSON.parse(text);
          } catch {
            /* reported by validate() */
          }
        }
      }
    } else {
      c.virtualTokens = this.num('virtualTokens');
      if (c.init === 'text') c.initText = $('opt-initText').value;
    }
    for (const key of Object.keys(c)) if (c[key] === undefined || Number.isNaN(c[key])) delete c[key];
    return c;
  }

  /** Page-level options (not part of the engine's TrainingConfig). */
  pageOptions() {
    return { checkpointEvery: this.num('checkpointEvery') };
  }

  /** Values to save with a checkpoint and to restore the form from. */
  snapshot() {
    const c = this.config();
    return {
      ...c,
      method: this.method,
      initText: $('opt-initText').value,
      targets: this.targets(),
      template: $('opt-template').value,
      rankPattern: $('opt-rankPattern').value,
      alphaPattern: $('opt-alphaPattern').value,
      steps: $('opt-steps').value,
      evalEvery: $('opt-evalEvery').value,
      earlyStoppingPatience: $('opt-earlyStoppingPatience').value,
      ...this.pageOptions(),
    };
  }
}

// --- GPU memory estimate --------------------------------------------------------------------------

/** [in, out] of a linear layer by its name suffix. */
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
 * Rough GPU memory of training `model` (ModelInfo-like) with `config`: weights are f32 on the GPU
 * (4 bytes per parameter), plus the adapter with its gradients and AdamW moments, plus activations
 * and the logits of one batch. Returns { weights, total, largest, trainable, fits, problems }.
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

export function renderMemory(el, model, config, gpu) {
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
