// Checkpoints in IndexedDB.
//
// Database "webtune-page", two object stores:
//   runs   key "current": the one saved run, written whole by ONE put in ONE transaction
//          (durability "strict"): { step, totalSteps, state, checkpoint (Uint8Array), metrics,
//          config, page, model, data, savedAt }. IndexedDB commits a transaction atomically, so
//          after a crash or reload the record is either the previous checkpoint or the new one,
//          never half of each.
//   blobs  the dataset files (and an imported adapter) of the run, by content key, written once
//          when the run starts, so that a resume after a reload has the same data.

const DB_NAME = 'webtune-page';
const DB_VERSION = 1;
const RUNS = 'runs';
const BLOBS = 'blobs';
const CURRENT = 'current';

let dbPromise;

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      if (!('indexedDB' in self)) {
        reject(Object.assign(new Error('this browser has no IndexedDB'), { name: 'NotSupportedError' }));
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
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error('the checkpoint database is blocked by another tab'));
    });
    dbPromise.catch(() => { dbPromise = undefined; });
  }
  return dbPromise;
}

/** Runs `fn(stores)` in one transaction; resolves with fn's result once the transaction committed. */
async function transaction(names, mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    let tx;
    try {
      tx = db.transaction(names, mode, { durability: 'strict' });
    } catch (e) {
      reject(e);
      return;
    }
    const stores = Object.fromEntries(names.map((n) => [n, tx.objectStore(n)]));
    let result;
    try {
      result = fn(stores);
    } catch (e) {
      tx.abort();
      reject(e);
      return;
    }
    tx.oncomplete = async () => resolve(await result);
    tx.onabort = () => reject(tx.error ?? new Error('the checkpoint transaction was aborted'));
    tx.onerror = (event) => {
      event.preventDefault?.();
    };
  });
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** The saved run, or undefined. */
export async function loadRun() {
  return transaction([RUNS], 'readonly', (s) => request(s[RUNS].get(CURRENT)));
}

/** Replaces the saved run with `record` atomically. */
export async function saveRun(record) {
  await transaction([RUNS], 'readwrite', (s) => {
    s[RUNS].put(record, CURRENT);
  });
}

/** Updates fields of the saved run (e.g. its state) in one read-modify-write transaction. */
export async function updateRun(fields) {
  await transaction([RUNS], 'readwrite', (s) => {
    const store = s[RUNS];
    const get = store.get(CURRENT);
    get.onsuccess = () => {
      if (get.result) store.put({ ...get.result, ...fields }, CURRENT);
    };
  });
}

export async function clearRun() {
  await transaction([RUNS, BLOBS], 'readwrite', (s) => {
    s[RUNS].delete(CURRENT);
    s[BLOBS].clear();
  });
}

/** Stores files under their keys (skips those already there), in one transaction. */
export async function putBlobs(entries) {
  await transaction([BLOBS], 'readwrite', (s) => {
    for (const [key, value] of entries) s[BLOBS].put(value, key);
  });
}

/** Deletes every stored file whose key is not in `keep`. */
export async function pruneBlobs(keep) {
  const keepSet = new Set(keep);
  await transaction([BLOBS], 'readwrite', (s) => {
    const req = s[BLOBS].getAllKeys();
    req.onsuccess = () => {
      for (const key of req.result) if (!keepSet.has(key)) s[BLOBS].delete(key);
    };
  });
}

export async function getBlob(key) {
  return transaction([BLOBS], 'readonly', (s) => request(s[BLOBS].get(key)));
}

/** {usage, quota} of this origin's storage, or undefined. */
export async function estimate() {
  try {
    return await navigator.storage?.estimate?.();
  } catch {
    return undefined;
  }
}

/** Asks the browser not to evict this origin's storage under pressure (best effort, no prompt in Chrome). */
export async function persist() {
  try {
    if (navigator.storage?.persisted && !(await navigator.storage.persisted())) await navigator.storage.persist?.();
  } catch {
    /* best effort */
  }
}
