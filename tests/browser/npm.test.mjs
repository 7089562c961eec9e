// The npm package as an app developer gets it: `npm pack` of npm/dist, installed OFFLINE from the
// tarball into a fresh copy of examples/vite-app, type-checked (`tsc --noEmit` against the shipped
// .d.ts; the package's own JavaScript too, with checkJs), built with `vite build`, served, and run in headless Chromium (SwiftShader WebGPU):
//   - index.html (the example as is, main-thread engine): 3 training steps, PEFT zip download link;
//   - worker.html (tests/browser/npm-app, added to the copy): the worker engine through the whole
//     API: progress, metrics iterator, pause/checkpoint/resume, streamed and aborted generation,
//     PEFT + GGUF export (parsed here), loadAdapter, evaluate, resume from checkpoint, error codes;
//   - index.html with navigator.gpu hidden: the NO_WEBGPU error.
// Prints the package size (tarball, wasm raw and gzip) and the example's line count.
//
// Offline install: the tarball has no dependencies, so `npm install --offline <tarball>` needs no
// registry (the registry is pointed at a dead port to prove it). vite and typescript are not
// installed into the fresh project: they are symlinked from the repository's node_modules (`npm ci`
// at the root), so nothing is downloaded and the test does not depend on the npm cache.
//
// Needs: www/pkg (scripts/build-wasm.sh); runs scripts/build-npm.sh itself (a copy, seconds).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { startServer, launchBrowser, openPage, screenshot } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = path.join(ROOT, 'npm', 'dist');
const EXAMPLE = path.join(ROOT, 'examples', 'vite-app');
const EXTRA = path.join(ROOT, 'tests', 'browser', 'npm-app');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let tmp, app, server, browser;

function run(cmd, args, cwd, env = {}) {
  const t0 = Date.now();
  try {
    const out = execFileSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    console.log(`$ ${[cmd, ...args].join(' ')}  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return out;
  } catch (e) {
    throw new Error(`${[cmd, ...args].join(' ')} failed in ${cwd}:\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

/** Copies a directory tree without node_modules and dist. */
function copyTree(from, to) {
  fs.cpSync(from, to, { recursive: true, filter: (src) => !/[\\/](node_modules|dist)$/.test(src) });
}

/** Lines of the example's source files. */
function lineCount(file) {
  return fs.readFileSync(file, 'utf8').trimEnd().split('\n').length;
}

/** The entries of a zip from its central directory: name → bytes (stored entries only). */
function zipEntries(bytes) {
  const buf = Buffer.from(bytes);
  const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buf.readUInt16LE(eocd + 10);
  let at = buf.readUInt32LE(eocd + 16);
  const entries = {};
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50, 'central directory record');
    const size = buf.readUInt32LE(at + 20);
    const nameLength = buf.readUInt16LE(at + 28);
    const extra = buf.readUInt16LE(at + 30) + buf.readUInt16LE(at + 32);
    const local = buf.readUInt32LE(at + 42);
    const name = buf.subarray(at + 46, at + 46 + nameLength).toString('utf8');
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    entries[name] = buf.subarray(start, start + size);
    assert.equal(zlib.crc32(entries[name]), buf.readUInt32LE(at + 16), `${name}: CRC`);
    at += 46 + nameLength + extra;
  }
  return entries;
}

/** Names of the entries in a zip's central directory. */
function zipNames(bytes) {
  const buf = Buffer.from(bytes);
  const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(eocd >= 0, 'no end-of-central-directory record: not a zip');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const names = [];
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(p), 0x02014b50, 'bad central directory entry');
    const nameLen = buf.readUInt16LE(p + 28);
    names.push(buf.subarray(p + 46, p + 46 + nameLen).toString('utf8'));
    p += 46 + nameLen + buf.readUInt16LE(p + 30) + buf.readUInt16LE(p + 32);
  }
  return names;
}

