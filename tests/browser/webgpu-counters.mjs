// Counting what a page asks of WebGPU (the npm package's own counters, npm/src/gpu-counters.js).
// For benchmarks: figures, never assertions on time.
//
//   await page.addInitScript(installWebGpuCounters);        // before the page (or worker) loads
//   const before = await page.evaluate(() => globalThis.webgpuCounters.snapshot());
//   ... the work ...
//   const figures = countersDelta(before, await page.evaluate(() => globalThis.webgpuCounters.snapshot()));
//
// Only the main thread of the page is counted this way (the npm engine's main-thread variant);
// `engine.bench()` counts in the thread that owns the device, a worker included.

export { countersDelta, installWebGpuCounters } from '../../npm/src/gpu-counters.js';
