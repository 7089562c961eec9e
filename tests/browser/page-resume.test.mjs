// Checkpoints in browser storage: reload the page in the middle of training, resume, and reach the
// same adapter as an uninterrupted run of the same settings. After the run, a reload offers to
// restore the finished adapter.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser } from './harness.mjs';
import { PAGE_ROOT, checkBuilt, openApp, waitReady, waitData, setOption, exportFile, trainToEnd, readZip, readSafetensors, maxAbsDiff } from './page-fixtures/lib.mjs';

const STEPS = 4;

let server;
let browser;
let reference;

before(async () => {
  checkBuilt();
  server = await startServer(PAGE_ROOT);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function configure(page) {
  await setOption(page, 'steps', STEPS);
  await setOption(page, 'evalEvery', STEPS);
  await setOption(page, 'checkpointEvery', 1);
}

function adapterTensors(file) {
  return readSafetensors(readZip(file.bytes)['adapter_model.safetensors']);
}

test('an uninterrupted run (the reference)', { timeout: 600_000 }, async () => {
  const page = await openApp(browser, server.url);
  await configure(page);
  await trainToEnd(page);
  reference = adapterTensors(await exportFile(page, 'peft'));
  page.assertClean();
  await page.close();
});

test('reload mid-training, resume from the checkpoint, reach the same adapter', { timeout: 900_000 }, async () => {
  assert.ok(reference, 'the reference run failed');
  const page = await openApp(browser, server.url);
  await configure(page);
  await page.click('#train-start');
  await page.waitForFunction(() => Number(document.body.dataset.checkpointStep ?? 0) >= 2, null, { timeout: 300_000 });
  const saved = Number(await page.evaluate(() => document.body.dataset.checkpointStep));
  assert.ok(saved < STEPS, `checkpoint at ${saved}`);

  // A reload kills the worker mid-run (like a crash); the checkpoint survives in IndexedDB.
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  assert.equal(await waitData(page, 'savedRun', ['unfinished', 'finished', 'none'], 60_000), 'unfinished');
  const banner = page.locator('[data-alert-id="resume"]');
  const text = await banner.innerText();
  assert.match(text, /Unfinished training found: step \d+ of 4 is saved/);
  const resumeStep = Number(text.match(/step (\d+) of/)[1]);
  assert.ok(resumeStep >= saved && resumeStep < STEPS, `offered step ${resumeStep}, saved ${saved}`);
  assert.match(text, /webtune demo/);

  await banner.getByRole('button', { name: `Resume from step ${resumeStep}` }).click();
  await waitData(page, 'trainState', ['running', 'done', 'failed'], 120_000);
  // The chart continues from the saved history.
  const history = await page.evaluate(() => window.webtunePage.state.metrics.map((m) => m.step));
  assert.ok(history.includes(0) && history.includes(resumeStep), `metrics after resume: ${history}`);
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await page.locator('#alerts').innerText());
  const steps = (await page.evaluate(() => window.webtunePage.state.metrics)).filter((m) => Number.isFinite(m.loss)).map((m) => m.step);
  assert.deepEqual(steps, [1, 2, 3, 4], 'each step once in the history');

  const resumed = adapterTensors(await exportFile(page, 'peft'));
  const names = Object.keys(reference).filter((n) => n !== '__metadata__').sort();
  assert.deepEqual(Object.keys(resumed).filter((n) => n !== '__metadata__').sort(), names);
  let worst = 0;
  for (const n of names) worst = Math.max(worst, maxAbsDiff(resumed[n].data, reference[n].data));
  console.log(`resumed vs uninterrupted adapter: max |diff| = ${worst}`);
  assert.ok(worst <= 1e-6, `the resumed adapter differs by ${worst}`);
  page.assertClean();

  // After the run, a reload offers the finished adapter; restoring it enables export again.
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  assert.equal(await waitData(page, 'savedRun', ['unfinished', 'finished', 'none'], 60_000), 'finished');
  await page.locator('[data-alert-id="resume"]').getByRole('button', { name: 'Restore the adapter' }).click();
  await page.waitForFunction(() => !document.querySelector('#export-peft').disabled, null, { timeout: 120_000 });
  const restored = adapterTensors(await exportFile(page, 'peft'));
  let diff = 0;
  for (const n of names) diff = Math.max(diff, maxAbsDiff(restored[n].data, reference[n].data));
  assert.ok(diff <= 1e-6, `the restored adapter differs by ${diff}`);
  page.assertClean();
  await page.close();
});
