// engine.bench() and the page's GPU section: a training step measured where it runs, counted at
// the WebGPU API and by the core. The figures are printed; the test asserts what must hold
// whatever the speed: the API sees every kernel of the passes and the optimizer, the core
// launches only the few outside the recorded passes a step replays (or, not replaying, exactly
// what the API sees), the warm-up leaves no pipeline to compile, and the step's kernels split
// into the passes' and the optimizer's.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openPage, startServer } from './harness.mjs';
import { openApp, pageSuite, section, waitData } from './page-fixtures/lib.mjs';

const suite = pageSuite();
/** The repository root, for the package on a blank page (the main-thread engine). */
let root;
before(async () => {
  root = await startServer('.');
});
after(async () => {
  await root?.close();
});

test('engine.bench() counts each step at the WebGPU API and in the core', { timeout: 600_000 }, async () => {
  const page = await openPage(suite.browser, `${root.url}tests/browser/pages/blank.html`);
  const results = await page.evaluate(async () => {
    const { createEngine, demo } = await import('/www/webtune/index.js');
    const engine = await createEngine();
    /** @param {unknown} options */
    const refusal = (options) => engine.bench(options).then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    const noModel = await refusal({});
    // A preset's shape needs no model (the page's second button measures SmolLM2-135M's; its
    // 49,152-id head takes minutes a step on a software GPU, so only the refusals run here).
    const unknownShape = await refusal({ shape: 'gpt-5' });
    const misspelt = await refusal({ shape: 'smollm2-135m', seq_len: 16 });
    await engine.loadModel(demo.model);
    const model = await engine.bench({ seqLen: 32, steps: 3 });
    const issued = await engine.bench({ seqLen: 32, steps: 2, replay: false });
    engine.dispose();
    return { model, issued, refusals: { noModel, unknownShape, misspelt } };
  });
  console.log(JSON.stringify(results.refusals));
  assert.match(results.refusals.noModel, /^NO_MODEL: /);
  assert.match(results.refusals.unknownShape, /^INVALID_OPTIONS: .*gpt-5.*smollm2-135m/);
  assert.match(results.refusals.misspelt, /^INVALID_OPTIONS: .*seq_len/);
  const r = results.model;
  console.log(JSON.stringify({ ...r, estimate: undefined }));
  const kernels = r.gradientDispatches + r.optimizerDispatches;
  for (const s of r.steps) {
    assert.ok(Number.isFinite(s.loss), `step ${s.step}: loss ${s.loss}`);
    assert.ok(s.replayed, `step ${s.step} replayed its recorded passes`);
    assert.ok(s.dispatches >= kernels, `step ${s.step}: the API saw ${s.dispatches} of the step's ${kernels} kernels`);
    assert.ok(s.coreDispatches <= 8, `step ${s.step}: the core launched ${s.coreDispatches} kernels itself`);
    assert.equal(s.pipelines, 0, `step ${s.step}: the warm-up compiled every pipeline`);
    assert.ok(s.submits > 0 && s.hostMs >= 0 && s.wallMs >= s.hostMs, `step ${s.step}: ${JSON.stringify(s)}`);
  }
  console.log(JSON.stringify({ ...results.issued, estimate: undefined }));
  for (const s of results.issued.steps) {
    assert.ok(!s.replayed && Number.isFinite(s.loss), `step ${s.step}: ${JSON.stringify(s)}`);
    assert.equal(s.dispatches, s.coreDispatches, `step ${s.step}: the API saw the core's kernels`);
  }
  assert.ok(r.shapesWarmed >= 1);
  assert.ok(r.dispatchesPerLayer > 0 && r.optimizerDispatches > 0, `${r.dispatchesPerLayer} per layer, ${r.optimizerDispatches} optimizer`);
  assert.equal(r.gradientDispatches, r.layers * r.dispatchesPerLayer + r.dispatchesOutsideLayers);
  assert.equal(results.model.layers, 4);
  assert.equal(results.model.steps.length, 3);
  page.assertClean();
  await page.close();
});

test('the page measures a training step in its GPU section', { timeout: 600_000 }, async () => {
  const page = (suite.page = await openApp(suite.browser, suite.server.url));
  const gpu = section(page, 'GPU');
  await gpu.getByRole('button', { name: 'Measure the loaded model' }).click();
  assert.equal(await waitData(page, 'bench', ['done', 'failed'], 300_000), 'done', await page.locator('#alerts').innerText());
  const rows = await gpu.locator('table tbody tr').allInnerTexts();
  console.log(rows.join('\n'));
  assert.equal(rows.length, 3, 'three timed steps');
  const header = await gpu.locator('table thead th').allInnerTexts();
  const column = (name) => rows.map((r) => Number(r.split('\t')[header.indexOf(name)]));
  assert.ok(column('Dispatches').every((d) => d > 0));
  assert.deepEqual(column('Pipelines compiled'), [0, 0, 0]);
  assert.match(await gpu.locator('#bench-stats').innerText(), /Dispatches per layer\s*\d+/i);
  assert.match(await page.locator('#bench-status').innerText(), /Median step: \d+ dispatches/);
  page.assertClean();
});
