// Checkpoints in IndexedDB.
//
// Database "webtune-page", two object stores:
//   runs   key "current": the one saved run (a RunRecord), written whole by ONE put in ONE
//          transaction (durability "strict"). IndexedDB commits a transaction atomically, so after
//          a crash, a closed tab or a failed write the record is either the previous checkpoint or
//          the new one, never half of each; a write resolves only once its transaction committed.
//   blobs  the dataset files (and an imported adapter) of the run, by content key, written once
//          when the run starts, so that a resume after a reload has the same data.
//
// A failed transaction rejects with an Error whose `code` is `QUOTA` (storage full) or `STORAGE`
// (aborted: the tab closing, the browser refusing storage), which errors.js explains.

/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('./session.js').ModelIdentity} ModelIdentity */
/**
 * A step of the loss history (step 0: the starting eval loss).
 * @typedef {{ step: number, epoch?: number, loss?: number, evalLoss?: number, lr?: number, gradNorm?: number,
 *   tokensPerSecond?: number, elapsedMs?: number, etaMs?: number, earlyStopped?: boolean }} MetricPoint
 */
/** @typedef {{ name: string, data: Uint8Array }} NamedBytes */
/** @typedef {{ key: string, name: string }} StoredFile */
/** @typedef {{ checkpointEvery?: number, evalMode: 'file' | 'split' | 'none' }} PageOptions */

/**
 * A saved run: everything a resume needs (model, data, settings, checkpoint) and what the page
 * shows of it (history, state).
 * @typedef {object} RunRecord
 * @property {string} id
 * @property {ModelIdentity} model
 * @property {string} modelName
 * @property {{ train: StoredFile, eval: StoredFile | null }} data
 * @property {string | null} adapterKey the imported adapter the run continues, in `blobs`
 * @property {TrainingConfig} config
 * @property {PageOptions} page
 * @property {Record<string, unknown>} form the settings form's values
 * @property {number} step
 * @property {number} totalSteps
 * @property {'running' | 'paused' | 'done' | 'stopped'} state
 * @property {Uint8Array} checkpoint
 * @property {MetricPoint[]} metrics
 * @property {number} startedAt
 * @property {number} savedAt
 */

const DB_NAME = 'webtune-page';
const DB_VERSION = 1;
const RUNS = 'runs';
const BLOBS = 'blobs';
const CURRENT = 'current';

/** @type {Promise<IDBDatabase> | undefined} */
let dbPromise;

/** @param {string} code @param {string} message @param {unknown} [cause] */
function storageError(code, message, cause) {
  return Object.assign(new Error(message, { cause }), { code });
}

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      if (!('indexedDB' in self)) {
        reject(storageError('STORAGE', 'this browser has no IndexedDB'));
        return;
      }
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(RUNS)) db.createObjectStore(RUNS);
        if (!db.objectStoreNames.contains(BLOBS)) db.createObjectStore(BLOBS);
      };
      req.onsuccess = () => {
        const db = req.result;
        db.onversionchange = () => db.close();
        resolve(db);
      };
      req.onerror = () => reject(storageError('STORAGE', `the checkpoint database cannot be opened (${req.error?.message})`, req.error));
      req.onblocked = () => reject(storageError('STORAGE', 'the checkpoint database is blocked by another tab'));
    });
    dbPromise.catch(() => {
      dbPromise = undefined;
    });
  }
  return dbPromise;
}

/**
 * Why a transaction was aborted: the browser's QuotaExceededError (storage full), or anything else
 * (the tab closing, a failed request, an explicit abort).
 * @param {IDBTransaction} tx
 */
function abortError(tx) {
  const cause = tx.error;
  if (cause?.name === 'QuotaExceededError') return storageError('QUOTA', `browser storage is full (${cause.message})`, cause);
  return storageError('STORAGE', `the write to browser storage was aborted${cause ? ` (${cause.name}: ${cause.message})` : ''}`, cause);
}

/**
 * Runs `fn(stores)` in one transaction; resolves with fn's result once the transaction committed,
 * rejects once it aborted. A failed request aborts the whole transaction (nothing is half-written).
 * @template T
 * @param {string[]} names @param {IDBTransactionMode} mode
 * @param {(stores: Record<string, IDBObjectStore>) => T} fn
 * @returns {Promise<Awaited<T>>}
 */
async function transaction(names, mode, fn) {
  const db = await open();
  /** @type {Promise<T>} */
  const done = new Promise((resolve, reject) => {
    /** @type {IDBTransaction} */
    let tx;
    try {
      tx = db.transaction(names, mode, { durability: 'strict' });
    } catch (e) {
      reject(e);
      return;
    }
    tx.oncomplete = () => resolve(result);
    tx.onabort = () => reject(abortError(tx));
    const stores = Object.fromEntries(names.map((n) => [n, tx.objectStore(n)]));
    /** @type {T} */
    let result;
    try {
      result = fn(stores);
    } catch (e) {
      tx.onabort = null;
      try {
        tx.abort();
      } catch {
        // already finished
      }
      reject(e);
    }
  });
  return await done;
}

/**
 * @template T
 * @param {IDBRequest<T>} req
 * @returns {Promise<T>}
 */
function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/**
 * The saved run, or undefined.
 * @returns {Promise<RunRecord | undefined>}
 */
export async function loadRun() {
  const record = await transaction([RUNS], 'readonly', (s) => request(s[RUNS].get(CURRENT)));
  return record?.checkpoint instanceof Uint8Array ? record : undefined;
}

/** Replaces the saved run with `record` atomically. @param {RunRecord} record */
export async function saveRun(record) {
  await transaction([RUNS], 'readwrite', (s) => {
    s[RUNS].put(record, CURRENT);
  });
}

export async function clearRun() {
  await transaction([RUNS, BLOBS], 'readwrite', (s) => {
    s[RUNS].delete(CURRENT);
    s[BLOBS].clear();
  });
}

/** Stores files under their keys, in one transaction. @param {Array<[string, unknown]>} entries */
export async function putBlobs(entries) {
  await transaction([BLOBS], 'readwrite', (s) => {
    for (const [key, value] of entries) s[BLOBS].put(value, key);
  });
}

/**
 * A stored file, or undefined.
 * @template T
 * @param {string} key
 * @returns {Promise<T | undefined>}
 */
export async function getBlob(key) {
  return transaction([BLOBS], 'readonly', (s) => request(s[BLOBS].get(key)));
}

/** Asks the browser not to evict this origin's storage under pressure (best effort, no prompt in Chrome). */
export async function persist() {
  try {
    if (navigator.storage?.persisted && !(await navigator.storage.persisted())) await navigator.storage.persist?.();
  } catch {
    /* best effort */
  }
}
