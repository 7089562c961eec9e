// Smoke test of the browser test setup: headless system Chromium gets a WebGPU adapter, can create
// a device and run a compute shader, and the page is served cross-origin isolated by our server.
// Uses its own throw-away page in a temporary directory (not www/).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, launchBrowser, openPage, screenshot } from './harness.mjs';

const PAGE = `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>webgpu smoke</title>
<link rel="icon" href="data:,">
</head>
<body>
<pre id="out">running…</pre>
<script type="module" src="./smoke.mjs"></script>
</body>
</html>
`;

const SCRIPT = `
const out = document.getElementById('out');
async function run() {
  const r = { hasGpu: !!navigator.gpu, crossOriginIsolated: self.crossOriginIsolated, secure: self.isSecureContext };
  if (!navigator.gpu) return r;
  const adapter = await navigator.gpu.requestAdapter();
  r.adapter = !!adapter;
  if (!adapter) return r;
  const info = adapter.info ?? {};
  r.info = {
    vendor: info.vendor, architecture: info.architecture, device: info.device,
    description: info.description, isFallbackAdapter: info.isFallbackAdapter,
  };
  r.limits = {
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
  };
  r.features = [...adapter.features].sort();

  // A trivial compute dispatch: out[i] = in[i] * 2.
  const device = await adapter.requestDevice();
  const n = 256;
  const input = new Float32Array(n).map((_, i) => i);
  const usage = GPUBufferUsage;
  const buf = device.createBuffer({ size: input.byteLength, usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST });
  device.queue.writeBuffer(buf, 0, input);
  const read = device.createBuffer({ size: input.byteLength, usage: usage.MAP_READ | usage.COPY_DST });
  const module = device.createShaderModule({ code: \`
    @group(0) @binding(0) var<storage, read_write> data: array<f32>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
      if (id.x < arrayLength(&data)) { data[id.x] = data[id.x] * 2.0; }
    }\` });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(n / 64);
  pass.end();
  enc.copyBufferToBuffer(buf, 0, read, 0, input.byteLength);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const result = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  r.computeOk = result.every((v, i) => v === i * 2);
  device.destroy();
  return r;
}
run().then(
  (r) => { window.__smoke = r; out.textContent = JSON.stringify(r, null, 2); console.log('smoke done'); },
  (e) => { window.__smoke = { error: String(e && e.stack || e) }; out.textContent = String(e); console.error('smoke failed: ' + e); },
);
`;

let dir, server, browser;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-smoke-'));
  fs.writeFileSync(path.join(dir, 'index.html'), PAGE);
  fs.writeFileSync(path.join(dir, 'smoke.mjs'), SCRIPT);
  server = await startServer(dir);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('headless Chromium exposes a working WebGPU adapter', { timeout: 120_000 }, async () => {
  console.log(`chromium ${browser.version()}`);
  const page = await openPage(browser, server.url);
  await page.waitForFunction(() => window.__smoke !== undefined, null, { timeout: 90_000 });
  const r = await page.evaluate(() => window.__smoke);
  await screenshot(page, 'webgpu-smoke');

  assert.equal(r.error, undefined, `page threw: ${r.error}`);
  assert.ok(r.hasGpu, 'navigator.gpu is missing');
  assert.ok(r.adapter, 'navigator.gpu.requestAdapter() returned null');
  console.log(`adapter: vendor=${JSON.stringify(r.info.vendor)} architecture=${JSON.stringify(r.info.architecture)} ` +
    `device=${JSON.stringify(r.info.device)} description=${JSON.stringify(r.info.description)} fallback=${r.info.isFallbackAdapter}`);
  console.log(`limits: ${JSON.stringify(r.limits)}`);
  console.log(`features: ${r.features.join(' ')}`);
  assert.ok(r.limits.maxStorageBufferBindingSize >= 128 * 1024 * 1024,
    `maxStorageBufferBindingSize ${r.limits.maxStorageBufferBindingSize} < 128 MiB`);
  assert.ok(r.computeOk, 'compute shader produced wrong results');
  assert.ok(r.crossOriginIsolated, 'page is not cross-origin isolated (COOP/COEP headers)');

  // Only our own server was contacted, and it saw the page and its script.
  assert.ok(server.requests.includes('/smoke.mjs'), `server requests: ${server.requests}`);
  page.assertClean();
  await page.close();
});
