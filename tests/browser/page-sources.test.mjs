// Model sources of the page: a local folder (sharded safetensors) by the folder picker, loose files
// by drag and drop, and a Hugging Face hub-layout tree (`<base>/<id>/resolve/main/...`) served by
// the test server on the page's own origin, which a reload then reads from the browser-storage
// cache without downloading again.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';
import { WWW, PAGE_ROOT, checkBuilt, openApp, waitReady, section, alert, alertsText, readSafetensors, writeSafetensors } from './page-fixtures/lib.mjs';

const HUB_ID = 'webtune-test/tiny-llama';
const HUB_SHARDED = 'webtune-test/tiny-llama-sharded';
const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'];

let tmp;
let server;
let browser;
let shardedDir;

/** The demo model with its weights split into two shards and an index, like big hub models. */
function writeShardedModel(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const demo = path.join(WWW, 'demo');
  for (const f of MODEL_FILES) if (fs.existsSync(path.join(demo, f))) fs.copyFileSync(path.join(demo, f), path.join(dir, f));
  const tensors = readSafetensors(fs.readFileSync(path.join(demo, 'model.safetensors')));
  delete tensors.__metadata__;
  const names = Object.keys(tensors).sort();
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap = {};
  let total = 0;
  shards.forEach((list, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const part = {};
    for (const n of list) {
      part[n] = tensors[n];
      weightMap[n] = file;
      total += tensors[n].data.byteLength;
    }
    fs.writeFileSync(path.join(dir, file), writeSafetensors(part, { format: 'pt' }));
  });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
}

