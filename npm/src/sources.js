// Getting bytes into the engine: model folders (picked files, URLs, Hugging Face ids) with download
// progress and a Cache Storage cache, datasets, PEFT adapter files and zips.

import { WebtuneError } from './errors.js';

/** @typedef {import('./index.js').ModelSource} ModelSource */
/** @typedef {import('./index.js').DatasetSource} DatasetSource */
/** @typedef {import('./index.js').LoadProgress} LoadProgress */

const CACHE_NAME = 'webtune-models-v1';
const WEIGHTS = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
/** Fetched besides the weights; the optional ones may be absent on the server. */
const MODEL_FILES = [
  { file: 'config.json', optional: false },
  { file: 'tokenizer.json', optional: false },
  { file: 'tokenizer_config.json', optional: true },
];
const NOT_FOUND = Symbol('not found');
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `a/b/config.json` → `config.json` @param {string} path */
export function baseName(path) {
  return String(path).split(/[\\/]/).pop() ?? '';
}

/**
 * Bytes of a Blob, buffer, view or string.
 * @param {unknown} value
 * @param {string} what for the error message
 * @returns {Promise<Uint8Array>}
 */
export async function toBytes(value, what) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (typeof Blob !== 'undefined' && value instanceof Blob) return new Uint8Array(await value.arrayBuffer());
  if (typeof value === 'string') return encoder.encode(value);
  throw new WebtuneError('INVALID_OPTIONS', `${what} is not a File, Blob, ArrayBuffer, Uint8Array or string`);
}

/**
 * `[name, value]` pairs of a FileList, File[] or `{name: data}` record, with folder prefixes
 * stripped from the names; also returns the folder name when the files came from one.
 * @param {any} files
 * @param {string} what
 */
function fileEntries(files, what) {
  /** @type {Array<[string, unknown]>} */
  const entries = [];
  let folder;
  const isFileList = typeof FileList !== 'undefined' && files instanceof FileList;
  if (isFileList || Array.isArray(files)) {
    for (const file of files) {
      if (!(typeof Blob !== 'undefined' && file instanceof Blob) || typeof (/** @type {any} */ (file).name) !== 'string') {
        throw new WebtuneError('INVALID_OPTIONS', `${what}: every entry of the list must be a File`);
      }
      const f = /** @type {File} */ (file);
      const path = f.webkitRelativePath || f.name;
      const parts = path.split(/[\\/]/);
      if (parts.length > 1) folder ??= parts[parts.length - 2];
      entries.push([baseName(path), f]);
    }
  } else if (files && typeof files === 'object') {
    for (const [path, value] of Object.entries(files)) {
      const parts = path.split(/[\\/]/);
      if (parts.length > 1) folder ??= parts[parts.length - 2];
      entries.push([baseName(path), value]);
    }
  } else {
    throw new WebtuneError('INVALID_OPTIONS', `${what} must be a FileList, an array of Files or an object of {fileName: data}`);
  }
  return { entries, folder };
}

/** A URL string resolved against the document (or worker) location. @param {string | URL} url */
export function absoluteUrl(url) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  return new URL(String(url), base).href;
}

/** Whether the download cache holds `url` (false when storage is unavailable). @param {string} url */
async function isCached(url) {
  if (typeof caches === 'undefined' || !/^https?:/.test(url)) return false;
  try {
    return (await (await caches.open(CACHE_NAME)).match(url)) !== undefined;
  } catch {
    return false;
  }
}

/**
 * Downloads `url` (or reads it from the cache), reporting progress. Resolves to NOT_FOUND on 404.
 * @param {string} url
 * @param {string} file
 * @param {{ cache: boolean, onProgress?: (p: LoadProgress) => void, signal?: AbortSignal }} options
 * @returns {Promise<Uint8Array | typeof NOT_FOUND>}
 */
