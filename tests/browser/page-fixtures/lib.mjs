// Helpers for the page tests (tests/browser/page*.test.mjs): driving www/index.html, and small
// dependency-free readers for what it downloads (store-only zip, safetensors, GGUF).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { before, after } from 'node:test';
import { openPage, startServer, launchBrowser } from '../harness.mjs';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
export const WWW = path.join(ROOT, 'www');
export const FIXTURES = path.join(ROOT, 'tests/browser/page-fixtures');
/** The folder served as the page: www/, or another copy of it named by WEBTUNE_PAGE_ROOT. */
export const PAGE_ROOT = process.env.WEBTUNE_PAGE_ROOT || WWW;

/** Fails early with a clear message when the page's generated parts are missing. */
export function checkBuilt() {
  const missing = ['www/pkg/webtune_bg.wasm', 'www/webtune/index.js', 'www/demo/config.json', 'www/demo/train.jsonl', 'www/demo/eval.jsonl']
    .filter((p) => !fs.existsSync(path.join(ROOT, p)));
  if (missing.length) {
    throw new Error(`missing ${missing.join(', ')}: run scripts/build-wasm.sh and scripts/build-npm.sh first`);
  }
}

/**
 * A test file's page set-up: before its tests, checks the build, serves the page and starts
 * Chromium; after them, closes the page the tests opened (`suite.page`), the browser and the
 * server. Returns the object whose `server`, `browser` and `page` the tests use.
 */
export function pageSuite() {
  const suite = { server: null, browser: null, page: null };
  before(async () => {
    checkBuilt();
    suite.server = await startServer(PAGE_ROOT);
    suite.browser = await launchBrowser();
  });
  after(async () => {
    await suite.page?.close().catch(() => {});
    await suite.browser?.close();
    await suite.server?.close();
  });
  return suite;
}

// --- driving the page -----------------------------------------------------------------------------

/**
 * Opens the page in a fresh context (or `options.context`'s) and waits until it has started: the
 * engine is up and the demo model and data are loaded. Returns the harness page.
 */
export async function openApp(browser, url, options = {}) {
  const page = await openPage(browser, url, {
    contextOptions: { viewport: { width: 1280, height: 900 }, acceptDownloads: true, ...(options.contextOptions ?? {}) },
    allowedOrigins: options.allowedOrigins,
    timeout: 120_000,
    goto: options.goto,
  });
  if (options.goto !== false) await waitReady(page, options);
  return page;
}

export async function waitReady(page, { demo = true } = {}) {
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 180_000 });
  const engine = await page.evaluate(() => document.body.dataset.engine);
  if (engine !== 'ready') {
    const alerts = await page.locator('#alerts').innerText();
    throw new Error(`the engine did not start: ${alerts}`);
  }
  if (demo) {
    await page.waitForFunction(() => document.body.dataset.model === 'loaded' && document.body.dataset.preview === 'ready', null, { timeout: 120_000 });
  }
}

/** Waits until body[data-<key>] is one of `values` (the page's progress marks); returns it. */
export async function waitData(page, key, values, timeout = 300_000) {
  const list = Array.isArray(values) ? values : [values];
  await page.waitForFunction(([k, vs]) => vs.includes(document.body.dataset[k]), [key, list], { timeout });
  return page.evaluate((k) => document.body.dataset[k], key);
}

/** A step of the page by its heading: 'Model', 'Data', 'Settings', 'Train', 'Try it', 'Export'. */
export function section(page, name) {
  return page.getByRole('region', { name, exact: true });
}

/** Sets a settings field by its label (e.g. 'Steps', 'Evaluate every (steps)'). */
export async function setOption(page, label, value) {
  await section(page, 'Settings').getByLabel(label, { exact: true }).fill(String(value));
}

/** Clicks a button of step 4 (Train): 'Start training', 'Pause', 'Resume', 'Stop'. */
export async function trainButton(page, name) {
  await section(page, 'Train').getByRole('button', { name, exact: true }).click();
}

