// Checkpoints in browser storage: reload the page in the middle of training, resume, and reach the
// same adapter as an uninterrupted run of the same settings. After the run, a reload offers to
// restore the finished adapter.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, screenshot } from './harness.mjs';
import {
  PAGE_ROOT, checkBuilt, openApp, waitReady, waitData, setOption, trainButton, alert, exportFile, lossHistory, trainToEnd, readZip, readSafetensors,
  maxAbsDiff,
} from './page-fixtures/lib.mjs';

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
  await setOption(page, 'Steps', STEPS);
  await setOption(page, 'Evaluate every (steps)', STEPS);
  await setOption(page, 'Checkpoint every (steps)', 1);
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
  await trainButton(page, 'Start training');
  await page.waitForFunction(() => Number(document.body.dataset.checkpointStep ?? 0) >= 2, null, { timeout: 300_000 });
  const saved = Number(await page.evaluate(() => document.body.dataset.checkpointStep));
  assert.ok(saved < STEPS, `checkpoint at ${saved}`);

  // A reload kills the worker mid-run (like a crash); the checkpoint survives in IndexedDB.
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  assert.equal(await waitData(page, 'savedRun', ['unfinished', 'finished', 'none'], 60_000), 'unfinished');
  const banner = alert(page, 'resume');
  const text = await banner.innerText();
  assert.match(text, /Unfinished training found: step \d+ of 4 is saved/);
  const resumeStep = Number(text.match(/step (\d+) of/)[1]);
  assert.ok(resumeStep >= saved && resumeStep < STEPS, `offered step ${resumeStep}, saved ${saved}`);
  assert.match(text, /webtune demo/);

  await banner.getByRole('button', { name: `Resume from step ${resumeStep}` }).click();
  await waitData(page, 'trainState', ['running', 'done', 'failed'], 120_000);
  // The chart continues from the saved history.
  const history = (await lossHistory(page)).map((m) => m.step);
  assert.ok(history.includes(0) && history.includes(resumeStep), `metrics after resume: ${history}`);
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await page.locator('#alerts').innerText());
  const steps = (await lossHistory(page)).filter((m) => Number.isFinite(m.loss)).map((m) => m.step);
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
  await alert(page, 'resume').getByRole('button', { name: 'Restore the adapter' }).click();
  await page.waitForFunction(() => !document.querySelector('#export-peft').disabled, null, { timeout: 120_000 });
  const restored = adapterTensors(await exportFile(page, 'peft'));
  let diff = 0;
  for (const n of names) diff = Math.max(diff, maxAbsDiff(restored[n].data, reference[n].data));
  assert.ok(diff <= 1e-6, `the restored adapter differs by ${diff}`);
  page.assertClean();
  await page.close();
});

/** Every alert title the page shows from now on. */
async function recordAlerts(page) {
  const titles = [];
  await page.exposeFunction('__alertTitle', (t) => titles.push(t));
  await page.evaluate(() => {
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) window.__alertTitle(n.querySelector?.('.alert-title')?.textContent ?? '');
    }).observe(document.getElementById('alerts'), { childList: true });
  });
  return titles;
}

/** The run of the reload test, resumed from the checkpoint the banner offers, to its end. */
async function resumeAndCompare(page, expectedStep) {
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  const banner = alert(page, 'resume');
  assert.match(await banner.innerText(), new RegExp(`Unfinished training found: step ${expectedStep} of ${STEPS} is saved`));
  await banner.getByRole('button', { name: `Resume from step ${expectedStep}` }).click();
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await page.locator('#alerts').innerText());
  const steps = (await lossHistory(page)).filter((m) => Number.isFinite(m.loss)).map((m) => m.step);
  assert.deepEqual(steps, [1, 2, 3, 4], 'each step once in the history');
  const resumed = adapterTensors(await exportFile(page, 'peft'));
  let worst = 0;
  for (const n of Object.keys(reference).filter((k) => k !== '__metadata__')) worst = Math.max(worst, maxAbsDiff(resumed[n].data, reference[n].data));
  return worst;
}