async function download(url, file, { cache, onProgress, signal }) {
  const cacheable = cache && typeof caches !== 'undefined' && /^https?:/.test(url);
  /** @type {Cache | undefined} */
  let store;
  if (cacheable) {
    try {
      store = await caches.open(CACHE_NAME);
      const hit = await store.match(url);
      if (hit) {
        const bytes = new Uint8Array(await hit.arrayBuffer());
        onProgress?.({ phase: 'cache', file, loaded: bytes.length, total: bytes.length });
        return bytes;
      }
    } catch {
      store = undefined; // storage disabled (private mode, quota): download as usual
    }
  }
  if (signal?.aborted) throw new WebtuneError('ABORTED', `loading ${file} was aborted`);
  /** @type {Response} */
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (signal?.aborted) throw new WebtuneError('ABORTED', `loading ${file} was aborted`);
    throw new WebtuneError(
      'DOWNLOAD',
      `could not download ${file} from ${url} (${/** @type {Error} */ (e).message}): check the network connection and the URL, ` +
        'and that the server allows cross-origin requests (CORS) from this page',
    );
  }
  if (response.status === 404) return NOT_FOUND;
  if (!response.ok) {
    const hint =
      response.status === 401 || response.status === 403
        ? 'the model is probably gated or private: download its files yourself and pass them as {files}'
        : 'try again later, or download the files yourself and pass them as {files}';
    throw new WebtuneError('DOWNLOAD', `downloading ${file} from ${url} failed with HTTP ${response.status} ${response.statusText}: ${hint}`);
  }
  let total = Number(response.headers.get('content-length')) || 0;
  /** @type {Uint8Array<ArrayBuffer>} */
  let bytes;
  try {
    if (!response.body) {
      bytes = new Uint8Array(await response.arrayBuffer());
    } else {
      const reader = response.body.getReader();
      // Into one buffer of the announced size (no second copy of a large file); chunks otherwise
      // (no content-length, or a compressed transfer whose length is the encoded size).
      /** @type {Uint8Array<ArrayBuffer> | null} */
      let buffer = total > 0 && !response.headers.get('content-encoding') ? new Uint8Array(total) : null;
      /** @type {Uint8Array[]} */
      let chunks = [];
      let loaded = 0;
      let reported = performance.now(); // progress at most every 100 ms, and at the end
      onProgress?.({ phase: 'download', file, loaded, total });
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (buffer && loaded + value.length <= buffer.length) {
          buffer.set(value, loaded);
        } else {
          if (buffer) chunks = [buffer.subarray(0, loaded)];
          buffer = null;
          chunks.push(value);
        }
        loaded += value.length;
        total = Math.max(total, loaded);
        if (onProgress && performance.now() - reported >= 100) {
          reported = performance.now();
          onProgress({ phase: 'download', file, loaded, total });
        }
      }
      if (buffer) {
        bytes = loaded === buffer.length ? buffer : buffer.slice(0, loaded);
      } else {
        bytes = new Uint8Array(loaded);
        let offset = 0;
        for (const chunk of chunks) {
          bytes.set(chunk, offset);
          offset += chunk.length;
        }
      }
    }
  } catch (e) {
    if (signal?.aborted) throw new WebtuneError('ABORTED', `loading ${file} was aborted`);
    throw new WebtuneError('DOWNLOAD', `the download of ${file} from ${url} broke off (${/** @type {Error} */ (e).message}): try again`);
  }
  onProgress?.({ phase: 'download', file, loaded: bytes.length, total: bytes.length });
  if (store) {
    try {
      await store.put(url, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
    } catch (e) {
      console.warn(`webtune: could not cache ${file} (${/** @type {Error} */ (e).message}); it will be downloaded again next time`);
    }
  }
  return bytes;
}