/** The value of a statistic of step 4 ('Step', 'Train loss', ...). */
export async function stat(page, name) {
  const term = page.locator('dt', { hasText: new RegExp(`^${name}$`) });
  return section(page, 'Train').locator('#train-stats > div', { has: term }).locator('dd').innerText();
}

/** The steps done, from step 4's "Step k / n". */
export async function stepsDone(page) {
  return Number((await stat(page, 'Step')).split('/')[0]);
}

/** The run's loss history as the page's table shows it: [{step, loss?, evalLoss?}]. */
export async function lossHistory(page) {
  const train = section(page, 'Train');
  const details = train.locator('details', { has: page.getByText('Loss per step (table)') });
  if (!(await details.evaluate((d) => d.open))) await train.getByText('Loss per step (table)').click();
  const rows = await train.getByRole('table', { name: 'Loss per step (table)' }).locator('tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent)));
  return rows.map(([step, loss, evalLoss]) => ({
    step: Number(step),
    ...(loss !== '–' ? { loss: Number(loss) } : {}),
    ...(evalLoss !== '–' ? { evalLoss: Number(evalLoss) } : {}),
  }));
}

/** The training options of the last run, from step 4's "Settings of this run". */
export async function runSettings(page) {
  return JSON.parse(await section(page, 'Train').locator('#run-settings pre').textContent());
}

/** Trains to the end with the current settings; returns the loss history. */
export async function trainToEnd(page, timeout = 600_000) {
  await trainButton(page, 'Start training');
  const end = await waitData(page, 'trainState', ['done', 'stopped', 'failed'], timeout);
  if (end === 'failed') throw new Error(`training failed: ${await page.locator('#alerts').innerText()}`);
  return lossHistory(page);
}

/** The export step's button of each format. */
export const EXPORT_BUTTONS = {
  peft: 'Download PEFT adapter (.zip)',
  adapterhub: 'Download AdapterHub adapter (.zip)',
  gguf: 'Download GGUF LoRA',
  merged: 'Download merged model (.zip)',
};

/** Clicks an export button and returns the downloaded file {name, bytes}. */
export async function exportFile(page, format) {
  let download;
  try {
    [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 120_000 }),
      section(page, 'Export').getByRole('button', { name: EXPORT_BUTTONS[format] ?? 'Download PEFT adapter (.zip)' }).click(),
    ]);
  } catch (error) {
    // Say what the page shows, so a failure in CI can be understood from the log alone.
    const status = await page.locator('#export-status').innerText().catch(() => '?');
    const alerts = await page.locator('#alerts').innerText().catch(() => '?');
    const data = await page.evaluate(() => ({ ...document.body.dataset })).catch(() => ({}));
    throw new Error(`no ${format} download: ${error.message}\nexport status: ${status}\nalerts: ${alerts}\npage state: ${JSON.stringify(data)}`);
  }
  const file = await download.path();
  return { name: download.suggestedFilename(), bytes: fs.readFileSync(file) };
}

/** The visible text of the alerts area. */
export async function alertsText(page) {
  return page.locator('#alerts').innerText();
}

/** The alert with this id (e.g. 'error-train', 'resume'). */
export function alert(page, id) {
  return page.locator(`[data-alert-id="${id}"]`);
}

// --- zip (store-only, as webtune writes it; deflate is refused) ------------------------------------

