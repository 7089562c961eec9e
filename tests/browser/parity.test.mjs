// Issues 2, 3, 9 and 10 in Chromium over WebGPU (SwiftShader): the wasm build computes what
// transformers + PEFT (and AdapterHub) computed — base logits and token ids for every fixture
// model (Qwen3 and Gemma 3 included), the llama and Qwen3 LoRA runs, a llama DoRA run, AdapterHub
// bottleneck runs and a Gemma 3 prompt-tuning run with its embedding split into row blocks
// (losses, step-0/1 gradients elementwise and relative to their size, final adapter, final
// logits) within 1e-4; half-precision storage falls back to f32 where the GPU lacks shader-f16.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer } from './harness.mjs';

const TOLERANCE = 1e-4;
/** ‖gradient − reference‖ / ‖reference‖, as the native tests (`GRAD_REL_NORM_TOLERANCE`). */
const GRADIENT_REL_NORM_TOLERANCE = 1e-3;
const PEFT_FILES = ['README.md', 'adapter.zip', 'adapter_config.json', 'adapter_model.safetensors'];
let server;
let browser;
let page;
let shaderF16;

before(async () => {
  server = await startServer('.');
  browser = await launchBrowser();
  page = await openPage(browser, `${server.url}tests/browser/pages/blank.html`);
  const gpu = await page.evaluate(async () => (await import('/tests/browser/pages/parity.mjs')).setup());
  console.log(
    `GPU: ${gpu.name} (${gpu.backend}), max storage binding ${gpu.maxStorageBufferBindingSize}, shader-f16 ${gpu.shaderF16}`,
  );
  shaderF16 = gpu.shaderF16;
});

after(async () => {
  await page?.close();
  await browser?.close();
  await server?.close();
});

test('base logits and token ids match transformers in the browser', async () => {
  const results = await page.evaluate(async () => (await import('/tests/browser/pages/parity.mjs')).baseModels());
  for (const [name, { logitError, tokenMismatches }] of Object.entries(results)) {
    console.log(`${name}: max |logit - transformers| = ${logitError.toExponential(2)}`);
    assert.ok(logitError < TOLERANCE, `${name}: logits differ by ${logitError}`);
    assert.deepEqual(tokenMismatches, [], `${name}: token ids differ`);
  }
  page.assertClean();
});

/** Runs a fixture's 20 steps in the page and checks every figure against the reference's. */
async function fixtureRun(name, method, loadOptions, exportedFiles = PEFT_FILES) {
  const r = await page.evaluate(
    async ([name, method, loadOptions]) => (await import('/tests/browser/pages/parity.mjs')).fixtureRun(name, method, loadOptions),
    [name, method, loadOptions],
  );
  console.log(
    `${name}/${method} in Chromium (${JSON.stringify(r.weights.splitTables)} split): max |Δ| loss ${r.errors.loss.toExponential(2)}, ` +
      `gradients ${r.errors.gradient.toExponential(2)} (scaled ${r.errors.gradientScaled.toExponential(2)}, ` +
      `relative norm ${r.gradientRelNorm.toExponential(2)}), final adapter ${r.errors.adapter.toExponential(2)}, ` +
      `logits ${r.errors.logits.toExponential(2)}; eval ${r.evalBefore.toFixed(6)} -> ${r.evalAfter.toFixed(6)}`,
  );
  for (const [what, error] of Object.entries(r.errors)) {
    assert.ok(error < TOLERANCE, `${name}/${method}: ${what} differs from the reference by ${error}`);
  }
  assert.ok(
    r.gradientRelNorm <= GRADIENT_REL_NORM_TOLERANCE,
    `${name}/${method}: gradients differ by ${r.gradientRelNorm} of their norm`,
  );
  if (r.expectedTrainable !== null) assert.equal(r.info.trainableParameters, r.expectedTrainable);
  assert.ok(Math.abs(r.evalBefore - r.expectedEval[0]) < TOLERANCE);
  assert.ok(Math.abs(r.evalAfter - r.expectedEval[1]) < TOLERANCE);
  assert.deepEqual(r.exportedFiles, exportedFiles);
  page.assertClean();
  return r;
}

test('llama LoRA training matches PEFT in the browser', { timeout: 600_000 }, async () => {
  await fixtureRun('llama', 'lora');
});

test('llama DoRA training matches PEFT in the browser', { timeout: 600_000 }, async () => {
  const r = await fixtureRun('llama', 'dora');
  assert.equal(r.info.method, 'dora');
  assert.deepEqual(r.info.exportFormats, ['peft', 'merged']);
});

test('llama AdapterHub double_seq_bn training matches adapters in the browser', { timeout: 600_000 }, async () => {
  const r = await fixtureRun('llama', 'double_seq_bn', undefined, ['adapter.safetensors', 'adapter.zip', 'adapter_config.json']);
  assert.equal(r.info.method, 'double_seq_bn');
  assert.deepEqual(r.info.exportFormats, ['adapterhub']);
});

test('Qwen3 LoRA on all 7 linears matches PEFT in the browser', { timeout: 600_000 }, async () => {
  await fixtureRun('qwen3', 'lora');
});

test('embedding tables split into row blocks give the unsplit logits in the browser', async () => {
  // 50,000 bytes: the 512 × 64 f32 tables take 3 blocks (195 + 195 + 122 rows); all else fits.
  const results = await page.evaluate(
    async () => (await import('/tests/browser/pages/parity.mjs')).splitTables(['llama', 'qwen3', 'gemma3'], 50_000),
  );
  for (const [name, { logitError, weights }] of Object.entries(results)) {
    console.log(`${name} with split tables ${JSON.stringify(weights.splitTables)}: max |logit - transformers| = ${logitError.toExponential(2)}`);
    assert.deepEqual(weights.splitTables, [['model.embed_tokens.weight', 3]], name);
    assert.ok(logitError < TOLERANCE, `${name}: logits differ by ${logitError}`);
  }
  page.assertClean();
});

test('Gemma 3 prompt tuning through a split embedding matches PEFT in the browser', { timeout: 600_000 }, async () => {
  const r = await fixtureRun('gemma3', 'prompt_tuning_random', { maxBindingBytes: 50_000 });
  assert.deepEqual(r.weights.splitTables, [['model.embed_tokens.weight', 3]]);
});

test('half-precision storage needs shader-f16, and says what it used', async () => {
  const evaluate = (dtype) =>
    page.evaluate(async (dtype) => (await import('/tests/browser/pages/parity.mjs')).weightsDtype(dtype), dtype);
  const auto = await evaluate('auto');
  console.log(`auto on an F32 checkpoint: ${auto.weights.weightsDtype} (${auto.weights.reason})`);
  assert.equal(auto.weights.weightsDtype, 'f32');
  const forced = await evaluate('f16');
  if (shaderF16) {
    assert.equal(forced.weights.weightsDtype, 'f16');
  } else {
    console.log(`f16 without shader-f16: ${forced.error.code}: ${forced.error.message}`);
    assert.equal(forced.error?.code, 'INVALID_OPTIONS');
    assert.match(forced.error.message, /shader-f16/);
  }
  page.assertClean();
});