/** The header of a GGUF file: version, key/values (scalars and strings) and tensor infos. */
function parseGguf(bytes) {
  const buf = Buffer.from(bytes);
  let p = 0;
  const u32 = () => ((p += 4), buf.readUInt32LE(p - 4));
  const u64 = () => ((p += 8), Number(buf.readBigUInt64LE(p - 8)));
  const str = () => {
    const n = u64();
    p += n;
    return buf.subarray(p - n, p).toString('utf8');
  };
  const sizes = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (type) => {
    switch (type) {
      case 4: return u32();
      case 5: return ((p += 4), buf.readInt32LE(p - 4));
      case 6: return ((p += 4), buf.readFloatLE(p - 4));
      case 7: return ((p += 1), buf[p - 1] !== 0);
      case 8: return str();
      case 9: {
        const itemType = u32();
        const n = u64();
        return Array.from({ length: n }, () => value(itemType));
      }
      case 10: return u64();
      default:
        assert.ok(type in sizes, `unknown GGUF value type ${type}`);
        p += sizes[type];
        return null;
    }
  };
  assert.equal(buf.subarray(0, 4).toString('latin1'), 'GGUF', 'GGUF magic');
  p = 4;
  const version = u32();
  const tensorCount = u64();
  const kvCount = u64();
  const kv = {};
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    kv[key] = value(u32());
  }
  const tensors = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  return { version, kv, tensors, headerEnd: p };
}

/** Tensor names and shapes in a safetensors file. */
function safetensorsHeader(bytes) {
  const buf = Buffer.from(bytes);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  delete header.__metadata__;
  return header;
}

/** A sharded copy of the demo model in Hugging Face's layout under `dir`. */
function writeShardedDemo(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const demo = path.join(DIST, 'demo');
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(demo, f), path.join(dir, f));
  const src = fs.readFileSync(path.join(demo, 'model.safetensors'));
  const n = Number(src.readBigUInt64LE(0));
  const header = safetensorsHeader(src);
  const data = src.subarray(8 + n);
  const names = Object.keys(header);
  const parts = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const weightMap = {};
  parts.forEach((part, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const h = {};
    const buffers = [];
    let offset = 0;
    for (const name of part) {
      const { dtype, shape, data_offsets: [a, b] } = header[name];
      h[name] = { dtype, shape, data_offsets: [offset, offset + b - a] };
      buffers.push(data.subarray(a, b));
      offset += b - a;
      weightMap[name] = file;
    }
    let json = JSON.stringify(h);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(path.join(dir, file), Buffer.concat([len, Buffer.from(json), ...buffers]));
  });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: data.length }, weight_map: weightMap }));
}