export function readZip(buf) {
  const b = Buffer.from(buf);
  let eocd = -1;
  for (let i = b.length - 22; i >= Math.max(0, b.length - 65557); i--) {
    if (b.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('zip: no end of central directory');
  const count = b.readUInt16LE(eocd + 10);
  let p = b.readUInt32LE(eocd + 16);
  const files = {};
  for (let n = 0; n < count; n++) {
    if (b.readUInt32LE(p) !== 0x02014b50) throw new Error(`zip: bad central directory entry ${n}`);
    const method = b.readUInt16LE(p + 10);
    const crc = b.readUInt32LE(p + 16);
    const size = b.readUInt32LE(p + 20);
    const nameLen = b.readUInt16LE(p + 28);
    const extraLen = b.readUInt16LE(p + 30);
    const commentLen = b.readUInt16LE(p + 32);
    const local = b.readUInt32LE(p + 42);
    const name = b.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    p += 46 + nameLen + extraLen + commentLen;
    if (b.readUInt32LE(local) !== 0x04034b50) throw new Error(`zip: bad local header of ${name}`);
    if (method !== 0) throw new Error(`zip: ${name} uses compression method ${method}, expected 0 (stored)`);
    const start = local + 30 + b.readUInt16LE(local + 26) + b.readUInt16LE(local + 28);
    const data = b.subarray(start, start + size);
    if (crc32(data) !== crc) throw new Error(`zip: CRC mismatch for ${name}`);
    files[name] = Buffer.from(data);
  }
  return files;
}

let crcTable;
export function crc32(data) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const byte of data) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// --- safetensors ------------------------------------------------------------------------------------

const DTYPES = { F32: [4, 'getFloat32'], F64: [8, 'getFloat64'], I64: [8, 'getBigInt64'], I32: [4, 'getInt32'], F16: [2, null], BF16: [2, null] };

/** { name: { dtype, shape, data: number[] (F32 as Float32Array) } } and `__metadata__`. */
export function readSafetensors(buf) {
  const b = Buffer.from(buf);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const base = 8 + n;
  const out = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      out.__metadata__ = info;
      continue;
    }
    const [start, end] = info.data_offsets;
    const raw = b.subarray(base + start, base + end);
    let data;
    if (info.dtype === 'F32') {
      data = new Float32Array(raw.length / 4);
      for (let i = 0; i < data.length; i++) data[i] = raw.readFloatLE(4 * i);
    } else {
      data = raw;
    }
    const expected = info.shape.reduce((a, x) => a * x, 1) * (DTYPES[info.dtype]?.[0] ?? 1);
    if (raw.length !== expected) throw new Error(`safetensors: ${name} has ${raw.length} bytes, shape ${info.shape} needs ${expected}`);
    out[name] = { dtype: info.dtype, shape: info.shape, data };
  }
  return out;
}

/** Writes F32 tensors {name: {shape, data: Float32Array|Buffer(raw)}} as a safetensors file. */
export function writeSafetensors(tensors, metadata) {
  const header = {};
  const parts = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const raw = Buffer.isBuffer(t.data) ? t.data : Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype ?? 'F32', shape: t.shape, data_offsets: [offset, offset + raw.length] };
    parts.push(raw);
    offset += raw.length;
  }
  if (metadata) header.__metadata__ = metadata;
  let json = Buffer.from(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, ...parts]);
}

/** Largest |a - b| over two F32 tensors of the same shape. */
export function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// --- GGUF -------------------------------------------------------------------------------------------

