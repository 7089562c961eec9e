// Failures in plain words that keep the user's work: every engine error code has an explanation
// with what to do; no WebGPU names the browsers and the flag; unusable model files are explained;
// a full browser storage warns while training goes on; the CSP blocks requests to other origins.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, openPage } from './harness.mjs';
import { WWW, PAGE_ROOT, checkBuilt, openApp, waitData, setOption, alertsText } from './page-fixtures/lib.mjs';

// www/js/errors.js is a browser module without DOM use; imported as source so that node does not
// guess its module type from the nearest package.json.
const { explain } = await import(`data:text/javascript,${encodeURIComponent(fs.readFileSync(path.join(WWW, 'js/errors.js'), 'utf8'))}`);

const CODES = ['NO_WEBGPU', 'FILE_MISSING', 'IO', 'INVALID_CONFIG', 'UNSUPPORTED_ARCHITECTURE', 'CORRUPT_WEIGHTS', 'MISSING_TENSOR',
  'SHAPE_MISMATCH', 'INVALID_TOKENIZER', 'INVALID_DATASET', 'INVALID_ADAPTER', 'INVALID_OPTIONS', 'GPU', 'DOWNLOAD', 'ENGINE_DISPOSED',
  'WORKER', 'WASM', 'NO_MODEL', 'NO_ADAPTER', 'INVALID_STATE'];

let server;
let browser;
let tmp;

