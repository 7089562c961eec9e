// The bundled demo shows learning: with the page's default settings for it, a run teaches the
// pretrained toy Llama the demo's new keyword ("Backwards: plant ->" → " tnalp"), and "Try it"
// then answers most evaluation prompts right where the base model answers few. The run first
// compiles its GPU kernels ("preparing GPU kernels"), before any step.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { WWW, openApp, pageSuite, section, trainButton, waitData, stat } from './page-fixtures/lib.mjs';

const suite = pageSuite();

const evalRows = fs.readFileSync(path.join(WWW, 'demo/eval.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

/** The answer is right when its first word is the expected completion. */
const right = (text, expected) => text.trim().split(/\s+/)[0] === expected.trim();

test('the default run on the demo teaches it: tuned answers right where the base is not', { timeout: 900_000 }, async () => {
  const page = (suite.page = await openApp(suite.browser, suite.server.url));
  assert.equal(evalRows.length, 16);
  const started = Date.now();
  await trainButton(page, 'Start training');
  // Before the first step the run's batch shapes are compiled, and the page says so.
  await waitData(page, 'trainState', ['warming'], 120_000);
  assert.match(await page.locator('#train-note').innerText(), /Preparing GPU kernels/);
  assert.equal(await page.evaluate(() => document.body.dataset.step), '0', 'no step runs while warming up');
  const end = await waitData(page, 'trainState', ['done', 'failed'], 800_000);
  assert.equal(end, 'done', await page.locator('#alerts').innerText());
  const seconds = (Date.now() - started) / 1000;
  const steps = await stat(page, 'Step');
  console.log(`default run: ${steps} steps in ${seconds.toFixed(1)} s`);

  const tryIt = section(page, 'Try it');
  assert.match(await tryIt.getByLabel('Prompt').inputValue(), /^Backwards: \w+ ->$/, 'Try it starts with a prompt of the demo task');
  assert.equal(await tryIt.getByLabel('Temperature').inputValue(), '0');
  let [base, tuned] = [0, 0];
  for (const row of evalRows) {
    await tryIt.getByLabel('Prompt').fill(row.prompt);
    await tryIt.getByRole('button', { name: 'Generate' }).click();
    assert.equal(await waitData(page, 'generate', ['done', 'failed'], 120_000), 'done', await page.locator('#alerts').innerText());
    const [b, t] = [await page.locator('#out-base').innerText(), await page.locator('#out-tuned').innerText()];
    base += right(b, row.completion);
    tuned += right(t, row.completion);
    console.log(`${row.prompt} expected ${JSON.stringify(row.completion)}: base ${JSON.stringify(b)}, tuned ${JSON.stringify(t)}`);
  }
  console.log(`right answers on the 16 eval prompts: base ${base}/16, tuned ${tuned}/16`);
  assert.ok(tuned >= 12, `the tuned model answers ${tuned}/16 right`);
  assert.ok(base <= 8, `the base model already answers ${base}/16 right: the demo would show no learning`);
  page.assertClean();
});
