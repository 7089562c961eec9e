// The page's JavaScript type-checks strictly (`tsc --checkJs --strict`, www/tsconfig.json) against
// the package's types in www/webtune/ (scripts/build-npm.sh), and stays one module per step plus
// small shared ones (each under about 300 lines). No browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, WWW, checkBuilt } from './page-fixtures/lib.mjs';

test('tsc --checkJs --strict passes for www/js', () => {
  checkBuilt();
  try {
    execFileSync('node', [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(WWW, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    assert.fail(`tsc -p www/tsconfig.json:\n${e.stdout}${e.stderr}`);
  }
});

test('every page module is under 300 lines', () => {
  const dir = path.join(WWW, 'js');
  const sizes = fs.readdirSync(dir).filter((f) => f.endsWith('.js')).map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8').trimEnd().split('\n').length]);
  console.log(sizes.map(([f, n]) => `${f} ${n}`).join(', '));
  for (const [f, n] of sizes) assert.ok(n <= 300, `www/js/${f} has ${n} lines`);
});
