// Failures in plain words that keep the user's work: every engine error code has an explanation
// with what to do; no WebGPU names the browsers and the flag; unusable model files are explained;
// a model too large for the GPU's limits is refused before it is loaded; a full browser storage
// warns while training goes on; the CSP blocks requests to other origins.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, openPage, screenshot } from './harness.mjs';
import { WWW, PAGE_ROOT, checkBuilt, openApp, waitData, section, setOption, trainButton, alert, alertsText } from './page-fixtures/lib.mjs';

// www/js/errors.js is a browser module without DOM use; imported as source so that node does not
// guess its module type from the nearest package.json.
const { explain } = await import(`data:text/javascript,${encodeURIComponent(fs.readFileSync(path.join(WWW, 'js/errors.js'), 'utf8'))}`);

// Every code of the package's ErrorCode (npm/src/index.d.ts) but ABORTED (a cancellation needs no
// explanation), and the page's storage codes (www/js/store.js).
const declared = fs.readFileSync(path.join(WWW, '../npm/src/index.d.ts'), 'utf8').match(/export type ErrorCode =([\s\S]*?);\n/)[1];
const CODES = [...[...declared.matchAll(/\| "([A-Z_]+)"/g)].map((m) => m[1]).filter((c) => c !== 'ABORTED'), 'QUOTA', 'STORAGE'];

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

test('every engine error code has a plain explanation and an action, chosen by the code alone', () => {
  for (const code of CODES) {
    const e = explain(Object.assign(new Error(`engine said something (${code})`), { code }), 'model');
    assert.ok(e.title && !/[A-Z]+_[A-Z]+/.test(e.title), `${code}: title ${e.title}`);
    assert.ok(e.action.length > 20, `${code}: action ${e.action}`);
    assert.match(`${e.action} ${e.detail}`, /engine said something/);
  }
  const gpu = (context) => explain(Object.assign(new Error('Out of memory while allocating a buffer'), { code: 'GPU' }), context);
  assert.match(gpu('engine').title, /refused/);
  assert.match(gpu('model').title, /too large for this GPU/);
  assert.match(gpu('train').title, /out of memory or hit one of its limits/);
  assert.match(gpu('train').action, /checkpoint is safe/);
  const lost = explain({ code: 'DEVICE_LOST', message: 'the GPU device was lost (destroyed)' }, 'train');
  assert.equal(lost.title, 'The GPU device was lost.');
  assert.match(lost.action, /checkpoint is safe.*Resume on a new GPU device/);
  // The same message means nothing without its code: messages are shown, never parsed.
  assert.equal(explain(new Error('Device lost: out of memory, quota exceeded'), 'train').title, 'Something went wrong.');
  const help = 'this browser has WebGPU but no usable GPU adapter (the GPU may be blocklisted, or hardware acceleration is off). webtune needs WebGPU: Chrome or Edge 113+';
  const refused = explain({ code: 'NO_WEBGPU', message: help }, 'engine', { webgpu: true, secure: true });
  assert.match(refused.title, /refused to give this page a GPU adapter/);
  assert.match(refused.action, /hardware acceleration/);
  assert.match(explain({ code: 'NO_WEBGPU', message: help }, 'engine', { webgpu: false }).title, /This browser has no WebGPU/);
  assert.match(explain({ code: 'NO_WEBGPU', message: help }, 'engine', { secure: false }).title, /secure page/);
  assert.equal(explain(Object.assign(new Error('data.jsonl:12: invalid JSON'), { code: 'INVALID_DATASET' }), 'data').title, 'A row of the dataset cannot be used.');
  const quota = Object.assign(new Error('The quota has been exceeded.'), { name: 'QuotaExceededError' });
  assert.match(explain(quota, 'checkpoint').title, /storage is full/);
  assert.match(explain(quota, 'checkpoint').action, /training continues/);
  const aborted = explain({ code: 'STORAGE', message: 'the write to browser storage was aborted' }, 'checkpoint');
  assert.match(aborted.action, /previous checkpoint is kept/);
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
  await page.getByRole('tab', { name: 'Your files' }).click();
  const pickFiles = section(page, 'Model').getByLabel('Choose files…');

  const bert = path.join(tmp, 'bert');
  fs.mkdirSync(bert);
  fs.writeFileSync(path.join(bert, 'config.json'), JSON.stringify({ model_type: 'bert', architectures: ['BertModel'], vocab_size: 512, hidden_size: 64 }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) fs.copyFileSync(path.join(WWW, 'demo', f), path.join(bert, f));
  await pickFiles.setInputFiles(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map((f) => path.join(bert, f)));
  assert.equal(await waitData(page, 'model', ['failed', 'loaded'], 120_000), 'failed');
  let text = await alert(page, 'error-model').innerText();
  assert.match(text, /not supported|config\.json cannot be used/, text);

  await page.evaluate(() => { document.body.dataset.model = 'waiting'; });
  await pickFiles.setInputFiles(['config.json', 'model.safetensors'].map((f) => path.join(WWW, 'demo', f)));
  assert.equal(await waitData(page, 'model', ['failed', 'loaded'], 120_000), 'failed');
  text = await alert(page, 'error-model').innerText();
  assert.match(text, /A file the model needs is missing|tokenizer/i, text);

  // The page still works with a model (reloading the demo is one click).
  await page.getByRole('tab', { name: 'Demo' }).click();
  await page.getByRole('button', { name: 'Load the demo model and data' }).click();
  await waitData(page, 'model', ['loaded'], 120_000);

  // Settings whose biggest buffer exceeds the GPU's limits are flagged before training.
  const estimate = section(page, 'Settings').getByRole('status');
  assert.doesNotMatch(await estimate.getAttribute('class'), /warn/);
  await setOption(page, 'Batch size', 65536);
  await page.waitForFunction(() => document.getElementById('memory-estimate').classList.contains('warn'), null, { timeout: 10_000 });
  assert.match(await estimate.innerText(), /Will not fit: its largest buffer \(.+\) is over this GPU’s limit of .+ per binding: lower the batch size or max length/);
  await setOption(page, 'Batch size', 4);
  page.assertClean();
  await page.close();
});

/** "1 GiB", "128 MiB", "1.5 GiB" (the page's binaryBytes) as a number of bytes. */
function parseBinary(text) {
  const [, n, unit] = text.match(/([\d.]+) (B|KiB|MiB|GiB|TiB)/);
  return Number(n) * 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(unit);
}

/**
 * A one-layer Llama whose embedding is over `limit` bytes as f32, in a sparse file: its header is
 * real, its weights are holes (no disk used), so only a reader of the header sees it cheaply.
 */
function writeHugeModel(dir, limit) {
  const hidden = 1024;
  const vocab = Math.ceil(limit / (4 * hidden)) + 4096;
  fs.mkdirSync(dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(WWW, 'demo/config.json'), 'utf8'));
  Object.assign(config, { vocab_size: vocab, hidden_size: hidden, intermediate_size: 2816, num_hidden_layers: 1, num_attention_heads: 16, num_key_value_heads: 16, head_dim: 64 });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(WWW, 'demo', f), path.join(dir, f));
  const shapes = {
    'model.embed_tokens.weight': [vocab, hidden],
    'model.layers.0.input_layernorm.weight': [hidden],
    'model.layers.0.post_attention_layernorm.weight': [hidden],
    'model.layers.0.self_attn.q_proj.weight': [hidden, hidden],
    'model.layers.0.self_attn.k_proj.weight': [hidden, hidden],
    'model.layers.0.self_attn.v_proj.weight': [hidden, hidden],
    'model.layers.0.self_attn.o_proj.weight': [hidden, hidden],
    'model.layers.0.mlp.gate_proj.weight': [2816, hidden],
    'model.layers.0.mlp.up_proj.weight': [2816, hidden],
    'model.layers.0.mlp.down_proj.weight': [hidden, 2816],
    'model.norm.weight': [hidden],
  };
  const header = {};
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const size = 4 * shape.reduce((a, d) => a * d, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length));
  head.write(json, 8);
  const file = path.join(dir, 'model.safetensors');
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, head);
  fs.ftruncateSync(fd, head.length + offset);
  fs.closeSync(fd);
  return { vocab, bytes: head.length + offset };
}

