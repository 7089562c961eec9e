#!/usr/bin/env bash
# Builds the wasm package and serves www/ on http://localhost:${PORT:-8080}/ (127.0.0.1 only).
#
#   scripts/serve.sh                 # setup (wasm target + wasm-bindgen only), build, serve
#   SKIP_BUILD=1 scripts/serve.sh    # serve the www/pkg and www/webtune that are already there
#   PORT=9000 scripts/serve.sh
#
# The server (scripts/serve.mjs) sends COOP/COEP headers (cross-origin isolated page) and
# Cache-Control: no-cache, so a rebuilt www/pkg is picked up on reload.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z ${SKIP_BUILD:-} ]]; then
  scripts/setup.sh rust wasm-target wasm-bindgen
  scripts/build-wasm.sh
  scripts/build-npm.sh
fi
command -v node >/dev/null 2>&1 || { echo "serve: node not found" >&2; exit 1; }
export PORT="${PORT:-8080}"
exec node scripts/serve.mjs www