/**
 * The files of a model, as `{fileName: bytes}`, plus a name for it. `checkWeights` sees each
 * safetensors file before its bytes are read (picked files) or right after its download, and may
 * reject it (e.g. a tensor over the GPU's limits).
 * @param {ModelSource} source
 * @param {{ onProgress?: (p: LoadProgress) => void, signal?: AbortSignal, checkWeights?: (file: string, weights: Blob | Uint8Array) => Promise<void> }} options
 * `base()` gives the same files again later without holding them meanwhile (the merged-model
 * export reads them by range): the picked Files/Blobs or given bytes, or the cached downloads.
 * @returns {Promise<{ files: Record<string, Uint8Array>, name: string | undefined, base: () => Promise<Record<string, Blob | Uint8Array>> }>}
 */
export async function loadModelFiles(source, { onProgress, signal, checkWeights } = {}) {
  const s = /** @type {any} */ (source);
  if (!s || typeof s !== 'object') {
    throw new WebtuneError('INVALID_OPTIONS', 'the model source must be {files}, {hub}, {url} or {urls}');
  }
  if ('files' in s) {
    const { entries, folder } = fileEntries(s.files, 'model files');
    if (checkWeights) {
      for (const [name, value] of entries) {
        if (!name.endsWith('.safetensors')) continue;
        await checkWeights(name, typeof Blob !== 'undefined' && value instanceof Blob ? value : await toBytes(value, `model file ${name}`));
      }
    }
    /** @type {Record<string, Uint8Array>} */
    const files = {};
    let loaded = 0;
    for (const [name, value] of entries) {
      files[name] = await toBytes(value, `model file ${name}`);
      loaded++;
      onProgress?.({ phase: 'load', file: name, loaded, total: entries.length });
    }
    /** @type {Record<string, Blob | Uint8Array>} */
    const kept = {};
    for (const [name, value] of entries) kept[name] = typeof Blob !== 'undefined' && value instanceof Blob ? value : files[name];
    return { files, name: s.name ?? folder, base: async () => kept };
  }

  /** @type {(file: string) => string | undefined} */
  let urlOf;
  let name = s.name;
  if (typeof s.hub === 'string') {
    const base = String(s.baseUrl ?? 'https://huggingface.co').replace(/\/+$/, '');
    const revision = encodeURIComponent(s.revision ?? 'main');
    urlOf = (file) => `${base}/${s.hub}/resolve/${revision}/${file}`;
    name ??= s.hub;
  } else if (s.url !== undefined) {
    let base = absoluteUrl(s.url);
    if (!base.endsWith('/')) base += '/';
    urlOf = (file) => new URL(file, base).href;
    name ??= baseName(new URL(base).pathname.replace(/\/+$/, '')) || undefined;
  } else if (s.urls && typeof s.urls === 'object') {
    /** @type {Record<string, string>} */
    const urls = {};
    for (const [file, url] of Object.entries(s.urls)) urls[baseName(file)] = absoluteUrl(url);
    urlOf = (file) => urls[file];
  } else {
    throw new WebtuneError('INVALID_OPTIONS', 'the model source must be {files}, {hub}, {url} or {urls}');
  }

  const options = { cache: s.cache !== false, onProgress, signal };
  /** @type {Record<string, Uint8Array>} */
  const files = {};
  /** @param {string} file @param {boolean} optional */
  const get = async (file, optional) => {
    const url = urlOf(file);
    if (url === undefined) {
      if (optional) return false;
      throw new WebtuneError('FILE_MISSING', `${file} is missing: the {urls} model source needs an entry for it`);
    }
    const bytes = await download(url, file, options);
    if (bytes === NOT_FOUND) {
      if (optional) return false;
      throw new WebtuneError('FILE_MISSING', `${file} was not found at ${url} (HTTP 404): check the model id or URL and the revision`);
    }
    if (checkWeights && file.endsWith('.safetensors')) await checkWeights(file, bytes);
    files[file] = bytes;
    return true;
  };
  for (const { file, optional } of MODEL_FILES) await get(file, optional);
  // A cached index means a sharded model seen before: no request for the single file (whose 404
  // is not cached), so a reload works offline.
  const indexUrl = urlOf(INDEX);
  const knownSharded = options.cache && indexUrl !== undefined && (await isCached(indexUrl));
  if (knownSharded || !(await get(WEIGHTS, true))) {
    // Sharded checkpoints: the index names the shard files.
    if (!(await get(INDEX, true))) {
      throw new WebtuneError(
        'FILE_MISSING',
        `neither ${WEIGHTS} nor ${INDEX} was found at ${urlOf(WEIGHTS) ?? urlOf(INDEX) ?? 'the given URLs'}: webtune needs safetensors weights`,
      );
    }
    let index;
    try {
      index = JSON.parse(decoder.decode(files[INDEX]));
    } catch (e) {
      throw new WebtuneError('CORRUPT_WEIGHTS', `${INDEX} is not valid JSON (${/** @type {Error} */ (e).message})`);
    }
    const shards = [...new Set(Object.values(index.weight_map ?? {}).map(String))];
    for (const shard of shards) await get(shard, false);
  }
  if (name === undefined) {
    try {
      const config = JSON.parse(decoder.decode(files['config.json']));
      if (typeof config._name_or_path === 'string' && config._name_or_path) name = config._name_or_path;
    } catch {
      // the wasm side reports a broken config.json
    }
  }
  const fileNames = Object.keys(files);
  const base = async () => {
    /** @type {Record<string, Blob | Uint8Array>} */
    const out = {};
    for (const file of fileNames) {
      const url = /** @type {string} */ (urlOf(file));
      const cached = options.cache ? await cachedBlob(url) : undefined;
      const bytes = cached ?? (await download(url, file, { cache: options.cache }));
      if (bytes === NOT_FOUND) throw new WebtuneError('FILE_MISSING', `${file} is no longer at ${url}`);
      out[file] = bytes;
    }
    return out;
  };
  return { files, name, base };
}

