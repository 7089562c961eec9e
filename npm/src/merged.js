// The merged-model export (exportAdapter({format: "merged"})): the wasm side produces the model
// folder piece by piece (WebMergedModel.next), reading the base's files by range; these helpers
// give it a synchronous range reader over the files the model was loaded from and write the
// pieces to a picked directory (File System Access API) or into a zip assembled as a Blob of
// parts, so that the merged weights are never held in memory twice.

import { WebtuneError } from './errors.js';

/** @typedef {{ file: string, offset: number, fileLength: number, bytes: Uint8Array }} MergedChunk */

/**
 * Sizes and a synchronous `readRange(name, offset, length)` over the base model's files. Blobs
 * (picked Files, cached downloads) are read by `Blob.slice` through `FileReaderSync` where it
 * exists (a worker: the page's `createWorkerEngine`); elsewhere each Blob is read into memory first.
 * @param {Record<string, Blob | Uint8Array>} files
 */
export async function rangeReader(files) {
  /** @type {Record<string, number>} */
  const sizes = {};
  /** @type {Record<string, Blob | Uint8Array>} */
  const held = {};
  const FileReaderSyncClass = /** @type {any} */ (globalThis).FileReaderSync;
  for (const [name, value] of Object.entries(files)) {
    if (value instanceof Uint8Array) {
      held[name] = value;
      sizes[name] = value.byteLength;
    } else {
      held[name] = FileReaderSyncClass ? value : new Uint8Array(await value.arrayBuffer());
      sizes[name] = value.size;
    }
  }
  const reader = FileReaderSyncClass ? new FileReaderSyncClass() : null;
  /** @param {string} name @param {number} offset @param {number} length */
  const readRange = (name, offset, length) => {
    const value = held[name];
    if (value instanceof Uint8Array) return value.subarray(offset, offset + length);
    return new Uint8Array(reader.readAsArrayBuffer(value.slice(offset, offset + length)));
  };
  return { sizes, readRange };
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (zip's) of `bytes`, continuing from `crc`. @param {Uint8Array} bytes @param {number} crc */
function crc32(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** The largest zip this writer makes (no zip64): 4 GiB. */
const ZIP_LIMIT = 0xffffffff;

/**
 * A zip (stored, no compression) built as a Blob of parts: each piece becomes a Blob when it
 * arrives (the browser may keep it on disk), local headers carry sizes and CRCs in data
 * descriptors, so no file is held whole.
 */
export function zipSink() {
  const encoder = new TextEncoder();
  /** @type {Blob[]} */
  const parts = [];
  /** @type {Array<{ name: Uint8Array, offset: number, size: number, crc: number }>} */
  const entries = [];
  let position = 0;
  /** @type {{ name: Uint8Array, offset: number, size: number, crc: number } | null} */
  let current = null;
  /** @param {Uint8Array} bytes */
  const push = (bytes) => {
    parts.push(new Blob([/** @type {Uint8Array<ArrayBuffer>} */ (bytes)]));
    position += bytes.length;
    if (position > ZIP_LIMIT) {
      throw new WebtuneError('INVALID_OPTIONS', 'the merged model is over 4 GiB, too large for a zip download: pass {directory} (showDirectoryPicker) to write it to disk');
    }
  };
  return {
    /** @param {MergedChunk} chunk */
    write(chunk) {
      if (chunk.offset === 0) {
        const name = encoder.encode(chunk.file);
        current = { name, offset: position, size: 0, crc: 0 };
        const header = new Uint8Array(30 + name.length);
        const view = new DataView(header.buffer);
        view.setUint32(0, 0x04034b50, true);
        view.setUint16(4, 20, true); // version needed
        view.setUint16(6, 0x0808, true); // data descriptor follows; UTF-8 names
        header.set(name, 30);
        view.setUint16(26, name.length, true);
        push(header);
      }
      if (!current) throw new WebtuneError('INTERNAL', `a piece of ${chunk.file} came before its start`);
      current.crc = crc32(chunk.bytes, current.crc);
      current.size += chunk.bytes.length;
      push(chunk.bytes);
      if (chunk.offset + chunk.bytes.length === chunk.fileLength) {
        const descriptor = new Uint8Array(16);
        const view = new DataView(descriptor.buffer);
        view.setUint32(0, 0x08074b50, true);
        view.setUint32(4, current.crc, true);
        view.setUint32(8, current.size, true);
        view.setUint32(12, current.size, true);
        push(descriptor);
        entries.push(current);
        current = null;
      }
    },
    finish() {
      const start = position;
      for (const e of entries) {
        const record = new Uint8Array(46 + e.name.length);
        const view = new DataView(record.buffer);
        view.setUint32(0, 0x02014b50, true);
        view.setUint16(4, 20, true);
        view.setUint16(6, 20, true);
        view.setUint16(8, 0x0808, true);
        view.setUint32(16, e.crc, true);
        view.setUint32(20, e.size, true);
        view.setUint32(24, e.size, true);
        view.setUint16(28, e.name.length, true);
        view.setUint32(42, e.offset, true);
        record.set(e.name, 46);
        push(record);
      }
      const end = new Uint8Array(22);
      const view = new DataView(end.buffer);
      view.setUint32(0, 0x06054b50, true);
      view.setUint16(8, entries.length, true);
      view.setUint16(10, entries.length, true);
      view.setUint32(12, position - start, true);
      view.setUint32(16, start, true);
      push(end);
      return new Blob(parts, { type: 'application/zip' });
    },
  };
}

/**
 * Writes the pieces into files of a directory the user picked (`showDirectoryPicker`): each file
 * through `createWritable`, which the browser commits only when the file is complete.
 * @param {FileSystemDirectoryHandle} directory
 */
export function directorySink(directory) {
  /** @type {any} */
  let writable = null;
  /** @type {string[]} */
  const written = [];
  return {
    /** @param {MergedChunk} chunk */
    async write(chunk) {
      if (chunk.offset === 0) {
        const handle = await directory.getFileHandle(chunk.file, { create: true });
        writable = await /** @type {any} */ (handle).createWritable();
      }
      await writable.write(chunk.bytes);
      if (chunk.offset + chunk.bytes.length === chunk.fileLength) {
        await writable.close();
        writable = null;
        written.push(chunk.file);
      }
    },
    async abort() {
      await writable?.abort();
    },
    written,
  };
}
