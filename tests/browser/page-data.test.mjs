// Datasets on the page: a file with bad rows lists them with their line numbers, training refuses
// it with a plain message until the user chooses to skip them, then trains on the good rows; CSV
// and TXT files preview too.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';
import { PAGE_ROOT, FIXTURES, checkBuilt, openApp, waitData, setOption, alertsText, exportFile, readZip } from './page-fixtures/lib.mjs';

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
  await page.setInputFiles('#data-file', file);
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
  await setOption(page, 'steps', 2);
  await setOption(page, 'evalEvery', 2);
  await page.click('#train-start');
  await waitData(page, 'trainState', ['failed', 'running', 'done'], 120_000);
  const alert = page.locator('[data-alert-id="error-train"]');
  await alert.waitFor({ timeout: 60_000 });
  const text = await alert.innerText();
  assert.match(text, /^Line 4 of bad-rows\.jsonl cannot be used: invalid JSON/, text);
  assert.match(text, /Skip these rows and train on the good ones/);

  await page.check('#opt-skipBadRows');
  await page.click('#train-start');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  const report = await page.evaluate(() => window.webtunePage.state.trainer.report);
  assert.equal(report.trainExamples, 17);
  assert.deepEqual(report.train.badRows.map((b) => b.line), BAD_LINES);
  assert.match(await page.locator('#train-note').innerText(), /^Done after 2 steps/);
  assert.equal(await page.locator('[data-alert-id="error-train"]').count(), 0, 'the old error is gone');
  page.assertClean();
});

test('early stopping is announced and keeps the best adapter', { timeout: 600_000 }, async () => {
  // Patience 1 with a threshold no eval loss can beat: the second evaluation ends the run.
  await setOption(page, 'steps', 6);
  await setOption(page, 'evalEvery', 1);
  await setOption(page, 'earlyStoppingPatience', 1);
  await setOption(page, 'earlyStoppingThreshold', 10);
  await page.click('#train-start');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  assert.equal(await page.evaluate(() => window.webtunePage.state.trainer.stepsDone), 2);
  const alert = await page.locator('[data-alert-id="early-stop"]').innerText();
  assert.match(alert, /^Early stopping at step 2/);
  assert.match(alert, /best eval loss is kept/);
  assert.match(await page.locator('#train-note').innerText(), /^Done after 2 steps.*stopped early; the best adapter is kept/);
  await setOption(page, 'earlyStoppingPatience', '');
  await setOption(page, 'earlyStoppingThreshold', 0);
  page.assertClean();
});

test('every method trains from the settings form and exports: LoRA+PiSSA, prompt tuning', { timeout: 600_000 }, async () => {
  await page.click('#data-demo');
  await waitData(page, 'preview', ['ready'], 60_000);
  await page.check('#eval-mode-none');
  await setOption(page, 'steps', 1);
  await setOption(page, 'evalEvery', '');

  // LoRA with PiSSA init: the exported PEFT adapter is the plain rank-2r LoRA for the original base.
  await page.check('input[name="method"][value="pissa"]');
  assert.equal(await page.inputValue('#opt-init'), 'pissa_niter_4');
  await page.click('#train-start');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 300_000), 'done', await alertsText(page));
  assert.equal(await page.isVisible('#pissa-row'), true, 'the PiSSA export choice is offered');
  let zip = readZip((await exportFile(page, 'peft')).bytes);
  let config = JSON.parse(zip['adapter_config.json']);
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.r, 16, 'PiSSA exported as a rank-2r LoRA');
  assert.equal(await page.isEnabled('#export-gguf'), true);

  // Prompt tuning: its own learning rate default, no GGUF (llama.cpp has no such adapters).
  await page.check('input[name="method"][value="prompt-tuning"]');
  assert.equal(await page.inputValue('#opt-lr'), '0.03');
  assert.equal(await page.isVisible('[data-field="r"]'), false);
  assert.equal(await page.isVisible('[data-field="virtualTokens"]'), true);
  await page.selectOption('#opt-init', 'text');
  assert.equal(await page.isVisible('[data-field="initText"]'), true);
  await page.fill('#opt-initText', 'Reverse the word:');
  await page.click('#train-start');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 300_000), 'done', await alertsText(page));
  zip = readZip((await exportFile(page, 'peft')).bytes);
  config = JSON.parse(zip['adapter_config.json']);
  assert.equal(config.peft_type, 'PROMPT_TUNING');
  assert.equal(config.num_virtual_tokens, 8);
  assert.equal(config.prompt_tuning_init, 'TEXT');
  assert.equal(await page.isDisabled('#export-gguf'), true);

  await page.check('input[name="method"][value="lora"]');
  assert.equal(await page.inputValue('#opt-lr'), '0.01', 'the LoRA default comes back');
  page.assertClean();
});

test('CSV and TXT files preview with token statistics', { timeout: 180_000 }, async () => {
  const csv = path.join(tmp, 'reverse.csv');
  fs.writeFileSync(csv, 'prompt,completion\n"Reverse: abc ->", cba\n"Reverse: hello ->", olleh\n"Reverse: stone ->", enots\n');
  assert.equal(await pickData(csv), 'ready', await alertsText(page));
  assert.match(await page.locator('#data-pill').innerText(), /^3 rows$/);
  assert.match(await page.locator('#data-facts').innerText(), /tokens per row\s+10 – 12/i);
  assert.match(await page.locator('#data-preview li').first().innerText(), /Reverse: abc ->/);

  const txt = path.join(tmp, 'notes.txt');
  fs.writeFileSync(txt, 'The first paragraph of plain text.\n\nThe second paragraph, also plain.\n');
  assert.equal(await pickData(txt), 'ready', await alertsText(page));
  assert.match(await page.locator('#data-pill').innerText(), /^2 rows$/);
  assert.ok(await page.locator('#data-preview li mark.sup').count() >= 1, 'plain text is all supervised');
  page.assertClean();
});