before(async () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'www/pkg/webtune_bg.wasm')), 'www/pkg/webtune_bg.wasm is missing: run scripts/build-wasm.sh');
  for (const dep of ['vite', 'typescript']) {
    assert.ok(fs.existsSync(path.join(ROOT, 'node_modules', dep, 'package.json')), `node_modules/${dep} is missing: run npm ci`);
  }
  run('bash', ['scripts/build-npm.sh'], ROOT);

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'webtune-npm-'));
  // 1. npm pack
  const [packed] = JSON.parse(run(NPM, ['pack', '--json', '--pack-destination', tmp], DIST));
  const tarball = path.join(tmp, packed.filename);
  const wasm = fs.readFileSync(path.join(DIST, 'wasm/webtune_bg.wasm'));
  const gzip = zlib.gzipSync(wasm, { level: 6 }).length;
  console.log(
    `package: ${packed.size} bytes tarball (${packed.filename}, ${packed.entryCount} files, ${packed.unpackedSize} bytes unpacked), ` +
      `wasm raw ${wasm.length} bytes, gzip ${gzip} bytes`,
  );
  const packedFiles = packed.files.map((f) => f.path);
  for (const f of ['package.json', 'README.md', 'index.js', 'index.d.ts', 'worker.js', 'worker.d.ts', 'wasm/webtune.js', 'wasm/webtune_bg.wasm', 'demo/model.safetensors', 'demo/train.jsonl']) {
    assert.ok(packedFiles.includes(f), `${f} is not in the tarball: ${packedFiles.join(', ')}`);
  }

  // 2. a fresh Vite project: the example, plus the worker test page
  app = path.join(tmp, 'app');
  copyTree(EXAMPLE, app);
  copyTree(EXTRA, app);
  const main = path.join(EXAMPLE, 'src/main.ts');
  const exampleFiles = ['src/main.ts', 'index.html', 'vite.config.ts', 'tsconfig.json', 'package.json'];
  const total = exampleFiles.reduce((n, f) => n + lineCount(path.join(EXAMPLE, f)), 0);
  console.log(`example: src/main.ts ${lineCount(main)} lines; ${exampleFiles.join(' + ')} ${total} lines`);

  // 3. offline install of the tarball (no registry reachable; vite/typescript symlinked)
  const pkgFile = path.join(app, 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  delete pkg.devDependencies;
  pkg.dependencies.webtune = `file:${tarball}`;
  fs.writeFileSync(pkgFile, JSON.stringify(pkg, null, 2));
  run(NPM, ['install', '--offline', '--no-audit', '--no-fund'], app, { npm_config_registry: 'http://127.0.0.1:9/' });
  // The README's example is type-checked with the example app.
  const readme = fs.readFileSync(path.join(app, 'node_modules/webtune/README.md'), 'utf8');
  const snippet = readme.split('## Example')[1]?.match(/```js\n([\s\S]*?)```/)?.[1];
  assert.ok(snippet, 'README.md has no ## Example with a js block');
  console.log(`README example: ${snippet.trimEnd().split('\n').length} lines`);
  fs.writeFileSync(path.join(app, 'src/readme-example.ts'), `${snippet}\nexport {};\n`);
  const installed = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/webtune/package.json'), 'utf8'));
  assert.equal(installed.name, 'webtune');
  assert.ok(!fs.lstatSync(path.join(app, 'node_modules/webtune')).isSymbolicLink(), 'webtune must be installed from the tarball, not linked');
  for (const dep of ['vite', 'typescript']) {
    fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(app, 'node_modules', dep), 'dir');
  }
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (tmp && !process.env.KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
  else if (tmp) console.log(`kept ${tmp}`);
});

