// WebGPU before and around the engine: whether this browser can have it at all (checked on the
// calling thread, so that createWorkerEngine fails before it downloads anything), a readable
// adapter name, and the loss of the device the wasm side trains on.

import { WebtuneError } from './errors.js';

const NO_WEBGPU_HELP =
  'webtune needs WebGPU: Chrome or Edge 113+ (Windows, macOS, ChromeOS; Android 12+ from Chrome 121), ' +
  'Safari 26+ (macOS, iOS, iPadOS) or Firefox 141+ (Windows). On Linux, Chrome needs WebGPU switched on: ' +
  'enable chrome://flags/#enable-unsafe-webgpu (or start it with --enable-unsafe-webgpu). ' +
  'Check that hardware acceleration is on in the browser settings.';

/**
 * The parts of the WebGPU API used here (the DOM library of TypeScript has no WebGPU types).
 * @typedef {{ reason: string, message: string }} DeviceLostInfo
 * @typedef {{ lost: Promise<DeviceLostInfo> }} GpuDevice
 * @typedef {{ vendor?: string, architecture?: string, description?: string, isFallbackAdapter?: boolean }} GpuAdapterInfo
 * @typedef {{ info?: GpuAdapterInfo, requestDevice(...args: unknown[]): Promise<GpuDevice> }} GpuAdapter
 * @typedef {{ requestAdapter(): Promise<GpuAdapter | null> }} Gpu
 */

/**
 * `navigator.gpu`, or NO_WEBGPU when this thread cannot use WebGPU at all. Requests no adapter.
 * @returns {Gpu}
 */
export function requireWebGpuApi() {
  if (globalThis.isSecureContext === false) {
    throw new WebtuneError('NO_WEBGPU', 'WebGPU only works in secure contexts: serve the page over https:// (or from http://localhost while developing)');
  }
  const gpu = /** @type {{ gpu?: Gpu } | undefined} */ (globalThis.navigator)?.gpu;
  if (!gpu) throw new WebtuneError('NO_WEBGPU', `this browser does not expose WebGPU (navigator.gpu). ${NO_WEBGPU_HELP}`);
  return gpu;
}

/** The browser's adapter info; NO_WEBGPU when there is no usable adapter. */
export async function requireAdapterInfo() {
  const gpu = requireWebGpuApi();
  /** @type {GpuAdapter | null} */
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch {
    // treated like "no adapter"
  }
  if (!adapter) {
    throw new WebtuneError(
      'NO_WEBGPU',
      `this browser has WebGPU but no usable GPU adapter (the GPU may be blocklisted, or hardware acceleration is off). ${NO_WEBGPU_HELP}`,
    );
  }
  return adapter.info ?? {};
}

/**
 * A readable adapter name: wgpu's own is often empty in browsers, which hide the description.
 * @param {string} wgpuName @param {GpuAdapterInfo} info
 */
export function adapterName(wgpuName, info) {
  const described = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ');
  const name = wgpuName || described || 'WebGPU adapter';
  return info.isFallbackAdapter ? `${name} (software)` : name;
}

/**
 * Runs `init` (the wasm side acquiring its GPU device) and keeps the device it requested, to learn
 * of the device's loss: wasm-bindgen hands the GPUDevice to wgpu only. Resolves to init's result
 * and a watch whose `lost` is set once the device is lost.
 * @template T
 * @param {() => Promise<T>} init
 * @returns {Promise<{ result: T, watch: DeviceWatch }>}
 */
export async function initWatchingDevice(init) {
  const proto = /** @type {{ prototype: GpuAdapter } | undefined} */ (/** @type {any} */ (globalThis).GPUAdapter)?.prototype;
  const requestDevice = proto?.requestDevice;
  /** @type {GpuDevice | undefined} */
  let device;
  if (proto && requestDevice) {
    proto.requestDevice = async function (...args) {
      const d = await requestDevice.apply(this, args);
      device ??= d;
      return d;
    };
  }
  try {
    const result = await init();
    return { result, watch: new DeviceWatch(device) };
  } finally {
    if (proto && requestDevice) proto.requestDevice = requestDevice;
  }
}

export class DeviceWatch {
  /** @type {DeviceLostInfo | null} */
  lost = null;
  /** @type {Promise<DeviceLostInfo> | null} */
  #lostPromise = null;

  /** @param {GpuDevice | undefined} device */
  constructor(device) {
    if (device?.lost) {
      this.#lostPromise = device.lost.then((info) => (this.lost = info));
    }
  }

  /** DEVICE_LOST once the device is lost. */
  check() {
    if (this.lost) throw this.error();
  }

  /**
   * Whether the device is lost, waiting up to `ms` for the loss to be reported: a failed GPU
   * operation can arrive before the device's `lost` promise settles.
   * @param {number} ms
   */
  async isLost(ms) {
    if (this.lost || !this.#lostPromise) return !!this.lost;
    await Promise.race([this.#lostPromise, new Promise((resolve) => setTimeout(resolve, ms))]);
    return !!this.lost;
  }

  error() {
    const info = this.lost ?? { reason: 'unknown', message: '' };
    return new WebtuneError(
      'DEVICE_LOST',
      `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''}): this engine cannot use the GPU any more. ` +
        'dispose() it, create a new engine (it gets a new device) and continue from your last checkpoint',
    );
  }
}