/** { version, metadata: {key: value}, tensors: [{name, dims (ne order), type, offset, data?}] }. */
export function readGguf(buf) {
  const b = Buffer.from(buf);
  let p = 0;
  const u32 = () => { const v = b.readUInt32LE(p); p += 4; return v; };
  const u64 = () => { const v = b.readBigUInt64LE(p); p += 8; return Number(v); };
  const str = () => { const n = u64(); const s = b.subarray(p, p + n).toString('utf8'); p += n; return s; };
  const value = (type) => {
    switch (type) {
      case 0: return b.readUInt8(p++);
      case 1: return b.readInt8(p++);
      case 2: { const v = b.readUInt16LE(p); p += 2; return v; }
      case 3: { const v = b.readInt16LE(p); p += 2; return v; }
      case 4: return u32();
      case 5: { const v = b.readInt32LE(p); p += 4; return v; }
      case 6: { const v = b.readFloatLE(p); p += 4; return v; }
      case 7: return b.readUInt8(p++) !== 0;
      case 8: return str();
      case 9: { const t = u32(); const n = u64(); return Array.from({ length: n }, () => value(t)); }
      case 10: return u64();
      case 11: { const v = b.readBigInt64LE(p); p += 8; return Number(v); }
      case 12: { const v = b.readDoubleLE(p); p += 8; return v; }
      default: throw new Error(`gguf: unknown value type ${type} at ${p}`);
    }
  };
  if (b.subarray(0, 4).toString('latin1') !== 'GGUF') throw new Error('gguf: bad magic');
  p = 4;
  const version = u32();
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = {};
  const types = {};
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const type = u32();
    types[key] = type;
    metadata[key] = value(type);
  }
  const tensors = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDims = u32();
    const dims = Array.from({ length: nDims }, () => u64());
    const type = u32();
    const offset = u64();
    tensors.push({ name, dims, type, offset });
  }
  const alignment = metadata['general.alignment'] ?? 32;
  const dataStart = Math.ceil(p / alignment) * alignment;
  for (const t of tensors) {
    if (t.type !== 0) continue;
    const n = t.dims.reduce((a, x) => a * x, 1);
    const start = dataStart + t.offset;
    if (start + 4 * n > b.length) throw new Error(`gguf: tensor ${t.name} runs past the end of the file`);
    t.data = new Float32Array(n);
    for (let i = 0; i < n; i++) t.data[i] = b.readFloatLE(start + 4 * i);
  }
  return { version, metadata, types, tensors };
}

// --- the native CLI -----------------------------------------------------------------------------------

/** The newest `webtune` CLI binary built by `cargo test` / `cargo build`, or undefined. */
export function findCli() {
  const candidates = [
    process.env.WEBTUNE_CLI,
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, 'debug/webtune'),
    path.join(os.homedir(), '.cache/webtune/target/debug/webtune'),
    path.join(ROOT, 'target/debug/webtune'),
    path.join(ROOT, '../target/debug/webtune'),
  ].filter((p) => p && fs.existsSync(p));
  candidates.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return process.env.WEBTUNE_CLI && fs.existsSync(process.env.WEBTUNE_CLI) ? process.env.WEBTUNE_CLI : candidates[0];
}

/** The `webtune train` flags for a page TrainingConfig (camelCase keys → the CLI's kebab-case flags). */
export function cliArgs(config) {
  const args = [];
  const flag = (name, value) => {
    if (value === undefined || value === null) return;
    args.push(`--${name}`, String(value));
  };
  flag('method', config.method);
  flag('init', config.init);
  flag('init-text', config.initText);
  flag('r', config.r);
  flag('alpha', config.alpha);
  flag('dropout', config.dropout);
  if (config.targets) flag('targets', config.targets.join(','));
  if (config.rslora) args.push('--rslora');
  flag('virtual-tokens', config.virtualTokens);
  flag('lr', config.lr);
  flag('weight-decay', config.weightDecay);
  flag('schedule', config.schedule);
  flag('warmup-steps', config.warmupSteps);
  flag('batch-size', config.batchSize);
  flag('grad-accum', config.gradAccum);
  flag('clip', config.clip);
  flag('steps', config.steps);
  flag('epochs', config.epochs);
  flag('max-len', config.maxLen);
  flag('eval-every', config.evalEvery);
  flag('eval-split', config.evalSplit);
  flag('early-stopping-patience', config.earlyStoppingPatience);
  flag('early-stopping-threshold', config.earlyStoppingThreshold);
  if (config.shuffle === false) args.push('--shuffle', 'false');
  flag('seed', config.seed);
  flag('template', config.template);
  if (config.skipBadRows) args.push('--skip-bad-rows');
  return args;
}

/** Runs a command; resolves {code, stdout, stderr}. */
export function run(cmd, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