/** The cached download of `url` as a Blob (kept on disk by the browser), if any. @param {string} url */
async function cachedBlob(url) {
  if (typeof caches === 'undefined' || !/^https?:/.test(url)) return undefined;
  try {
    return await (await (await caches.open(CACHE_NAME)).match(url))?.blob();
  } catch {
    return undefined;
  }
}

/**
 * A dataset as `{name, bytes}`; the name's extension selects the format.
 * @param {DatasetSource} source
 * @param {string} what
 * @returns {Promise<{ name: string, bytes: Uint8Array }>}
 */
export async function readDataset(source, what = 'data') {
  const s = /** @type {any} */ (source);
  if (Array.isArray(s)) {
    const text = s.map((row) => JSON.stringify(row)).join('\n') + '\n';
    return { name: 'rows.jsonl', bytes: encoder.encode(text) };
  }
  if (typeof Blob !== 'undefined' && s instanceof Blob) {
    const name = /** @type {any} */ (s).name;
    if (typeof name !== 'string' || !name) {
      throw new WebtuneError('INVALID_DATASET', `${what}: a Blob has no file name; pass {name: "train.jsonl", data: blob} instead`);
    }
    return { name, bytes: await toBytes(s, what) };
  }
  if (s instanceof URL) {
    return readDataset({ url: String(s) }, what);
  }
  if (s && typeof s === 'object' && s.url !== undefined) {
    const url = absoluteUrl(s.url);
    const name = s.name ?? baseName(new URL(url).pathname);
    const bytes = await download(url, name, { cache: false });
    if (bytes === NOT_FOUND) throw new WebtuneError('FILE_MISSING', `${what}: ${name} was not found at ${url} (HTTP 404)`);
    return { name, bytes };
  }
  if (s && typeof s === 'object' && typeof s.name === 'string' && s.data !== undefined) {
    return { name: s.name, bytes: await toBytes(s.data, what) };
  }
  throw new WebtuneError(
    'INVALID_DATASET',
    `${what} must be a File, {name, data}, {url, name?} or an array of row objects (e.g. [{prompt, completion}])`,
  );
}

