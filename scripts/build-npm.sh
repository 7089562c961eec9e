#!/usr/bin/env bash
# Assembles the npm package in npm/dist/ from the hand-written npm/src/ and the wasm-bindgen output
# in www/pkg/ (run scripts/build-wasm.sh first), then copies it to www/webtune/ for the page.
#
#   scripts/build-npm.sh            # npm/dist/ + www/webtune/ + www/offline-manifest.js
#   cd npm/dist && npm pack         # webtune-<version>.tgz
#
# Layout of the package (= npm/dist/):
#   package.json README.md          from npm/
#   index.js engine.js ... *.d.ts   from npm/src/ (plain ESM, no build step)
#   wasm/webtune.js                 wasm-bindgen --target web glue
#   wasm/webtune_bg.wasm
#   demo/                           the bundled demo model and dataset (www/demo, scripts/pretrain_demo.py)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKG=www/pkg
DIST=npm/dist
for f in webtune.js webtune.d.ts webtune_bg.wasm; do
  [[ -f $PKG/$f ]] || { echo "build-npm: $PKG/$f not found; run scripts/build-wasm.sh first" >&2; exit 1; }
done

# The version comes from Cargo.toml (one version for the crate and the package).
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
pkg_version=$(node -p 'require("./npm/package.json").version')
if [[ $version != "$pkg_version" ]]; then
  echo "build-npm: npm/package.json has version $pkg_version but Cargo.toml has $version; make them equal" >&2
  exit 1
fi

rm -rf "$DIST"
mkdir -p "$DIST/wasm" "$DIST/demo"
cp npm/package.json npm/README.md "$DIST/"
cp npm/src/*.js npm/src/*.d.ts "$DIST/"
cp "$PKG/webtune.js" "$PKG/webtune.d.ts" "$PKG/webtune_bg.wasm" "$DIST/wasm/"

# The demo: committed in www/demo/ (made once by scripts/pretrain_demo.py).
cp www/demo/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,train.jsonl,eval.jsonl} "$DIST/demo/"

# The page imports ./webtune/index.js: the same files as the package.
rm -rf www/webtune
cp -r "$DIST" www/webtune
# What the page's service worker keeps for offline use, with this build's version.
node scripts/offline-manifest.mjs www

size() { stat -c %s "$1"; }
wasm=$DIST/wasm/webtune_bg.wasm
echo "build-npm: $DIST (webtune $version): wasm raw $(size "$wasm") bytes, gzip $(gzip -6 -c "$wasm" | wc -c) bytes; copied to www/webtune/"
