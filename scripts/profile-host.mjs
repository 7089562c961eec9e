#!/usr/bin/env node
// Where a training step's host time goes in Chromium: runs `engine.bench()` in headless Chromium
// (as tests/browser/ do) under the DevTools sampling profiler and prints the page thread's busy
// time by component: the WebGPU calls (JS bindings; `(program)` is the browser's own native code,
// mostly the same calls), and the Rust crates of the core, burn and CubeCL. Standard-library frames
// (allocation, hashing, iterators) count for the crate that called them.
//
//   WEBTUNE_WASM_NAMES=1 scripts/build-wasm.sh && scripts/build-npm.sh   # Rust names in the profile
//   node scripts/profile-host.mjs [--layers 2] [--batch-size 1] [--seq-len 16] [--steps 4] [--top 15]
//
// The SmolLM2-135M shape with random weights (`--layers` of its 30). A first `engine.bench()`
// compiles the pipelines; the profiled second one is its warm-up, timed steps and counting pass.

import { parseArgs } from 'node:util';
import { launchBrowser, openPage, startServer } from '../tests/browser/harness.mjs';

const { values: args } = parseArgs({
  options: {
    layers: { type: 'string', default: '2' },
    'batch-size': { type: 'string', default: '1' },
    'seq-len': { type: 'string', default: '16' },
    steps: { type: 'string', default: '4' },
    top: { type: 'string', default: '15' },
  },
});
const options = {
  shape: 'smollm2-135m',
  layers: Number(args.layers),
  batchSize: Number(args['batch-size']),
  seqLen: Number(args['seq-len']),
  steps: Number(args.steps),
};

/** Frames of the standard library and allocator: their time goes to the crate that called them. */
const GENERIC = /^(core|alloc|std|dlmalloc|hashbrown|smallvec|__rust|__rdl|memcpy|memcmp|memset|internment|xxhash_rust)\b/;

/** The crate of a Rust frame (`burn_fusion::…`, `<burn_dispatch::… as …>::…`), else null. */
function crateOf(/** @type {string} */ name) {
  const match = /^<?&?(?:mut )?([A-Za-z_][A-Za-z0-9_]*)(?:\[[0-9a-f]+\])?::/.exec(name);
  return match ? match[1] : null;
}

/** @param {any} profile @param {any} result @param {number} top */
function report(profile, result, top) {
  /** @type {Map<number, any>} */
  const nodes = new Map(profile.nodes.map((/** @type {any} */ n) => [n.id, n]));
  /** @type {Map<number, number>} */
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  /** @type {Map<number, number>} milliseconds per leaf node */
  const self = new Map();
  profile.samples.forEach((/** @type {number} */ id, /** @type {number} */ i) => {
    self.set(id, (self.get(id) ?? 0) + profile.timeDeltas[i] / 1000);
  });
  /** @type {Map<string, number>} */
  const byComponent = new Map();
  /** @type {Map<string, number>} */
  const byFunction = new Map();
  let busy = 0;
  const add = (/** @type {Map<string, number>} */ map, /** @type {string} */ key, /** @type {number} */ ms) =>
    map.set(key, (map.get(key) ?? 0) + ms);
  for (const [id, ms] of self) {
    const leaf = nodes.get(id).callFrame;
    if (leaf.functionName === '(idle)') continue;
    busy += ms;
    add(byFunction, leaf.functionName || `(anonymous ${leaf.url})`, ms);
    add(byComponent, component(id, nodes, parent), ms);
  }
  const rows = (/** @type {Map<string, number>} */ map) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, ms]) => `${ms.toFixed(1).padStart(8)} ${(100 * ms / busy).toFixed(1).padStart(5)} %  ${k.slice(0, 140)}`);
  const steps = result.steps.map((/** @type {any} */ s) => `${s.dispatches} dispatches, host ${s.hostMs} ms`);
  console.log(`${JSON.stringify(options)}: ${result.dispatchesPerLayer} dispatches per layer; timed steps: ${steps.join('; ')}`);
  console.log(`page thread busy ${busy.toFixed(1)} ms during the profiled engine.bench()`);
  console.log('\nby component:');
  console.log(rows(byComponent).join('\n'));
  console.log('\nby function (self time):');
  console.log(rows(byFunction).join('\n'));
}

/** The component a sample's time counts for: its leaf frame, or the nearest caller that is not
 * standard library. @param {number} id @param {Map<number, any>} nodes @param {Map<number, number>} parent */
function component(id, nodes, parent) {
  const leaf = nodes.get(id).callFrame;
  if (leaf.functionName.startsWith('(')) return leaf.functionName;
  if (leaf.url === '' && /^[A-Za-z]+$/.test(leaf.functionName)) return `WebGPU ${leaf.functionName}`;
  if (/^wasm-function\[/.test(leaf.functionName)) return 'wasm (no names: build with WEBTUNE_WASM_NAMES=1)';
  for (let at = /** @type {number | undefined} */ (id); at !== undefined; at = parent.get(at)) {
    const name = nodes.get(at).callFrame.functionName;
    const crate = crateOf(name);
    if (crate && !GENERIC.test(crate)) return crate;
    if (!crate && !GENERIC.test(name) && at !== id && name) return `JS ${name}`;
  }
  return 'other';
}

process.chdir(new URL('..', import.meta.url).pathname);
const server = await startServer('.');
const browser = await launchBrowser();
try {
  const page = await openPage(browser, `${server.url}tests/browser/pages/blank.html`);
  const cdp = await page.context().newCDPSession(page);
  await page.evaluate(async () => {
    const { createEngine } = await import('/www/webtune/index.js');
    /** @type {any} */ (window).engine = await createEngine();
  });
  const bench = (/** @type {object} */ o) => page.evaluate((o) => /** @type {any} */ (window).engine.bench(o), o);
  await bench({ ...options, steps: 1 });
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 50 });
  await cdp.send('Profiler.start');
  const result = await bench(options);
  const { profile } = await cdp.send('Profiler.stop');
  report(profile, result, Number(args.top));
} finally {
  await browser.close();
  await server.close();
}
