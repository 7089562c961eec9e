#!/usr/bin/env node
// Writes www/offline-manifest.js for the page's service worker (www/sw.js): the files the page
// needs to work offline (the page, the engine package in www/webtune/ with its wasm, the demo) and
// a version, a hash of their contents. A new build gives a new version, so browsers install the
// service worker again and replace the cache of the old build.
//
//   node scripts/offline-manifest.mjs [www]      (run by scripts/build-npm.sh)

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(process.argv[2] ?? 'www');

/** Files under `dir` (relative to root, '/'-separated) whose name passes `keep`. */
function list(dir, keep) {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((e) => {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) return list(rel, keep);
    return keep(rel) ? [rel] : [];
  });
}

const files = [
  'index.html',
  'app.css',
  'favicon.svg',
  ...list('js', (f) => f.endsWith('.js')),
  'vendor/uplot/uPlot.esm.js',
  'vendor/uplot/uPlot.min.css',
  // The package as the page loads it: modules, wasm glue and binary, the demo (no types, README).
  ...list('webtune', (f) => !/\.(d\.ts|md)$/.test(f) && !f.endsWith('package.json')),
].sort();

const missing = files.filter((f) => !fs.existsSync(path.join(root, f)));
if (missing.length) {
  console.error(`offline-manifest: missing ${missing.join(', ')} (run scripts/build-npm.sh)`);
  process.exit(1);
}
const hash = crypto.createHash('sha256');
for (const f of files) hash.update(f).update('\0').update(fs.readFileSync(path.join(root, f)));
const version = hash.digest('hex').slice(0, 16);
fs.writeFileSync(
  path.join(root, 'offline-manifest.js'),
  `// Written by scripts/offline-manifest.mjs: what www/sw.js keeps for offline use.\nself.OFFLINE_MANIFEST = ${JSON.stringify({ version, files }, null, 1)};\n`,
);
console.log(`offline-manifest: ${files.length} files, version ${version}`);