test('a model too large for the GPU’s limits is refused before it is loaded, and the loaded model stays', { timeout: 240_000 }, async () => {
  const page = await openApp(browser, server.url);
  const limit = Math.min(...(await page.locator('#gpu-chip').innerText()).match(/max buffer (.+), max storage binding (.+)$/).slice(1).map(parseBinary));
  const dir = path.join(tmp, 'huge-llama');
  const huge = writeHugeModel(dir, limit);
  console.log(`GPU buffer limit ${limit} bytes; model.safetensors of ${huge.bytes} bytes (sparse), vocabulary ${huge.vocab}`);
  await page.getByRole('tab', { name: 'Your files' }).click();
  await section(page, 'Model').getByLabel('Choose files…').setInputFiles(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map((f) => path.join(dir, f)));
  assert.equal(await waitData(page, 'model', ['failed', 'loaded'], 120_000), 'failed');
  const text = await alert(page, 'error-model').innerText();
  await screenshot(page, 'page-model-too-large', { fullPage: false });
  assert.match(text, /^This model is too large for this GPU\./, text);
  assert.match(text, /Choose a smaller model/);
  assert.match(text, /model\.embed_tokens\.weight in model\.safetensors \(\d+ × 1024\) needs [\d.]+ GiB as f32, over the GPU's limit of [\d.]+ GiB per buffer/);
  // The demo model is still loaded and usable.
  assert.equal(await page.locator('#model-pill').innerText(), 'loaded');
  assert.match(await page.locator('#model-facts').innerText(), /webtune demo/);
  assert.equal(await section(page, 'Train').getByRole('button', { name: 'Start training' }).isEnabled(), true);
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
  await setOption(page, 'Steps', 2);
  await setOption(page, 'Evaluate every (steps)', 2);
  await setOption(page, 'Checkpoint every (steps)', 1);
  await trainButton(page, 'Start training');
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
  await page.getByRole('tab', { name: 'Hugging Face hub' }).click();
  const model = section(page, 'Model');
  for (const [id, base] of [['some/model', 'https://models.example.com'], ['https://example.com/some/model/', 'https://huggingface.co']]) {
    await model.getByLabel('Model id or URL').fill(id);
    await model.getByLabel('Hub address').fill(base);
    await model.getByRole('button', { name: 'Download and load' }).click();
    const text = await alert(page, 'error-model').innerText();
    assert.match(text, /This model source cannot be used/);
    assert.match(text, /only downloads from the Hugging Face hub \(huggingface\.co\) and from its own server/);
    await alert(page, 'error-model').getByRole('button', { name: 'Dismiss' }).click();
  }
  assert.ok(!page.requests.some((u) => /example\.com/.test(u) && !u.includes('/leak')), page.requests.join('\n'));
  await page.close();
});