test('a failed checkpoint write (storage full; the tab closing mid-write) keeps the previous checkpoint, which resumes to the same adapter', { timeout: 900_000 }, async () => {
  assert.ok(reference, 'the reference run failed');
  const page = await openApp(browser, server.url, { goto: false });
  // From step 3 on, every checkpoint's transaction aborts after its put: first as the browser does
  // when storage is full (transaction.error QuotaExceededError, through onabort), then as when the
  // tab closes during the write (an abort without an error). Only for the first visit.
  await page.addInitScript(() => {
    if (sessionStorage.getItem('webtune-test-writes') === 'done') return;
    const put = IDBObjectStore.prototype.put;
    IDBObjectStore.prototype.put = function (value, key) {
      const request = put.call(this, value, key);
      if (value?.checkpoint && value.step >= 3) {
        if (value.step === 3) Object.defineProperty(this.transaction, 'error', { value: new DOMException('The quota has been exceeded.', 'QuotaExceededError') });
        this.transaction.abort();
      }
      return request;
    };
  });
  await page.goto(server.url, { waitUntil: 'load' });
  await waitReady(page);
  const titles = await recordAlerts(page);
  await configure(page);
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await page.locator('#alerts').innerText());
  console.log(`alerts: ${titles.join(' | ')}`);
  assert.ok(titles.includes('Browser storage is full.'), titles.join(' | '));
  assert.ok(titles.includes('Browser storage did not save this.'), titles.join(' | '));
  assert.match(await alert(page, 'error-checkpoint').innerText(), /previous checkpoint is kept/);
  assert.match(await page.locator('#checkpoint-status').innerText(), /could not be saved; the checkpoint of step 2 is kept/);
  assert.equal(await page.evaluate(() => document.body.dataset.checkpointStep), '2');

  await page.evaluate(() => sessionStorage.setItem('webtune-test-writes', 'done'));
  const worst = await resumeAndCompare(page, 2);
  console.log(`resumed from the kept checkpoint vs uninterrupted adapter: max |diff| = ${worst}`);
  assert.ok(worst <= 1e-6, `the resumed adapter differs by ${worst}`);
  page.assertClean();
  await page.close();
});

test('the GPU device lost mid-training: the page says so, the checkpoint is intact, one click resumes on a new device', { timeout: 900_000 }, async () => {
  assert.ok(reference, 'the reference run failed');
  const page = await openApp(browser, server.url, { goto: false });
  // The engine's worker keeps every GPU device it gets, so that the test can destroy them.
  await page.context().route('**/webtune/worker.js', async (route) => {
    const response = await route.fetch();
    const keep = 'const requestDevice = GPUAdapter.prototype.requestDevice;\n' +
      'GPUAdapter.prototype.requestDevice = async function (...args) { const d = await requestDevice.apply(this, args); (self.__testDevices ??= []).push(d); return d; };\n';
    await route.fulfill({ response, body: keep + (await response.text()) });
  });
  await page.goto(server.url, { waitUntil: 'load' });
  await waitReady(page);
  await configure(page);
  await trainButton(page, 'Start training');
  await page.waitForFunction(() => Number(document.body.dataset.checkpointStep ?? 0) >= 2, null, { timeout: 300_000 });
  const [worker] = page.workers();
  const destroyed = await worker.evaluate(() => {
    for (const d of self.__testDevices ?? []) d.destroy();
    return self.__testDevices?.length ?? 0;
  });
  assert.equal(destroyed, 1, 'the engine has one GPU device');

  const error = alert(page, 'error-train');
  await error.waitFor({ timeout: 120_000 });
  const text = await error.innerText();
  assert.match(text, /^The GPU device was lost\./, text);
  assert.match(text, /checkpoint is safe in browser storage/);
  const kept = Number((await page.locator('#train-note').innerText()).match(/The checkpoint of step (\d+) is kept/)?.[1]);
  assert.ok(kept >= 2 && kept < STEPS, await page.locator('#train-note').innerText());
  assert.equal(await waitData(page, 'trainState', ['failed'], 60_000), 'failed');
  await screenshot(page, 'page-device-lost', { fullPage: false });

  await error.getByRole('button', { name: 'Resume on a new GPU device' }).click();
  // A new engine starts, loads the model and resumes: the run leaves "failed", then ends.
  await waitData(page, 'trainState', ['starting', 'running', 'finishing', 'done'], 300_000);
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await page.locator('#alerts').innerText());
  assert.equal(page.workers().length, 1, 'the old worker ended');
  const steps = (await lossHistory(page)).filter((m) => Number.isFinite(m.loss)).map((m) => m.step);
  assert.deepEqual(steps, [1, 2, 3, 4], 'each step once in the history');
  const resumed = adapterTensors(await exportFile(page, 'peft'));
  let worst = 0;
  for (const n of Object.keys(reference).filter((k) => k !== '__metadata__')) worst = Math.max(worst, maxAbsDiff(resumed[n].data, reference[n].data));
  console.log(`resumed on a new device from step ${kept} vs uninterrupted adapter: max |diff| = ${worst}`);
  assert.ok(worst <= 1e-6, `the adapter differs by ${worst}`);
  page.assertClean();
  await page.close();
});