before(async () => {
  checkBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-page-sources-'));
  // The page plus a hub-like tree on the same origin (the page's CSP allows only its own origin
  // and the real hub).
  const root = path.join(tmp, 'site');
  fs.cpSync(PAGE_ROOT, root, { recursive: true, dereference: true });
  const single = path.join(root, 'hub', HUB_ID, 'resolve', 'main');
  fs.mkdirSync(single, { recursive: true });
  for (const f of [...MODEL_FILES, 'model.safetensors']) {
    if (fs.existsSync(path.join(WWW, 'demo', f))) fs.copyFileSync(path.join(WWW, 'demo', f), path.join(single, f));
  }
  writeShardedModel(path.join(root, 'hub', HUB_SHARDED, 'resolve', 'main'));
  shardedDir = path.join(tmp, 'local', 'tiny-llama-sharded');
  writeShardedModel(shardedDir);
  server = await startServer(root);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Waits until step 1 names the model `name`, or fails with the page's error. */
async function waitModel(page, name) {
  const facts = section(page, 'Model').getByRole('definition').filter({ hasText: name });
  await facts.or(alert(page, 'error-model')).first().waitFor({ timeout: 180_000 });
  if (!(await facts.count())) throw new Error(`model load failed: ${await alertsText(page)}`);
}

test('a local model folder with sharded safetensors, by the folder picker', { timeout: 300_000 }, async () => {
  const page = await openApp(browser, server.url);
  await page.getByRole('tab', { name: 'Your files' }).click();
  await section(page, 'Model').getByLabel('Choose a folder…').setInputFiles(shardedDir);
  await waitModel(page, 'tiny-llama-sharded');
  const facts = await page.locator('#model-facts').innerText();
  assert.match(facts, /tiny-llama-sharded/);
  assert.match(facts, /771 K/);
  assert.equal(await page.locator('#model-pill').innerText(), 'loaded');
  // Loaded from disk: nothing was requested for it.
  assert.ok(!page.requests.some((u) => /safetensors/.test(u) && !/\/demo\//.test(u)), page.requests.join('\n'));
  // The demo data preview is re-tokenised with the new model's tokenizer.
  await page.waitForFunction(() => document.body.dataset.preview === 'ready', null, { timeout: 60_000 });
  page.assertClean();
  await page.close();
});

test('model files dropped on the drop zone', { timeout: 300_000 }, async () => {
  const page = await openApp(browser, server.url);
  await page.getByRole('tab', { name: 'Your files' }).click();
  await page.evaluate(async (names) => {
    const dt = new DataTransfer();
    for (const name of names) {
      const res = await fetch(`demo/${name}`);
      dt.items.add(new File([await res.blob()], name));
    }
    const zone = document.getElementById('model-drop');
    zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  await waitModel(page, 'local model');
  assert.match(await page.locator('#model-facts').innerText(), /local model/);
  page.assertClean();
  await page.close();
});

/** Loads `id` from the test server's hub tree through the Hugging Face tab. */
async function loadFromHub(page, id) {
  const model = section(page, 'Model');
  await page.getByRole('tab', { name: 'Hugging Face hub' }).click();
  await model.getByLabel('Model id or URL').fill(id);
  await model.getByLabel('Hub address').fill(`${server.origin}/hub`);
  assert.equal(await model.getByLabel(/^Keep the files in browser storage/).isChecked(), true, 'caching is on by default');
  await model.getByRole('button', { name: 'Download and load' }).click();
  await waitModel(page, id);
}

test('a hub-layout URL: download with progress, then a reload reads the browser cache', { timeout: 300_000 }, async () => {
  const page = await openApp(browser, server.url);
  const progress = [];
  await page.exposeFunction('__progress', (t) => progress.push(t));
  await page.evaluate(() => {
    new MutationObserver(() => window.__progress(document.getElementById('model-progress-text').textContent))
      .observe(document.getElementById('model-progress-text'), { childList: true, characterData: true, subtree: true });
  });
  const first = server.requests.length;
  await loadFromHub(page, HUB_ID);
  const base = `/hub/${HUB_ID}/resolve/main/`;
  const fetched = server.requests.slice(first).filter((u) => u.startsWith('/hub/'));
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
    assert.ok(fetched.includes(base + f), `${base + f} was not fetched: ${fetched.join(', ')}`);
  }
  assert.ok(progress.some((t) => /^Downloading/.test(t)), `progress texts: ${progress.join(' | ')}`);
  assert.equal(await page.evaluate(() => document.body.dataset.modelSource), 'download');
  assert.equal(await page.locator('#model-pill').innerText(), 'loaded');
  page.assertClean();

  // Reload: the same id comes from browser storage; the server sees no request for it.
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  const second = server.requests.length;
  await loadFromHub(page, HUB_ID);
  const again = server.requests.slice(second).filter((u) => u.startsWith('/hub/'));
  assert.deepEqual(again, [], `requests after the reload: ${again.join(', ')}`);
  assert.equal(await page.evaluate(() => document.body.dataset.modelSource), 'cache');
  assert.equal(await page.locator('#model-pill').innerText(), 'loaded from browser storage');
  page.assertClean();
  await page.close();
});

test('a sharded hub model: the index and every shard are downloaded, then cached', { timeout: 300_000 }, async () => {
  const page = await openApp(browser, server.url);
  const first = server.requests.length;
  await loadFromHub(page, HUB_SHARDED);
  const base = `/hub/${HUB_SHARDED}/resolve/main/`;
  const fetched = server.requests.slice(first).filter((u) => u.startsWith('/hub/'));
  for (const f of ['config.json', 'tokenizer.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    assert.ok(fetched.includes(base + f), `${base + f} was not fetched: ${fetched.join(', ')}`);
  }
  page.assertClean();

  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  const second = server.requests.length;
  await loadFromHub(page, HUB_SHARDED);
  const again = server.requests.slice(second).filter((u) => u.startsWith('/hub/'));
  // Everything comes from the cache, with no probe for the (absent) single-file weights either,
  // so a reload of a sharded model works offline.
  assert.deepEqual(again, [], `requests after the reload: ${again.join(', ')}`);
  assert.equal(await page.evaluate(() => document.body.dataset.modelSource), 'cache');
  page.assertClean();
  await page.close();
});
