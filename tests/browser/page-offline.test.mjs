// The page offline: after one visit its service worker (www/sw.js) has the page, the engine and
// the demo in a cache of this build; with the server gone, a reload still starts, trains the demo
// and exports the adapter. A new build (a new www/offline-manifest.js) replaces that cache.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';
import { ROOT, PAGE_ROOT, checkBuilt, openApp, waitReady, waitData, setOption, trainButton, exportFile, readZip, alertsText } from './page-fixtures/lib.mjs';

let tmp;
let site;
let server;
let browser;
let page;

/** The version the site's offline manifest names. */
function manifestVersion() {
  return fs.readFileSync(path.join(site, 'offline-manifest.js'), 'utf8').match(/"version": "([0-9a-f]+)"/)[1];
}

/** The page's caches of the app (not the package's model cache). */
function appCaches() {
  return page.evaluate(async () => (await caches.keys()).filter((k) => k.startsWith('webtune-app-')));
}

/** Requests that fail because the server is gone are expected; the service worker answers them. */
function forgetOfflineFailures() {
  const expected = (e) => /ERR_CONNECTION_REFUSED|ERR_INTERNET_DISCONNECTED|ERR_FAILED/.test(e) || /Failed to load resource/.test(e);
  console.log(`expected while the server is gone: ${page.errors.filter(expected).join(' | ') || 'none'}`);
  page.errors.splice(0, page.errors.length, ...page.errors.filter((e) => !expected(e)));
}

before(async () => {
  checkBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-page-offline-'));
  site = path.join(tmp, 'site');
  fs.cpSync(PAGE_ROOT, site, { recursive: true, dereference: true });
  server = await startServer(site);
  browser = await launchBrowser();
});

after(async () => {
  await page?.close().catch(() => {});
  await browser?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('after one visit the page works offline: it reloads, trains the demo and exports', { timeout: 600_000 }, async () => {
  page = await openApp(browser, server.url);
  await page.getByText('Works offline').waitFor({ timeout: 120_000 });
  assert.deepEqual(await appCaches(), [`webtune-app-${manifestVersion()}`]);

  await server.close();
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  assert.equal(await page.locator('#model-pill').innerText(), 'loaded');
  await setOption(page, 'Steps', 2);
  await setOption(page, 'Evaluate every (steps)', 2);
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 600_000), 'done', await alertsText(page));
  const zip = readZip((await exportFile(page, 'peft')).bytes);
  assert.deepEqual(Object.keys(zip).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  forgetOfflineFailures();
  page.assertClean();
});

test('a new build replaces the cache of the old one', { timeout: 300_000 }, async () => {
  const old = manifestVersion();
  // "A new build": a changed package file and its new manifest.
  fs.appendFileSync(path.join(site, 'webtune/index.js'), '\n// a new build\n');
  const r = await import('node:child_process').then((cp) => cp.spawnSync('node', [path.join(ROOT, 'scripts/offline-manifest.mjs'), site], { encoding: 'utf8' }));
  assert.equal(r.status, 0, r.stderr);
  const next = manifestVersion();
  assert.notEqual(next, old);

  server = await startServer(site, { port: new URL(page.url()).port });
  // The browser checks the service worker on navigation and installs the new one.
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  const deadline = Date.now() + 120_000;
  while (JSON.stringify(await appCaches()) !== JSON.stringify([`webtune-app-${next}`])) {
    assert.ok(Date.now() < deadline, `caches: ${await appCaches()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const cached = await page.evaluate(async (v) => {
    const cache = await caches.open(`webtune-app-${v}`);
    return (await cache.match(new URL('webtune/index.js', location.href).href))?.text();
  }, next);
  assert.match(cached, /\/\/ a new build/);

  // Offline again: the new build's files come from the new cache.
  await server.close();
  await page.reload({ waitUntil: 'load' });
  await waitReady(page);
  const served = await page.evaluate(async () => (await fetch('webtune/index.js')).text());
  assert.match(served, /\/\/ a new build/);
  forgetOfflineFailures();
  page.assertClean();
});