/**
 * Entries of a zip file (stored or deflated, no zip64), as `{name: bytes}` with folders stripped.
 * @param {Uint8Array} zip
 */
export async function unzip(zip) {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new WebtuneError('INVALID_ADAPTER', 'the adapter file is not a zip archive');
  const count = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  /** @type {Record<string, Uint8Array>} */
  const files = {};
  for (let n = 0; n < count; n++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw new WebtuneError('INVALID_ADAPTER', 'the adapter zip is corrupt');
    const method = view.getUint16(p + 10, true);
    const size = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const name = decoder.decode(zip.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith('/')) continue;
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const data = zip.subarray(start, start + size);
    if (method === 0) {
      files[baseName(name)] = data;
    } else if (method === 8) {
      // A copy: Blob refuses views of a SharedArrayBuffer.
      const stream = new Blob([new Uint8Array(data)]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
      files[baseName(name)] = new Uint8Array(await new Response(stream).arrayBuffer());
    } else {
      throw new WebtuneError('INVALID_ADAPTER', `${name} in the adapter zip uses an unsupported compression method (${method})`);
    }
  }
  return files;
}

/**
 * `adapter_config.json` text and the weights from picked files, a record of files, or a zip
 * (webtune's `adapter.zip`): PEFT's `adapter_model.safetensors` or AdapterHub's
 * `adapter.safetensors` (`weightsFile` says which). Pickled weights are refused.
 * @param {any} source
 * @returns {Promise<{ config: string, weights: Uint8Array, weightsFile: 'adapter_model.safetensors' | 'adapter.safetensors' }>}
 */
export async function readAdapterFiles(source) {
  /** @type {Record<string, Uint8Array>} */
  let files = {};
  const isZip = (/** @type {string} */ name) => name.toLowerCase().endsWith('.zip');
  if ((typeof Blob !== 'undefined' && source instanceof Blob) || source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    files = await unzip(await toBytes(source, 'the adapter'));
  } else {
    const { entries } = fileEntries(source, 'adapter files');
    for (const [name, value] of entries) {
      const bytes = await toBytes(value, `adapter file ${name}`);
      if (isZip(name)) Object.assign(files, await unzip(bytes));
      else files[name] = bytes;
    }
  }
  if (files['adapter.gguf'] || Object.keys(files).some((n) => n.endsWith('.gguf'))) {
    throw new WebtuneError('INVALID_ADAPTER', 'GGUF adapters cannot be loaded: pick the PEFT files (adapter_config.json and adapter_model.safetensors) or adapter.zip');
  }
  if (!files['adapter_config.json']) {
    throw new WebtuneError(
      'FILE_MISSING',
      'adapter_config.json is missing: pick the adapter folder\'s adapter_config.json and adapter_model.safetensors, or the adapter.zip webtune exported',
    );
  }
  const config = decoder.decode(files['adapter_config.json']);
  for (const weightsFile of /** @type {const} */ (['adapter_model.safetensors', 'adapter.safetensors'])) {
    if (files[weightsFile]) return { config, weights: files[weightsFile], weightsFile };
  }
  for (const [pickle, resave] of [
    ['adapter_model.bin', 'with PEFT: `PeftModel.from_pretrained(base, "DIR").save_pretrained("OUT")`'],
    ['pytorch_adapter.bin', 'with AdapterHub: `model.load_adapter("DIR"); model.save_adapter("OUT", name, use_safetensors=True)`'],
  ]) {
    if (files[pickle]) {
      throw new WebtuneError(
        'INVALID_ADAPTER',
        `${pickle} is a pickled PyTorch file, which webtune does not read (loading a pickle can run code). Re-save it as safetensors ${resave}, then pick OUT`,
      );
    }
  }
  throw new WebtuneError('FILE_MISSING', 'adapter_model.safetensors (PEFT) or adapter.safetensors (AdapterHub) is missing');
}
