#!/usr/bin/env bash
# The one test command: installs what is missing, then runs every test suite, stopping at the
# first failing phase.
#
#   1. scripts/setup.sh          (apt packages, rust wasm target, wasm-bindgen-cli, npm ci)
#   2. cargo test                native tests on the default device (burn's Flex CPU backend where
#                                the only GPU is a software rasteriser, as on CI)
#      WEBTUNE_DEVICE=gpu ...    the kernel and parity tests again on wgpu (Mesa lavapipe on CI):
#                                the WGSL path the browser runs, natively
#      scripts/fuzz.sh           every fuzz target for 5 s (fuzz/README.md)
#   3. scripts/build-wasm.sh     www/pkg
#      scripts/build-npm.sh      the npm package in npm/dist, copied to www/webtune
#   4. npm run test:browser      tests/browser/*.test.mjs in headless Chromium (WebGPU)
#
# Build outputs go to ${CARGO_TARGET_DIR:-~/.cache/webtune/target}, outside the clone, so reruns
# on the same machine are incremental. Extra arguments are passed to `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]] && export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webtune/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

total_start=$SECONDS
phase() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@"; then
    echo "== $name: $((SECONDS - start)) s"
  else
    local rc=$?
    echo "== $name: FAILED (exit $rc) after $((SECONDS - start)) s" >&2
    echo "== total: $((SECONDS - total_start)) s" >&2
    exit "$rc"
  fi
}

phase "setup" scripts/setup.sh
phase "native tests" cargo test "$@"
phase "native tests on wgpu" env WEBTUNE_DEVICE=gpu cargo test "$@" --test kernels --test kernels_attention \
  --test kernels_loss_optimizer --test bucketing --test model_parity --test peft_parity --test adapter_methods \
  --test training -- --test-threads=1
phase "fuzz" scripts/fuzz.sh
phase "wasm build" scripts/build-wasm.sh
phase "npm package" scripts/build-npm.sh
phase "browser tests" npm run --silent test:browser
echo "== total: $((SECONDS - total_start)) s, all phases passed"
