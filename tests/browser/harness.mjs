// Shared helpers for the browser tests in tests/browser/*.test.mjs.
//
// Run with node's built-in test runner:  npm run test:browser
// (= node --test --test-concurrency=1 tests/browser/*.test.mjs; the shell expands the glob,
// because Node 22+ no longer accepts a directory there). This file is not a test itself.
//
// The browser is the system Chromium (Debian package `chromium`, installed by scripts/setup.sh),
// driven by playwright-core; Playwright's own browser downloads are never used.
// Environment:
//   CHROMIUM_PATH   browser executable (default /usr/bin/chromium)
//   CHROMIUM_ARGS   extra command-line switches, space separated (e.g. "--use-webgpu-adapter=swiftshader")
//   SCREENSHOT_DIR  where screenshot() writes PNGs (default target/screenshots)

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { createServer } from '../../scripts/serve.mjs';

/**
 * Starts the static server of scripts/serve.mjs (same MIME types, COOP/COEP and no-cache headers)
 * on 127.0.0.1, on an ephemeral port unless `options.port` names one (to serve the same origin
 * again after close()).
 * Returns { url, origin, port, requests, close() }: `url` ends with '/', `requests` is the list
 * of every request path (req.url, e.g. '/pkg/webtune_bg.wasm') the server saw, in order.
 */
export async function startServer(root = 'www', options = {}) {
  const requests = [];
  const server = createServer(root, { onRequest: (req) => requests.push(req.url) });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/`,
    origin,
    port,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// Switches passed to Chromium, on top of Playwright's defaults. Playwright already adds
// --no-sandbox (needed as root in CI), --headless (= the "new" headless mode in current
// Chromium), --disable-background-networking, --disable-component-update, --disable-sync,
// --no-first-run, --disable-dev-shm-usage and a fresh temporary --user-data-dir per launch
// (deleted again on close), so none of those are repeated here.
//
// Verified on Debian 12 with chromium 156 and no GPU: without any extra switch
// navigator.gpu exists but requestAdapter() resolves to null ("No available adapters"), because
// the only adapter is the CPU one (SwiftShader Vulkan, shipped in chromium-common as
// libvk_swiftshader.so) and that is blocklisted for WebGPU by default.
// --enable-unsafe-webgpu alone is enough to get it (vendor "google", architecture "swiftshader",
// isFallbackAdapter true, maxStorageBufferBindingSize 1 GiB). --enable-features=Vulkan,
// --use-angle=swiftshader, --use-webgpu-adapter=swiftshader, --use-vulkan=native and
// --ignore-gpu-blocklist made no difference there and are left out (so that a machine with a real
// GPU uses it); --disable-quic etc. are unnecessary, the tests only talk to 127.0.0.1.
export const CHROMIUM_ARGS = [
  // Lift the WebGPU blocklist (software/fallback adapters, Linux), so requestAdapter() returns the
  // SwiftShader adapter on a GPU-less machine.
  '--enable-unsafe-webgpu',
];

/** Launches headless system Chromium with WebGPU enabled. Close it with `await browser.close()`. */
export async function launchBrowser(options = {}) {
  const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Error(`${executablePath} not found: run scripts/setup.sh (installs the Debian chromium package) or set CHROMIUM_PATH`);
  }
  const extra = (process.env.CHROMIUM_ARGS || '').split(/\s+/).filter(Boolean);
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extra, ...(options.args ?? [])],
    timeout: options.timeout ?? 60_000,
  });
}

function originOf(url) {
  try {
    return new URL(url).origin; // blob:http://host/uuid -> http://host
  } catch {
    return 'null';
  }
}

// The browser asks for /favicon.ico on its own; a 404 for it is not an error of the page.
function isFaviconNoise(msg) {
  const url = msg.location()?.url ?? '';
  return /\/favicon\.ico(\?|$)/.test(url);
}

/**
 * Opens `url` in a new browser context (fresh cookies/storage) and returns the page, extended with:
 *   page.requests       every request URL the page (and its workers) made, in order
 *   page.errors         console errors, uncaught page errors and failed requests, as strings
 *   page.consoleLog     every console message as "type: text"
 *   page.assertClean()  throws if a request went to an origin outside `allowedOrigins`
 *                       (default: the origin of `url`) or if page.errors is not empty
 * Console messages are forwarded to stdout prefixed with "[page]". Closing the page also closes
 * its context. `options.goto` (default true): navigate and wait for 'load' before returning.
 */
export async function openPage(browser, url, options = {}) {
  const allowedOrigins = new Set(options.allowedOrigins ?? [originOf(url)]);
  const context = await browser.newContext(options.contextOptions ?? {});
  const page = await context.newPage();
  page.on('close', () => context.close().catch(() => {}));

  const requests = [];
  const errors = [];
  const consoleLog = [];
  page.requests = requests;
  page.errors = errors;
  page.consoleLog = consoleLog;

  // Context-level events also cover dedicated workers of the page.
  context.on('request', (req) => requests.push(req.url()));
  context.on('requestfailed', (req) => {
    const failure = req.failure()?.errorText ?? 'failed';
    // ERR_ABORTED: a navigation or fetch cancelled on purpose (e.g. page closed); not an error.
    if (failure.includes('ERR_ABORTED')) return;
    if (/\/favicon\.ico(\?|$)/.test(req.url())) return;
    errors.push(`requestfailed: ${req.url()} (${failure})`);
  });
  context.on('console', (msg) => {
    const text = msg.text();
    consoleLog.push(`${msg.type()}: ${text}`);
    console.log(`[page] ${msg.type() === 'log' ? '' : msg.type() + ': '}${text}`);
    if (msg.type() === 'error' && !isFaviconNoise(msg)) {
      const loc = msg.location();
      errors.push(`console.error: ${text}${loc?.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (err) => {
    console.log(`[page] pageerror: ${err.stack || err.message}`);
    errors.push(`pageerror: ${err.stack || err.message}`);
  });
  page.on('crash', () => errors.push('crash: the page crashed'));

  page.assertClean = () => {
    const foreign = requests.filter((u) => {
      if (u.startsWith('data:') || u.startsWith('about:')) return false;
      return !allowedOrigins.has(originOf(u));
    });
    const problems = [
      ...foreign.map((u) => `request outside ${[...allowedOrigins].join(', ')}: ${u}`),
      ...errors,
    ];
    if (problems.length) {
      throw new Error(`page is not clean:\n  ${problems.join('\n  ')}`);
    }
  };

  if (options.goto !== false) {
    await page.goto(url, { waitUntil: 'load', timeout: options.timeout ?? 60_000 });
  }
  return page;
}

/** Saves a PNG of the page to ${SCREENSHOT_DIR:-target/screenshots}/<name>.png; returns its path. */
export async function screenshot(page, name, options = {}) {
  const dir = process.env.SCREENSHOT_DIR || path.join('target', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name.replace(/[^\w.-]+/g, '_')}.png`);
  await page.screenshot({ path: file, fullPage: true, ...options });
  return file;
}
