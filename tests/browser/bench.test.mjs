// A training benchmark in Chromium (SwiftShader WebGPU here): the npm engine on the page's main
// thread trains the bundled demo Llama (4 layers, LoRA r 8 on q/k/v/o, batch 4) and prints, per
// step, what it asked of WebGPU (tests/browser/webgpu-counters.mjs) with wall and host
// milliseconds, then a summary line of JSON. Figures only: nothing here asserts a speed.
//
//   BENCH_STEPS=16 node --test tests/browser/bench.test.mjs
//
// Needs www/webtune (scripts/build-wasm.sh && scripts/build-npm.sh).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, startServer } from './harness.mjs';
import { countersDelta, installWebGpuCounters } from './webgpu-counters.mjs';

const STEPS = Number(process.env.BENCH_STEPS || 16);
let server;
let browser;

before(async () => {
  server = await startServer('.');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

test('training steps of the demo model, counted at the WebGPU API', { timeout: 1_800_000 }, async () => {
  const page = await openPage(browser, `${server.url}tests/browser/pages/blank.html`, { goto: false });
  await page.addInitScript(installWebGpuCounters);
  await page.goto(`${server.url}tests/browser/pages/blank.html`, { waitUntil: 'load' });
  const run = await page.evaluate(async (steps) => {
    const { createEngine, demo } = await import('/www/webtune/index.js');
    const snapshot = () => globalThis.webgpuCounters.snapshot();
    const engine = await createEngine();
    await engine.loadModel(demo.model);
    const config = { steps, lr: 1e-3, batchSize: 4, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] };
    const trainer = await engine.createTrainer({ data: demo.train, config });
    const warmStart = performance.now();
    const shapesWarmed = await trainer.warmUp();
    const warmUpMs = performance.now() - warmStart;
    const marks = [snapshot()];
    const losses = [];
    await trainer.train({
      onProgress: (m) => {
        marks.push(snapshot());
        losses.push(m.loss);
      },
    });
    return { gpu: engine.gpu, marks, losses, shapesWarmed, warmUpMs };
  }, STEPS);
  const steps = run.marks.slice(1).map((mark, i) => ({ step: i + 1, ...countersDelta(run.marks[i], mark), loss: run.losses[i] }));
  console.log(`GPU: ${run.gpu.name} (${run.gpu.backend})`);
  for (const s of steps) console.log(JSON.stringify(s));
  const later = steps.slice(1);
  const summary = {
    bench: 'browser_lora_step',
    gpu: run.gpu.name,
    model: 'demo llama (4 layers), LoRA r 8 q/k/v/o, batch 4',
    steps: steps.length,
    shapes_warmed: run.shapesWarmed,
    warm_up_ms: Math.round(run.warmUpMs),
    first_step_wall_ms: steps[0].wallMs,
    median_wall_ms: median(later.map((s) => s.wallMs)),
    max_wall_ms_after_first: Math.max(...later.map((s) => s.wallMs)),
    median_host_ms: median(later.map((s) => s.hostMs)),
    median_dispatches: median(later.map((s) => s.dispatches)),
    median_submits: median(later.map((s) => s.submits)),
    median_buffer_creations: median(later.map((s) => s.bufferCreations)),
    steps_with_new_pipelines: later.filter((s) => s.pipelines > 0).length,
  };
  console.log(JSON.stringify(summary));
  assert.equal(steps.length, STEPS);
  assert.ok(steps.every((s) => Number.isFinite(s.loss) && s.dispatches > 0), 'every step trained on the GPU');
  page.assertClean();
  await page.close();
});
