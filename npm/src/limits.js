// Whether a model's weights fit the GPU, checked from the safetensors headers before any weight is
// copied into wasm memory or onto the GPU. A tensor over the device's buffer limits would make the
// upload fail (or the tab run out of memory on the way there); this says so at once, naming it.

import { WebtuneError } from './errors.js';

/** Headers longer than this are not safetensors headers (the core reports the file as corrupt). */
const MAX_HEADER = 100 * 1024 * 1024;
/** The weights are f32 on the GPU, whatever their dtype in the file. */
const GPU_BYTES_PER_VALUE = 4;

/** @typedef {{ name: string, shape: number[] }} TensorInfo */

/** @param {number} n */
function gib(n) {
  return `${(n / 2 ** 30).toFixed(n >= 10 * 2 ** 30 ? 0 : 2)} GiB`;
}

/**
 * The tensors named in a safetensors header, or [] when the bytes are not a readable header (the
 * core reports that properly when it loads the file).
 * @param {Uint8Array} head the file's first bytes: 8 (the header length) + the header
 * @returns {TensorInfo[]}
 */
function parseHeader(head) {
  try {
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const n = Number(view.getBigUint64(0, true));
    if (n > MAX_HEADER || head.length < 8 + n) return [];
    const header = JSON.parse(new TextDecoder().decode(head.subarray(8, 8 + n)));
    return Object.entries(header)
      .filter(([name, t]) => name !== '__metadata__' && Array.isArray(t?.shape))
      .map(([name, t]) => ({ name, shape: t.shape.map(Number) }));
  } catch {
    return [];
  }
}

/**
 * The tensors of a safetensors file, reading only its header when it is a Blob (a picked file).
 * @param {Blob | Uint8Array} file
 * @returns {Promise<TensorInfo[]>}
 */
export async function safetensorsTensors(file) {
  if (file instanceof Uint8Array) return parseHeader(file);
  if (file.size < 8) return [];
  const length = new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER)) return [];
  return parseHeader(new Uint8Array(await file.slice(0, 8 + Number(length)).arrayBuffer()));
}

/**
 * Rejects a model whose largest tensor is over the GPU's buffer limits, with code `GPU`.
 * @param {TensorInfo[]} tensors
 * @param {{ maxStorageBufferBindingSize: number, maxBufferSize: number }} gpu
 * @param {string} file for the message
 */
export function checkTensorsFitGpu(tensors, gpu, file) {
  const limit = Math.min(gpu.maxStorageBufferBindingSize, gpu.maxBufferSize);
  let largest = null;
  let largestBytes = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, d) => a * d, 1) * GPU_BYTES_PER_VALUE;
    if (bytes > largestBytes) {
      largest = t;
      largestBytes = bytes;
    }
  }
  if (largest && largestBytes > limit) {
    throw new WebtuneError(
      'GPU',
      `this model is too large for this GPU: ${largest.name} in ${file} (${largest.shape.join(' × ')}) needs ${gib(largestBytes)} ` +
        `as f32, over the GPU's limit of ${gib(limit)} per buffer. Choose a smaller model, or a browser and GPU with larger limits`,
    );
  }
}
