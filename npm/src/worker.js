// The worker side of createWorkerEngine(): hosts a real engine in a module Web Worker and answers
// the page's requests. Importing this module in a worker (`import 'webtune/worker'`) is all a
// custom worker file needs.
//
// Protocol (structured-cloned messages):
//   page → worker  {type: 'call', id, method, args}      → {type: 'result', id, ok, value | error}
//                  {type: 'abort', id}                    aborts request `id` (loadModel, generate)
//                  {type: 'callback-result', cb, ok, error?}
//   worker → page  {type: 'event', id, name, data}        progress / text chunks of request `id`
//                  {type: 'trainer', handle, state, stepsDone, metrics?, error?}
//                  {type: 'callback', cb, id, name, args} calls the page's onCheckpoint of request `id`
// Results are transferred (their ArrayBuffers move to the page); inputs are copied.

import { createEngine } from './engine.js';
import { WebtuneError, deserializeError, serializeError } from './errors.js';
import { observe } from './trainer.js';

const scope = /** @type {DedicatedWorkerGlobalScope} */ (/** @type {unknown} */ (globalThis));

/** @typedef {import('./index.js').Engine} Engine */
/** @typedef {import('./trainer.js').TrainerImpl} TrainerImpl */
/** @typedef {import('./trainer.js').TrainerUpdate} TrainerUpdate */

/** @type {Engine | null} */
let engine = null;
/** The engine's trainers (TrainerImpl: the worker runs the engine of engine.js). @type {Map<number, TrainerImpl>} */
const trainers = new Map();
let nextHandle = 1;
/** @type {Map<number, AbortController>} */
const aborts = new Map();
/** @type {Map<number, {resolve: (v: unknown) => void, reject: (e: unknown) => void}>} */
const callbacks = new Map();
let nextCallback = 1;

/**
 * The ArrayBuffers of the Uint8Arrays in a result that can be moved to the page.
 * @param {unknown} value @param {Set<ArrayBuffer>} [out]
 * @returns {ArrayBuffer[]}
 */
function transferables(value, out = new Set()) {
  if (value instanceof Uint8Array) {
    if (value.byteOffset === 0 && value.byteLength === value.buffer.byteLength && value.buffer instanceof ArrayBuffer) out.add(value.buffer);
  } else if (value && typeof value === 'object' && !(value instanceof Blob)) {
    for (const v of Object.values(value)) transferables(v, out);
  }
  return [...out];
}

/**
 * Asks the page to run one of the callbacks of request `id`; resolves when it has.
 * @param {number} id @param {string} name @param {unknown[]} args @param {Transferable[]} [transfer]
 */
function callPage(id, name, args, transfer = []) {
  const cb = nextCallback++;
  return new Promise((resolve, reject) => {
    callbacks.set(cb, { resolve, reject });
    scope.postMessage({ type: 'callback', cb, id, name, args }, transfer);
  });
}

function requireEngine() {
  if (!engine) throw new WebtuneError('ENGINE_DISPOSED', 'the worker engine is not initialised or was disposed');
  return engine;
}

/** @param {number} handle */
function trainer(handle) {
  const t = trainers.get(handle);
  if (!t) throw new WebtuneError('INVALID_STATE', 'this trainer was disposed');
  return t;
}

/** A request of the page: `id` names it, `args` are the method's arguments. @typedef {(id: number, args: any[]) => unknown} Method */

/** @type {Record<string, Method>} */
const methods = {
  async init(id, [options]) {
    engine = await createEngine(options);
    return { gpu: engine.gpu, version: engine.version };
  },
  loadModel(id, [source, { name, progress }]) {
    const controller = new AbortController();
    aborts.set(id, controller);
    const onProgress = progress ? (/** @type {unknown} */ data) => scope.postMessage({ type: 'event', id, name: 'progress', data }) : undefined;
    return requireEngine().loadModel(source, { name, onProgress, signal: controller.signal });
  },
  previewDataset: (id, [data, config, maxRows]) => requireEngine().previewDataset(data, config, maxRows),
  runFacts: (id, [config]) => requireEngine().runFacts(config),
  modelPresets: () => requireEngine().modelPresets(),
  presetFacts: (id, [name, config]) => requireEngine().presetFacts(name, config),
  bench: (id, [options]) => requireEngine().bench(options),
  loadAdapter: (id, [files]) => requireEngine().loadAdapter(files),
  evaluate: (id, [data, options]) => requireEngine().evaluate(data, options),
  exportAdapter: (id, [options]) => requireEngine().exportAdapter(options),
  async createTrainer(id, [options]) {
    const t = /** @type {TrainerImpl} */ (await requireEngine().createTrainer(options));
    const handle = nextHandle++;
    for (const [h, old] of trainers) if (old !== t) trainers.delete(h); // replaced trainers are disposed
    trainers.set(handle, t);
    t[observe]((u) =>
      scope.postMessage({
        type: 'trainer',
        handle,
        state: u.state,
        stepsDone: u.stepsDone,
        metrics: u.metrics,
        error: u.error ? serializeError(u.error) : undefined,
      }),
    );
    return { handle, totalSteps: t.totalSteps, stepsDone: t.stepsDone, state: t.state, report: t.report };
  },
  'trainer.train'(id, [handle, { checkpointEvery, checkpoint }]) {
    const onCheckpoint = checkpoint
      ? (/** @type {Uint8Array} */ bytes, /** @type {number} */ step) => callPage(id, 'checkpoint', [bytes, step], transferables(bytes)).then(() => {})
      : undefined;
    return trainer(handle).train({ checkpointEvery, onCheckpoint });
  },
  'trainer.pause': (id, [handle]) => trainer(handle).pause(),
  'trainer.resume': (id, [handle]) => trainer(handle).resume(),
  'trainer.stop': (id, [handle]) => trainer(handle).stop(),
  'trainer.evaluate': (id, [handle]) => trainer(handle).evaluate(),
  'trainer.warmUp': (id, [handle]) => trainer(handle).warmUp(),
  'trainer.checkpoint': (id, [handle]) => trainer(handle).checkpoint(),
  'trainer.dispose'(id, [handle]) {
    trainers.get(handle)?.dispose();
    trainers.delete(handle);
  },
  async generate(id, [prompt, options]) {
    const controller = new AbortController();
    aborts.set(id, controller);
    const generation = requireEngine().generate(prompt, { ...options, signal: controller.signal });
    for await (const chunk of generation) scope.postMessage({ type: 'event', id, name: 'chunk', data: chunk });
    return generation.result;
  },
  dispose() {
    engine?.dispose();
    engine = null;
    trainers.clear();
  },
};

scope.addEventListener('message', async (event) => {
  const msg = event.data;
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'abort') {
    aborts.get(msg.id)?.abort();
    return;
  }
  if (msg.type === 'callback-result') {
    const pending = callbacks.get(msg.cb);
    callbacks.delete(msg.cb);
    if (msg.ok) pending?.resolve(undefined);
    else pending?.reject(deserializeError(msg.error));
    return;
  }
  if (msg.type !== 'call') return;
  const { id, method, args } = msg;
  try {
    const fn = methods[method];
    if (!fn) throw new WebtuneError('INTERNAL', `the worker does not know the method ${method}: the page and worker.js are from different webtune versions`);
    const value = await fn(id, args);
    scope.postMessage({ type: 'result', id, ok: true, value }, transferables(value));
  } catch (e) {
    scope.postMessage({ type: 'result', id, ok: false, error: serializeError(e) });
  } finally {
    aborts.delete(id);
  }
});
