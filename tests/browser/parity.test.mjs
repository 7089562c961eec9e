// Issues 2 and 3 in Chromium over WebGPU (SwiftShader): the wasm build computes what
// transformers + PEFT computed — base logits and token ids for every fixture model, and the
// llama LoRA run (losses, step-0/1 gradients, final adapter, final logits) within 1e-4.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer } from './harness.mjs';

const TOLERANCE = 1e-4;
let server;
let browser;
let page;

before(async () => {
  server = await startServer('.');
  browser = await launchBrowser();
  page = await openPage(browser, `${server.url}tests/browser/pages/blank.html`);
  const gpu = await page.evaluate(async () => (await import('/tests/browser/pages/parity.mjs')).setup());
  console.log(`GPU: ${gpu.name} (${gpu.backend}), max storage binding ${gpu.max_storage_buffer_binding_size}`);
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

test('llama LoRA training matches PEFT in the browser', { timeout: 600_000 }, async () => {
  const r = await page.evaluate(async () => (await import('/tests/browser/pages/parity.mjs')).llamaLora());
  console.log(
    `llama/lora in Chromium: max |Δ| loss ${r.errors.loss.toExponential(2)}, gradients ${r.errors.gradient.toExponential(2)}, ` +
      `final adapter ${r.errors.adapter.toExponential(2)}, logits ${r.errors.logits.toExponential(2)}; eval ${r.evalBefore.toFixed(6)} -> ${r.evalAfter.toFixed(6)}`,
  );
  for (const [what, error] of Object.entries(r.errors)) {
    assert.ok(error < TOLERANCE, `${what} differs from PEFT by ${error}`);
  }
  assert.ok(Math.abs(r.evalBefore - r.expectedEval[0]) < TOLERANCE);
  assert.ok(Math.abs(r.evalAfter - r.expectedEval[1]) < TOLERANCE);
  assert.deepEqual(r.exportedFiles, ['README.md', 'adapter.zip', 'adapter_config.json', 'adapter_model.safetensors']);
  page.assertClean();
});
