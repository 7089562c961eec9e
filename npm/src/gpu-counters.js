// Counting what this thread asks of WebGPU: kernel dispatches, queue submits, buffer creations and
// writes, bind groups, pipelines and shader modules, and the time spent waiting for buffers to map
// (the GPU finishing work the host then reads): from the latest of the map request, the last
// WebGPU call before the buffer maps (the core keeps issuing work after it asks for a map: the
// next step's passes while the loss travels, which is host time) and the previous map's end
// (maps awaited together are one wait). `engine.bench()` installs it in the thread that
// owns the GPU device; the browser tests inject the same function into pages before they load.

/**
 * Wraps the WebGPU prototypes' methods with counters, once per realm, and exposes them as
 * `globalThis.webgpuCounters.snapshot()`. Self-contained: the test harness serialises its source.
 */
export function installWebGpuCounters() {
  if (/** @type {any} */ (globalThis).webgpuCounters || typeof GPUDevice === 'undefined') return;
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
  let lastCall = 0;
  let lastMapped = 0;
  /** @param {any} proto @param {string} name @param {keyof typeof counts} key */
  const count = (proto, name, key) => {
    const original = proto[name];
    if (typeof original !== 'function') return;
    /** @this {unknown} @param {unknown[]} args */
    proto[name] = function (...args) {
      counts[key]++;
      try {
        return original.apply(this, args);
      } finally {
        lastCall = performance.now();
      }
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
  /** @this {GPUBuffer} @param {[GPUMapModeFlags, number?, number?]} args */
  GPUBuffer.prototype.mapAsync = function (...args) {
    const start = performance.now();
    return mapAsync.apply(this, args).finally(() => {
      const now = performance.now();
      counts.mapWaitMs += Math.max(0, now - Math.max(start, lastCall, lastMapped));
      lastMapped = now;
    });
  };
  /** @type {any} */ (globalThis).webgpuCounters = { snapshot: () => ({ ...counts, now: performance.now() }) };
}

/** @typedef {Record<string, number>} CountersSnapshot */

/** `after − before` of two snapshots, plus `wallMs` and `hostMs` (wall time not spent waiting
 * for a mapped buffer: the host issuing work).
 * @param {CountersSnapshot} before @param {CountersSnapshot} after @returns {Record<string, number>} */
export function countersDelta(before, after) {
  /** @type {Record<string, number>} */
  const delta = {};
  for (const key of Object.keys(after)) if (key !== 'now') delta[key] = after[key] - before[key];
  delta.wallMs = after.now - before.now;
  delta.hostMs = delta.wallMs - delta.mapWaitMs;
  for (const key of ['wallMs', 'hostMs', 'mapWaitMs']) delta[key] = Math.round(delta[key] * 10) / 10;
  return delta;
}
