// In-browser parity checks against the transformers + PEFT fixtures, on the raw wasm API
// (www/pkg, built by scripts/build-wasm.sh). Loaded by tests/browser/parity.test.mjs into a page
// served from the repository root.

import loadWasm, { init, WebAdapter, WebModel, WebTrainer } from '/www/pkg/webtune.js';

const FIXTURES = '/tests/fixtures/';
const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

async function bytes(path) {
  const response = await fetch(FIXTURES + path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function text(path) {
  return new TextDecoder().decode(await bytes(path));
}

/** Tensors of a safetensors file: name → { shape, values } (F32 and I64 as plain numbers). */
function readSafetensors(buffer) {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength)));
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [start, end] = info.data_offsets;
    const raw = buffer.slice(8 + headerLength + start, 8 + headerLength + end);
    const values = info.dtype === 'F32' ? Array.from(new Float32Array(raw.buffer)) : Array.from(new BigInt64Array(raw.buffer), Number);
    tensors[name] = { shape: info.shape, values };
  }
  return tensors;
}

function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

let gpu;
export async function setup() {
  if (!gpu) {
    await loadWasm();
    gpu = await init();
  }
  return gpu;
}

async function loadModel(name, loadOptions) {
  const files = {};
  for (const file of MODEL_FILES) files[file] = await bytes(`${name}/base/${file}`);
  return WebModel.load(files, loadOptions);
}

/** Worst |logit − transformers| over both fixture sequences of the base model. */
async function baseLogitError(model, name) {
  const reference = readSafetensors(await bytes(`${name}/base_logits.safetensors`));
  let worst = 0;
  for (const i of [0, 1]) {
    const logits = await model.logits(Uint32Array.from(reference[`input_ids_${i}`].values), WebAdapter.base(model));
    worst = Math.max(worst, maxAbsDiff(logits, reference[`logits_${i}`].values));
  }
  return worst;
}

/** Base-model logits and tokenizer ids of each fixture model: worst errors per model. */
export async function baseModels() {
  await setup();
  const batches = JSON.parse(await text('batches.json'));
  const evalRows = (await text('data/eval.jsonl')).trim().split('\n').map((line) => JSON.parse(line));
  const results = {};
  for (const name of ['llama', 'qwen2', 'gpt2', 'qwen3', 'gemma3']) {
    const model = await loadModel(name);
    const logitError = await baseLogitError(model, name);
    const tokenMismatches = [];
    const check = (got, expected, what) => {
      if (JSON.stringify(Array.from(got)) !== JSON.stringify(expected)) tokenMismatches.push(`${what}: ${Array.from(got)} vs ${expected}`);
    };
    check(model.encode('Reverse: rhwf ->', false), [375, 27, 340, 73, 88, 71, 361], 'README example');
    evalRows.slice(0, 2).forEach((row, i) => {
      const ids = [...model.encode(row.prompt, false), ...model.encode(row.completion, false), 0];
      check(ids, batches.logit_sequences_ids[i], `eval row ${i}`);
    });
    results[name] = { logitError, tokenMismatches };
    model.free();
  }
  return results;
}

/**
 * Embedding tables split into row blocks (the binding limit lowered to `maxBindingBytes`): the
 * logits match transformers, and the load report says how the tables were split.
 */
export async function splitTables(names, maxBindingBytes) {
  await setup();
  const results = {};
  for (const name of names) {
    const model = await loadModel(name, { maxBindingBytes });
    results[name] = { logitError: await baseLogitError(model, name), weights: model.info().weights };
    model.free();
  }
  return results;
}

/** How `weightsDtype` resolves on this device for an F32 checkpoint: the report, or the error. */
export async function weightsDtype(dtype) {
  await setup();
  try {
    const model = await loadModel('llama', { weightsDtype: dtype });
    const weights = model.info().weights;
    model.free();
    return { weights };
  } catch (e) {
    return { error: { code: e.code, message: e.message } };
  }
}

/** Elementwise `|got − ref| / max(1, |ref|)` (worst) and `‖got − ref‖ / ‖ref‖`, as the native
 * tests' `gradient_error`: NaN anywhere gives NaN, an all-zero gradient against a non-zero
 * reference gives a relative norm of 1. */
