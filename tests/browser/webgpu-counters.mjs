// Counting what a page asks of WebGPU: kernel dispatches, queue submits, buffer creations and
// writes, bind groups, pipelines and shader modules, and the time spent waiting for buffers to map
// (the GPU finishing work the host then reads). For benchmarks: figures, never assertions on time.
//
//   await page.addInitScript(installWebGpuCounters);        // before the page (or worker) loads
//   const before = await page.evaluate(() => globalThis.webgpuCounters.snapshot());
//   ... the work ...
//   const figures = countersDelta(before, await page.evaluate(() => globalThis.webgpuCounters.snapshot()));
//
// The page's code reads the same object (globalThis.webgpuCounters.snapshot()) to take figures per
// training step itself. Only the main thread of the page is counted (the npm engine's main-thread
// variant); a dedicated worker would need the script injected into it too.

/**
 * Runs in the page, before any of its scripts: wraps the WebGPU prototypes' methods with
 * counters. Self-contained (Playwright serialises the function's source).
 */
export function installWebGpuCounters() {
  if (globalThis.webgpuCounters || typeof GPUDevice === 'undefined') return;
  const counts = {
    dispatches: 0,
    submits: 0,
    bufferCreations: 0,
    bufferWrites: 0,
    bindGroups: 0,
    pipelines: 0,
    shaderModules: 0,
    mapWaitMs: 0,
  };
  const count = (proto, name, key) => {
    const original = proto[name];
    if (typeof original !== 'function') return;
    proto[name] = function (...args) {
      counts[key]++;
      return original.apply(this, args);
    };
  };
  count(GPUComputePassEncoder.prototype, 'dispatchWorkgroups', 'dispatches');
  count(GPUComputePassEncoder.prototype, 'dispatchWorkgroupsIndirect', 'dispatches');
  count(GPUQueue.prototype, 'submit', 'submits');
  count(GPUQueue.prototype, 'writeBuffer', 'bufferWrites');
  count(GPUDevice.prototype, 'createBuffer', 'bufferCreations');
  count(GPUDevice.prototype, 'createBindGroup', 'bindGroups');
  count(GPUDevice.prototype, 'createComputePipeline', 'pipelines');
  count(GPUDevice.prototype, 'createComputePipelineAsync', 'pipelines');
  count(GPUDevice.prototype, 'createShaderModule', 'shaderModules');
  const mapAsync = GPUBuffer.prototype.mapAsync;
  GPUBuffer.prototype.mapAsync = function (...args) {
    const start = performance.now();
    return mapAsync.apply(this, args).finally(() => {
      counts.mapWaitMs += performance.now() - start;
    });
  };
  globalThis.webgpuCounters = { snapshot: () => ({ ...counts, now: performance.now() }) };
}

/** `after − before` of two snapshots, plus `wallMs` and `hostMs` (wall time not spent waiting
 * for a mapped buffer: the host issuing work). */
export function countersDelta(before, after) {
  const delta = {};
  for (const key of Object.keys(after)) if (key !== 'now') delta[key] = after[key] - before[key];
  delta.wallMs = after.now - before.now;
  delta.hostMs = delta.wallMs - delta.mapWaitMs;
  for (const key of ['wallMs', 'hostMs', 'mapWaitMs']) delta[key] = Math.round(delta[key] * 10) / 10;
  return delta;
}