test('tsc --noEmit type-checks the example (with the worker test page and the README example) against the shipped .d.ts', () => {
  run('node', [path.join(app, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', '.'], app);
});

test("the package's JavaScript type-checks against its own .d.ts (checkJs, npm/tsconfig.json)", () => {
  run('node', [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'npm/tsconfig.json')], ROOT);
});

test('vite build bundles the package: wasm and demo assets, worker chunk', () => {
  const out = run('node', [path.join(app, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'vite.test.config.ts'], app);
  console.log(out.trim().split('\n').filter((l) => /dist\//.test(l)).join('\n'));
  const assets = fs.readdirSync(path.join(app, 'dist/assets'));
  assert.ok(assets.some((f) => /^webtune_bg-.*\.wasm$/.test(f)), `no wasm asset: ${assets}`);
  assert.ok(assets.some((f) => /^worker-.*\.js$/.test(f)), `no worker chunk: ${assets}`);
  assert.equal(assets.filter((f) => f.endsWith('.wasm')).length, 1, `the wasm is emitted once: ${assets}`);
  writeShardedDemo(path.join(app, 'dist/hub/webtune/demo-sharded/resolve/main'));
});

test('the built example trains the demo model and exports a PEFT zip (main-thread engine)', { timeout: 300_000 }, async () => {
  server = await startServer(path.join(app, 'dist'));
  browser = await launchBrowser();
  const t0 = Date.now();
  const page = await openPage(browser, server.url);
  await page.waitForFunction(
    () => document.querySelector('a[download]') || /^[A-Z_]+: /m.test(document.querySelector('#log')?.textContent ?? ''),
    null,
    { timeout: 280_000 },
  );
  await screenshot(page, 'npm-example');
  const log = await page.textContent('#log');
  console.log(`example page (${((Date.now() - t0) / 1000).toFixed(1)} s):\n${log.trim()}`);
  const link = await page.$eval('a[download]', (a) => ({ download: a.getAttribute('download'), text: a.textContent }));
  assert.equal(link.download, 'adapter.zip');
  assert.match(log, /step 3\/3: loss \d/);
  const zip = await page.$eval('a[download]', async (a) => Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer())));
  assert.deepEqual(zipNames(zip).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  page.assertClean();
  await page.close();
});

test('the worker engine runs the whole API in the built app', { timeout: 400_000 }, async () => {
  const t0 = Date.now();
  const page = await openPage(browser, `${server.url}worker.html`);
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 380_000 });
  const r = await page.evaluate(() => window.__result);
  await screenshot(page, 'npm-worker');
  console.log(`worker page: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.equal(r.error, undefined, `the page failed: ${JSON.stringify(r.error)}`);

  assert.equal(r.version, installedVersion());
  assert.equal(r.model.name, 'webtune-demo-llama');
  assert.equal(r.model.architecture, 'llama');
  assert.equal(r.model.parameters, 771_456);
  assert.ok(r.phases.includes('load'), `load phases: ${r.phases}`);
  assert.equal(r.totalSteps, 3);
  assert.equal(r.report.trainExamples, 64);
  assert.equal(r.report.evalExamples, 16);

  // The core's run facts before any data (the largest workload the config allows) and for the
  // loaded data: PEFT's default targets (q_proj 128 → 128, v_proj 128 → 64) of 4 layers at rank 8.
  assert.equal(r.facts.trainableParameters, 4 * 8 * (128 + 128 + 128 + 64));
  assert.deepEqual(r.facts.layers.map((l) => l.path), [0, 1, 2, 3].flatMap((i) => [`model.layers.${i}.self_attn.q_proj`, `model.layers.${i}.self_attn.v_proj`]));
  assert.equal(r.facts.memory.weights, 4 * 771_456);
  assert.ok(r.facts.memory.total > r.facts.memory.weights && r.facts.memory.largestBuffer > 0, JSON.stringify(r.facts.memory));
  assert.equal(r.report.facts.trainableParameters, 4 * 8 * (128 + 128 + 128 + 64));
  assert.ok(r.report.facts.memory.total <= r.facts.memory.total, 'the loaded data need at most the planned workload');

  // Progress, metrics iterator, pause (with its checkpoint) and resume.
  assert.deepEqual(r.progress.map((m) => m.step), [1, 2, 3]);
  assert.deepEqual(r.iterated, [1, 2, 3]);
  for (const m of r.progress) {
    assert.ok(Number.isFinite(m.loss) && m.loss > 0, `loss ${m.loss}`);
    assert.ok(m.tokens > 0 && m.supervisedTokens > 0 && m.tokensPerSecond > 0 && m.elapsedMs > 0, JSON.stringify(m));
    assert.equal(m.totalSteps, 3);
    assert.ok(!('grad_norm' in m) && Number.isFinite(m.gradNorm), 'camelCase metrics');
  }
  assert.equal(r.progress[2].etaMs, 0);
  assert.equal(r.pausedState, 'paused');
  assert.ok(r.pausedAt >= 1 && r.pausedAt < 3, `paused after step ${r.pausedAt}`);
  assert.equal(r.checkpoints.length, 1);
  assert.equal(r.checkpoints[0].step, r.pausedAt);
  assert.ok(r.checkpoints[0].size > 0);
  assert.deepEqual(r.summary.state, 'done');
  assert.equal(r.summary.steps, 3);
  assert.ok(Number.isFinite(r.trainerEval));

  // Generation while paused: streamed chunks add up to the text; abort ends it early.
  assert.equal(r.generation.streamed, r.generation.text);
  assert.ok(['length', 'eos'].includes(r.generation.finishReason), r.generation.finishReason);
  assert.equal(r.aborted.finishReason, 'aborted');

  // PEFT export: files, zip, config.
  assert.equal(r.peft.fileName, 'adapter.zip');
  assert.deepEqual(Object.keys(r.peft.files).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  assert.ok(Object.values(r.peft.files).every((n) => n > 0));
  assert.deepEqual(zipNames(r.peft.zip).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  assert.equal(r.peft.config.peft_type, 'LORA');
  assert.equal(r.peft.config.base_model_name_or_path, 'webtune-demo-llama');

  // GGUF export: a llama.cpp LoRA adapter.
  assert.equal(r.gguf.fileName, 'adapter.gguf');
  const gguf = parseGguf(r.gguf.bytes);
  assert.equal(gguf.version, 3);
  assert.equal(gguf.kv['general.type'], 'adapter');
  assert.equal(gguf.kv['adapter.type'], 'lora');
  assert.equal(gguf.kv['general.architecture'], 'llama');
  // 4 layers × (q_proj, v_proj) × (lora_a, lora_b)
  assert.equal(gguf.tensors.length, 16, gguf.tensors.map((t) => t.name).join(', '));
  assert.ok(gguf.tensors.every((t) => /^blk\.\d+\.attn_[qv]\.weight\.lora_[ab]$/.test(t.name)), gguf.tensors.map((t) => t.name).join(', '));
  console.log(`exports: adapter.zip ${r.peft.zip.length} bytes, adapter.gguf ${r.gguf.bytes.length} bytes (${gguf.tensors.length} tensors)`);

  // Evaluate, and the exported zip loads back as the same adapter.
  assert.ok(r.evalTuned.loss > 0 && Math.abs(r.evalTuned.perplexity - Math.exp(r.evalTuned.loss)) < 1e-6 * r.evalTuned.perplexity);
  assert.ok(Number.isFinite(r.evalBase.loss));
  assert.deepEqual(r.loadAdapter, { peftType: 'LORA', method: 'lora', trainableParameters: 4 * 8 * (128 + 128 + 128 + 64), exportFormats: ['peft', 'gguf', 'merged'] });
  assert.ok(Math.abs(r.evalLoaded.loss - r.evalTuned.loss) < 1e-4, `loaded ${r.evalLoaded.loss} vs trained ${r.evalTuned.loss}`);

  // The merged model: a Hugging Face folder in a zip, the base's tensors with their dtypes and shapes.
  assert.equal(r.merged.fileName, 'webtune-demo-llama-merged.zip');
  assert.deepEqual(r.merged.files, []);
  const merged = zipEntries(r.merged.zip);
  assert.deepEqual(Object.keys(merged).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const demoDir = path.join(DIST, 'demo');
  const tensors = (bytes) => Object.entries(safetensorsHeader(bytes)).map(([name, t]) => [name, t.dtype, t.shape]).sort();
  assert.deepEqual(tensors(merged['model.safetensors']), tensors(fs.readFileSync(path.join(demoDir, 'model.safetensors'))));
  assert.deepEqual(merged['config.json'], fs.readFileSync(path.join(demoDir, 'config.json')));
  assert.deepEqual(merged['tokenizer.json'], fs.readFileSync(path.join(demoDir, 'tokenizer.json')));
  console.log(`merged export: ${r.merged.zip.length} bytes zipped`);

  // Bottleneck adapters (AdapterHub files, no GGUF), IA3 and DoRA through the package.
  assert.equal(r.seqBnSummary.state, 'done');
  // One adapter after each of the 4 MLPs, 128 / 8 (the app's reduction factor) = 16 wide.
  assert.deepEqual(r.seqBnFacts.layers.map((l) => [l.path, l.kind, l.rank]),
    [0, 1, 2, 3].map((i) => [`model.layers.${i}.output_adapters.adapters.adapter`, 'bottleneck', 16]));
  assert.deepEqual(r.adapterhub, { fileName: 'adapter.zip', files: ['adapter.safetensors', 'adapter_config.json'] });
  assert.equal(r.seqBnGguf.code, 'INVALID_OPTIONS');
  assert.match(r.seqBnGguf.message, /seq_bn.*gguf.*llama\.cpp/);
  assert.deepEqual(r.loadAdapterHub, { peftType: 'BOTTLENECK', method: 'seq_bn', trainableParameters: r.seqBnFacts.trainableParameters, exportFormats: ['adapterhub'] });
  for (const [config, { summary, trainable }] of Object.entries(r.methods)) {
    assert.equal(summary.state, 'done', config);
    assert.ok(Number.isFinite(summary.finalLoss) && trainable > 0, `${config}: ${JSON.stringify(summary)}`);
  }
  console.log(`methods: ${JSON.stringify(Object.fromEntries(Object.entries(r.methods).map(([c, m]) => [c, m.trainable])))}, seq-bn ${r.seqBnFacts.trainableParameters}`);

  // Resuming from the pause checkpoint reproduces the run's last loss.
  assert.equal(r.resumedFrom, r.pausedAt);
  assert.equal(r.resumedSummary.steps, 3);
  assert.ok(Math.abs(r.resumedSummary.finalLoss - r.summary.finalLoss) < 1e-4, `resumed ${r.resumedSummary.finalLoss} vs ${r.summary.finalLoss}`);

  // Hub source: sharded download (model.safetensors is a 404, the index names the shards), then
  // the same model from the cache.
  const [first, second] = r.hub;
  for (const load of r.hub) {
    assert.equal(load.name, 'webtune/demo-sharded');
    assert.equal(load.parameters, 771_456);
  }
  for (const f of ['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    assert.ok(first.events.includes(`download:${f}`), `first load: ${first.events}`);
    assert.ok(second.events.includes(`cache:${f}`), `second load: ${second.events}`);
  }
  assert.ok(!second.events.some((e) => e.startsWith('download:')), `second load downloaded: ${second.events}`);

  // Errors: WebtuneError with a stable code, also across the worker.
  assert.equal(r.badOption.code, 'INVALID_OPTIONS');
  assert.match(r.badOption.message, /batch_size.*did you mean "batchSize"/);
  assert.equal(r.missingFile.code, 'FILE_MISSING');
  assert.match(r.missingFile.message, /config\.json.*\/missing\/config\.json/);
  assert.equal(r.afterDispose.code, 'ENGINE_DISPOSED');

  // The deliberate 404s (missing file; model.safetensors of the sharded model) are the only failed requests.
  const expected = (e) => e.includes('404') && e.includes('Failed to load resource');
  page.errors.splice(0, page.errors.length, ...page.errors.filter((e) => !expected(e)));
  page.assertClean();
  await page.close();
});

test('without WebGPU the example shows the NO_WEBGPU error', { timeout: 60_000 }, async () => {
  const page = await openPage(browser, server.url, { goto: false });
  await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }));
  await page.goto(server.url, { waitUntil: 'load' });
  await page.waitForFunction(() => /^[A-Z_]+: /m.test(document.querySelector('#log')?.textContent ?? ''), null, { timeout: 50_000 });
  const log = await page.textContent('#log');
  assert.match(log, /^NO_WEBGPU: .*Chrome or Edge 113\+.*enable-unsafe-webgpu/m);
  page.assertClean();
  await page.close();
});

function installedVersion() {
  return JSON.parse(fs.readFileSync(path.join(app, 'node_modules/webtune/package.json'), 'utf8')).version;
}
