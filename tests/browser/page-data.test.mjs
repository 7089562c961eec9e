// Datasets on the page: a file with bad rows lists them with their line numbers, training refuses
// it with a plain message until the user chooses to skip them, then trains on the good rows; CSV
// and TXT files preview too.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';
import {
  PAGE_ROOT, FIXTURES, checkBuilt, openApp, waitData, section, setOption, trainButton, stepsDone, alert, alertsText, exportFile, readZip,
} from './page-fixtures/lib.mjs';

const BAD_LINES = [4, 9, 15];

let server;
let browser;
let page;
let tmp;

before(async () => {
  checkBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-page-data-'));
  server = await startServer(PAGE_ROOT);
  browser = await launchBrowser();
  page = await openApp(browser, server.url);
});

after(async () => {
  await page?.close().catch(() => {});
  await browser?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function pickData(file) {
  await page.evaluate(() => { document.body.dataset.preview = 'waiting'; });
  await section(page, 'Data').getByLabel('Choose a file…').setInputFiles(file);
  return waitData(page, 'preview', ['ready', 'failed'], 120_000);
}

test('bad rows are listed with their line numbers', { timeout: 180_000 }, async () => {
  assert.equal(await pickData(path.join(FIXTURES, 'bad-rows.jsonl')), 'ready', await alertsText(page));
  assert.equal(await page.isVisible('#bad-rows'), true);
  const items = await page.locator('#bad-rows-list li').allInnerTexts();
  assert.deepEqual(items.map((t) => Number(t.match(/^Line (\d+):/)?.[1])), BAD_LINES, items.join('\n'));
  assert.match(await page.locator('#bad-rows-title').innerText(), /^3 rows cannot be used/);
  assert.match(await page.locator('#data-pill').innerText(), /17 rows · 3 bad/);
  assert.match(await page.locator('#skip-bad-label').innerText(), /Skip these 3 rows and train on the 17 good ones/);
  // The preview marks the bad row in place.
  const badPreview = page.locator('#data-preview li.bad');
  assert.ok(await badPreview.count() >= 1);
  assert.match(await badPreview.first().innerText(), /line 4/);
  page.assertClean();
});

test('training refuses bad rows in plain words, then trains on the good rows when chosen', { timeout: 600_000 }, async () => {
  await setOption(page, 'Steps', 2);
  await setOption(page, 'Evaluate every (steps)', 2);
  await trainButton(page, 'Start training');
  await waitData(page, 'trainState', ['failed', 'running', 'done'], 120_000);
  const error = alert(page, 'error-train');
  await error.waitFor({ timeout: 60_000 });
  const text = await error.innerText();
  assert.match(text, /^Line 4 of bad-rows\.jsonl cannot be used: invalid JSON/, text);
  assert.match(text, /Skip these rows and train on the good ones/);

  await section(page, 'Data').getByLabel(/^Skip these 3 rows/).check();
  const notes = [];
  await page.exposeFunction('__trainNote', (t) => notes.push(t));
  await page.evaluate(() => {
    const note = document.getElementById('train-note');
    new MutationObserver(() => window.__trainNote(note.textContent)).observe(note, { childList: true, characterData: true, subtree: true });
  });
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  const started = notes.find((t) => t.startsWith('Training on'));
  assert.match(started ?? notes.join(' | '), /^Training on 17 training examples, 16 evaluation examples \(3 bad rows skipped: lines 4, 9, 15\): 2 steps\./);
  assert.match(await page.locator('#train-note').innerText(), /^Done after 2 steps/);
  assert.equal(await alert(page, 'error-train').count(), 0, 'the old error is gone');
  page.assertClean();
});

test('early stopping is announced and keeps the best adapter', { timeout: 600_000 }, async () => {
  // Patience 1 with a threshold no eval loss can beat: the second evaluation ends the run.
  await setOption(page, 'Steps', 6);
  await setOption(page, 'Evaluate every (steps)', 1);
  await setOption(page, 'Early-stopping patience', 1);
  await setOption(page, 'Early-stopping threshold', 10);
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  assert.equal(await stepsDone(page), 2);
  const text = await alert(page, 'early-stop').innerText();
  assert.match(text, /^Early stopping at step 2/);
  assert.match(text, /best eval loss is kept/);
  assert.match(await page.locator('#train-note').innerText(), /^Done after 2 steps.*stopped early; the best adapter is kept/);
  await setOption(page, 'Early-stopping patience', '');
  await setOption(page, 'Early-stopping threshold', 0);
  page.assertClean();
});

test('every method trains from the settings form and exports: LoRA+PiSSA, prompt tuning', { timeout: 600_000 }, async () => {
  const settings = section(page, 'Settings');
  await page.evaluate(() => { document.body.dataset.preview = 'waiting'; });
  await section(page, 'Data').getByRole('button', { name: 'Use the demo data' }).click();
  await waitData(page, 'preview', ['ready'], 60_000);
  await section(page, 'Data').getByLabel('No evaluation').check();
  await setOption(page, 'Steps', 1);
  await setOption(page, 'Evaluate every (steps)', '');

  // LoRA with PiSSA init: the exported PEFT adapter is the plain rank-2r LoRA for the original base.
  await settings.getByRole('radio', { name: 'LoRA, PiSSA init' }).check();
  assert.equal(await settings.getByLabel('Initialisation').inputValue(), 'pissa_niter_4');
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 300_000), 'done', await alertsText(page));
  assert.equal(await section(page, 'Export').getByLabel('Write PiSSA as a plain LoRA for the original base model').isVisible(), true, 'the PiSSA export choice is offered');
  let zip = readZip((await exportFile(page, 'peft')).bytes);
  let config = JSON.parse(zip['adapter_config.json']);
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.r, 16, 'PiSSA exported as a rank-2r LoRA');
  const gguf = section(page, 'Export').getByRole('button', { name: 'Download GGUF LoRA' });
  assert.equal(await gguf.isEnabled(), true);

  // Prompt tuning: its own learning rate default, no GGUF (llama.cpp has no such adapters).
  await settings.getByRole('radio', { name: 'Prompt tuning' }).check();
  assert.equal(await settings.getByLabel('Learning rate').inputValue(), '0.03');
  assert.equal(await settings.getByLabel('Rank r').isVisible(), false);
  assert.equal(await settings.getByLabel('Virtual tokens').isVisible(), true);
  await settings.getByLabel('Initialisation').selectOption('text');
  assert.equal(await settings.getByLabel('Init text').isVisible(), true);
  await settings.getByLabel('Init text').fill('Reverse the word:');
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 300_000), 'done', await alertsText(page));
  zip = readZip((await exportFile(page, 'peft')).bytes);
  config = JSON.parse(zip['adapter_config.json']);
  assert.equal(config.peft_type, 'PROMPT_TUNING');
  assert.equal(config.num_virtual_tokens, 8);
  assert.equal(config.prompt_tuning_init, 'TEXT');
  assert.equal(await gguf.isDisabled(), true);

  await settings.getByRole('radio', { name: 'LoRA', exact: true }).check();
  assert.equal(await settings.getByLabel('Learning rate').inputValue(), '0.01', 'the LoRA default comes back');
  page.assertClean();
});

test('CSV and TXT files preview with token statistics', { timeout: 180_000 }, async () => {
  const csv = path.join(tmp, 'reverse.csv');
  fs.writeFileSync(csv, 'prompt,completion\n"Reverse: abc ->", cba\n"Reverse: hello ->", olleh\n"Reverse: stone ->", enots\n');
  assert.equal(await pickData(csv), 'ready', await alertsText(page));
  assert.match(await page.locator('#data-pill').innerText(), /^3 rows$/);
  assert.match(await page.locator('#data-facts').innerText(), /tokens per row\s+20 – 24/i);
  assert.match(await page.locator('#data-preview li').first().innerText(), /Reverse: abc ->/);

  const txt = path.join(tmp, 'notes.txt');
  fs.writeFileSync(txt, 'The first paragraph of plain text.\n\nThe second paragraph, also plain.\n');
  assert.equal(await pickData(txt), 'ready', await alertsText(page));
  assert.match(await page.locator('#data-pill').innerText(), /^2 rows$/);
  assert.ok(await page.locator('#data-preview li mark.sup').count() >= 1, 'plain text is all supervised');
  page.assertClean();
});