function gradientError(got, expected) {
  if (got.length !== expected.length) throw new Error(`length ${got.length} vs ${expected.length}`);
  let scaled = 0;
  let diffSq = 0;
  let refSq = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - expected[i]);
    scaled = Number.isNaN(d) || Number.isNaN(scaled) ? NaN : Math.max(scaled, d / Math.max(1, Math.abs(expected[i])));
    diffSq += d * d;
    refSq += expected[i] * expected[i];
  }
  const relNorm = Number.isNaN(diffSq) || diffSq === 0 ? diffSq : refSq === 0 ? Infinity : Math.sqrt(diffSq / refSq);
  return { scaled, relNorm };
}

/** The option `method` and the export format of a fixture run's adapter. */
function runKind(method) {
  if (method === 'seq_bn' || method === 'double_seq_bn') return { method: method.replaceAll('_', '-'), format: 'adapterhub' };
  if (method.startsWith('prompt_tuning')) return { method: 'prompt-tuning', format: 'peft' };
  return { method: 'lora', format: 'peft' };
}

/** A fixture run (LoRA, DoRA, prompt tuning: `<name>/<method>`; AdapterHub bottleneck adapters:
 * `adapterhub/<name>/<method>`), 20 AdamW steps from the reference's initial adapter. */
export async function fixtureRun(name, method, loadOptions) {
  await setup();
  const model = await loadModel(name, loadOptions);
  const { method: optionMethod, format } = runKind(method);
  const dir = format === 'adapterhub' ? `adapterhub/${name}/${method}/` : `${name}/${method}/`;
  const weightsFile = format === 'adapterhub' ? 'adapter.safetensors' : 'adapter_model.safetensors';
  const reference = JSON.parse(await text(dir + 'losses.json'));
  const gradients = readSafetensors(await bytes(dir + 'grads.safetensors'));
  const expectedLogits = readSafetensors(await bytes(dir + 'expected_logits.safetensors'));
  const finalAdapter = readSafetensors(await bytes(dir + 'final/' + weightsFile));
  const initial = await WebAdapter.importFiles(model, {
    'adapter_config.json': await bytes(dir + 'initial/adapter_config.json'),
    [weightsFile]: await bytes(dir + 'initial/' + weightsFile),
  });
  const options = { method: optionMethod, lr: 1e-3, schedule: 'constant', clip: 0, steps: 20, batchSize: 4, shuffle: false, seed: 0, maxLen: 64 };
  const trainer = await WebTrainer.create(
    model, 'train.jsonl', await bytes('data/train.jsonl'), 'eval.jsonl', await bytes('data/eval.jsonl'), options, initial,
  );
  const errors = { loss: 0, gradient: 0, gradientScaled: 0, adapter: 0, logits: 0 };
  let gradientRelNorm = 0;
  const evalBefore = await trainer.evaluate();
  for (let step = 0; step < 20; step++) {
    if (step < 2) {
      const grads = await trainer.nextGradients();
      for (const [key, values] of Object.entries(grads)) {
        const expected = gradients[`step${step}.${key}`].values;
        errors.gradient = Math.max(errors.gradient, maxAbsDiff(values, expected));
        const { scaled, relNorm } = gradientError(values, expected);
        errors.gradientScaled = Math.max(errors.gradientScaled, scaled);
        gradientRelNorm = Number.isNaN(relNorm) ? NaN : Math.max(gradientRelNorm, relNorm);
      }
    }
    const metrics = await trainer.step();
    errors.loss = Math.max(errors.loss, Math.abs(metrics.loss - reference.train_loss[step]));
  }
  const adapter = trainer.adapter();
  const exported = await adapter.export(format, `fixtures/${name}/base`, true, undefined);
  const trained = readSafetensors(exported[weightsFile]);
  for (const [key, tensor] of Object.entries(finalAdapter)) {
    errors.adapter = Math.max(errors.adapter, maxAbsDiff(trained[key].values, tensor.values));
  }
  for (const i of [0, 1]) {
    const logits = await model.logits(Uint32Array.from(expectedLogits[`input_ids_${i}`].values), adapter);
    errors.logits = Math.max(errors.logits, maxAbsDiff(logits, expectedLogits[`logits_${i}`].values));
  }
  const evalAfter = await trainer.evaluate();
  return {
    errors,
    gradientRelNorm,
    evalBefore,
    evalAfter,
    expectedEval: [reference.eval_loss_initial, reference.eval_loss_final],
    exportedFiles: Object.keys(exported).sort(),
    info: adapter.info(),
    expectedTrainable: reference.n_trainable_params ?? null,
    weights: model.info().weights,
  };
}