before(async () => {
  checkBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-page-failures-'));
  server = await startServer(PAGE_ROOT);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('every engine error code has a plain explanation and an action', () => {
  for (const code of CODES) {
    const e = explain(Object.assign(new Error(`engine said something (${code})`), { code }), 'model');
    assert.ok(e.title && !/[A-Z]+_[A-Z]+/.test(e.title), `${code}: title ${e.title}`);
    assert.ok(e.action.length > 20, `${code}: action ${e.action}`);
    assert.match(e.detail, /engine said something/);
  }
  const gpu = (message, context) => explain(Object.assign(new Error(message), { code: 'GPU' }), context);
  assert.match(gpu('requestAdapter() returned null', 'engine').title, /refused/);
  assert.match(gpu('Device lost: unknown', 'train').action, /checkpoint is safe/);
  assert.match(gpu('Out of memory while allocating a buffer', 'train').title, /out of memory/);
  assert.match(gpu('Out of memory while allocating a buffer', 'train').action, /checkpoint is safe/);
  assert.match(gpu('Buffer binding size 2147483648 exceeds the max storage buffer binding size', 'train').title, /limits are too small/);
  const refused = explain({ code: 'NO_WEBGPU', message: 'this browser has WebGPU but no usable GPU adapter (the GPU may be blocklisted, or hardware acceleration is off).' });
  assert.match(refused.title, /refused to give this page a GPU adapter/);
  assert.match(refused.action, /hardware acceleration/);
  const row = explain(Object.assign(new Error('data.jsonl:12: invalid JSON: expected value (column 3)'), { code: 'INVALID_DATASET' }), 'data');
  assert.equal(row.title, 'Line 12 of data.jsonl cannot be used: invalid JSON: expected value (column 3)');
  const quota = Object.assign(new Error('The quota has been exceeded.'), { name: 'QuotaExceededError' });
  assert.match(explain(quota, 'checkpoint').title, /storage is full/);
  assert.match(explain(quota, 'checkpoint').action, /training continues/);
  assert.match(explain({ code: 'NO_WEBGPU', message: 'x' }).action, /enable-unsafe-webgpu/);
});

test('no WebGPU: the page says which browsers and which flag', { timeout: 120_000 }, async () => {
  const page = await openPage(browser, server.url, { goto: false });
  await page.addInitScript(() => {
    delete Navigator.prototype.gpu;
  });
  await page.goto(server.url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.engine), 'failed');
  const text = await alertsText(page);
  assert.match(text, /This browser has no WebGPU/);
  assert.match(text, /Chrome or Edge 113/);
  assert.match(text, /--enable-unsafe-webgpu/);
  assert.match(await page.locator('#gpu-chip').innerText(), /no WebGPU/);
  assert.equal(await page.isDisabled('#train-start'), true);
  page.assertClean();
  await page.close();
});

test('unusable model files are explained, and the loaded model stays usable', { timeout: 240_000 }, async () => {
  const page = await openApp(browser, server.url);
  await page.click('#tab-files');

  const bert = path.join(tmp, 'bert');
  fs.mkdirSync(bert);
  fs.writeFileSync(path.join(bert, 'config.json'), JSON.stringify({ model_type: 'bert', architectures: ['BertModel'], vocab_size: 512, hidden_size: 64 }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) fs.copyFileSync(path.join(WWW, 'demo', f), path.join(bert, f));
  await page.setInputFiles('#model-files', ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map((f) => path.join(bert, f)));
  assert.equal(await waitData(page, 'model', ['failed', 'loaded'], 120_000), 'failed');
  let text = await page.locator('[data-alert-id="error-model"]').innerText();
  assert.match(text, /not supported|config\.json cannot be used/, text);

  await page.evaluate(() => { document.body.dataset.model = 'waiting'; });
  await page.setInputFiles('#model-files', ['config.json', 'model.safetensors'].map((f) => path.join(WWW, 'demo', f)));
  assert.equal(await waitData(page, 'model', ['failed', 'loaded'], 120_000), 'failed');
  text = await page.locator('[data-alert-id="error-model"]').innerText();
  assert.match(text, /A file the model needs is missing|tokenizer/i, text);

  // The page still works with a model (reloading the demo is one click).
  await page.click('#tab-demo');
  await page.click('#demo-load');
  await waitData(page, 'model', ['loaded'], 120_000);

  // Settings whose biggest buffer exceeds the GPU's limits are flagged before training.
  assert.doesNotMatch(await page.locator('#memory-estimate').getAttribute('class'), /warn/);
  await setOption(page, 'batchSize', 65536);
  await page.waitForFunction(() => document.getElementById('memory-estimate').classList.contains('warn'), null, { timeout: 10_000 });
  assert.match(await page.locator('#memory-estimate').innerText(), /Will not fit: its largest buffer \(.+\) is over this GPU’s limit of .+ per binding: lower the batch size or max length/);
  await setOption(page, 'batchSize', 4);
  page.assertClean();
  await page.close();
});

test('storage full: the checkpoint is not saved, the user is told, training goes on', { timeout: 600_000 }, async () => {
  const page = await openApp(browser, server.url, { goto: false });
  await page.addInitScript(() => {
    const put = IDBObjectStore.prototype.put;
    IDBObjectStore.prototype.put = function (value, key) {
      if (value && value.checkpoint) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      return put.call(this, value, key);
    };
  });
  await page.goto(server.url, { waitUntil: 'load' });
  await waitData(page, 'ready', ['true'], 180_000);
  await waitData(page, 'preview', ['ready'], 120_000);
  await setOption(page, 'steps', 2);
  await setOption(page, 'evalEvery', 2);
  await setOption(page, 'checkpointEvery', 1);
  await page.click('#train-start');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  const text = await alertsText(page);
  assert.match(text, /Browser storage is full/);
  assert.match(text, /training continues/);
  assert.match(await page.locator('#checkpoint-status').innerText(), /could not be saved/);
  page.assertClean();
  await page.close();
});

test('the Content-Security-Policy blocks requests to other origins', { timeout: 120_000 }, async () => {
  const page = await openApp(browser, server.url);
  const result = await page.evaluate(async () => {
    try {
      await fetch('https://example.com/leak');
      return 'sent';
    } catch (e) {
      return `blocked: ${e.message}`;
    }
  });
  assert.match(result, /^blocked/);
  // The browser refused it before any network activity (a CSP report in the console, no request).
  assert.ok(!page.requests.some((u) => u.startsWith('https://example.com')), page.requests.join('\n'));
  assert.ok(page.consoleLog.some((l) => /Content Security Policy/.test(l)), page.consoleLog.join('\n'));

  // The same holds inside the engine's worker (started from a blob: URL, so it inherits the policy).
  const workers = page.workers();
  assert.equal(workers.length, 1, `workers: ${workers.map((w) => w.url()).join(', ')}`);
  assert.match(workers[0].url(), /^blob:/);
  const fromWorker = await workers[0].evaluate(async () => {
    try {
      await fetch('https://example.com/leak-from-worker');
      return 'sent';
    } catch (e) {
      return `blocked: ${e.message}`;
    }
  });
  assert.match(fromWorker, /^blocked/);
  assert.ok(!page.requests.some((u) => u.startsWith('https://example.com')), page.requests.join('\n'));

  // The model source form refuses hosts other than the hub and the page's own server (the engine
  // fetches from its worker, which the page's meta CSP does not cover).
  await page.click('#tab-hub');
  for (const [id, base] of [['some/model', 'https://models.example.com'], ['https://example.com/some/model/', 'https://huggingface.co']]) {
    await page.fill('#hub-id', id);
    await page.fill('#hub-base', base);
    await page.click('#hub-load');
    const text = await page.locator('[data-alert-id="error-model"]').innerText();
    assert.match(text, /This model source cannot be used/);
    assert.match(text, /only downloads from the Hugging Face hub \(huggingface\.co\) and from its own server/);
    await page.locator('[data-alert-id="error-model"] .alert-close').click();
  }
  assert.ok(!page.requests.some((u) => /example\.com/.test(u) && !u.includes('/leak')), page.requests.join('\n'));
  await page.close();
});
