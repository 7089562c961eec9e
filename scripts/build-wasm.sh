#!/usr/bin/env bash
# Builds the crate for the browser: www/pkg/webtune.js + www/pkg/webtune_bg.wasm (+ .d.ts).
#
#   scripts/build-wasm.sh [extra cargo build args...]
#
# 1. cargo build --lib --release --target wasm32-unknown-unknown
#    into ${CARGO_TARGET_DIR:-~/.cache/webtune/target}, outside the clone, so that later builds on
#    the same machine (and other clones) reuse it.
# 2. wasm-bindgen --target web --out-dir www/pkg --out-name webtune, without the name and producers
#    sections (7.5 MB of the 43 MB; panics still print their message, stack frames show
#    wasm-function[N] instead of Rust names). WEBTUNE_WASM_NAMES=1 keeps the names (for stack
#    traces and scripts/profile-host.mjs).
#    No wasm-opt: it took 9 minutes here.
#
# The wasm is optimised for size (opt-level "s"; the native release build keeps opt-level 3):
# 21.9 MB instead of 35.5 MB (gzip 4.3 MB instead of 5.9 MB), with the same training speed in
# Chromium on SwiftShader (the 20-step parity run: 32.4 s vs 34.1 s) and a faster build (7.7 vs
# 9 minutes). No real GPU was at hand to compare the host-side overhead per step there.
#
# Toolchain: rustup's wasm32-unknown-unknown target when installed; otherwise Debian's rustc-web
# with RUSTC_BOOTSTRAP=1 -Z build-std (std compiled from rust-web-src) and lld as the linker.
# scripts/setup.sh installs whichever is needed, and wasm-bindgen-cli.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]] && export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webtune/target}"
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-s}"
TARGET=wasm32-unknown-unknown
OUT_DIR=www/pkg

# getrandom on wasm32-unknown-unknown (random numbers through crypto.getRandomValues):
#  - 0.3.4 and 0.4.x pick their JS backend from the crate feature `wasm_js` alone; the feature must
#    be enabled in Cargo.toml for EACH getrandom major version in the wasm dependency tree,
#    otherwise that version stops with compile_error!("...you may need to enable the "wasm_js"
#    crate feature...").
#  - 0.3.0-0.3.3 also needed this cfg; 0.3.4 still accepts it and 0.4 ignores it. Kept so that an
#    older 0.3 in Cargo.lock also works. Only the wasm target gets it (not build scripts or the
#    native build, whose artifacts in the shared target dir stay valid).
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:+$CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS }--cfg getrandom_backend=\"wasm_js\""

has_wasm_std() {
  local libdir
  libdir="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/$TARGET/lib"
  compgen -G "$libdir/libstd-*.rlib" >/dev/null
}

cargo_cmd=(cargo)
if command -v rustc >/dev/null 2>&1 && has_wasm_std; then
  toolchain="$(rustc --version) with the prebuilt $TARGET std"
elif [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library ]]; then
  # Debian fallback: Debian's rustc-web has no wasm32 std; build it from rust-web-src.
  # RUSTC_BOOTSTRAP=1 lets the stable toolchain accept -Z build-std. The wasm32 target links with
  # lld's wasm flavor (rustc passes `-flavor wasm`): rust-lld (rust-web-llvm) or lld-22.
  linker=$(command -v rust-lld || command -v lld-22 || true)
  [[ -n $linker ]] || { echo "build-wasm: no rust-lld/lld-22; run scripts/setup.sh" >&2; exit 1; }
  export RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker"
  cargo_cmd=(/usr/bin/cargo -Z build-std=std,panic_abort)
  toolchain="$(/usr/bin/rustc --version) (Debian) with -Z build-std, linker $linker"
else
  echo "build-wasm: no $TARGET target (rustup) and no Debian rust-web fallback; run scripts/setup.sh" >&2
  exit 1
fi

command -v wasm-bindgen >/dev/null 2>&1 || { echo "build-wasm: wasm-bindgen not found; run scripts/setup.sh" >&2; exit 1; }

echo "build-wasm: $toolchain"
echo "build-wasm: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
log=$(mktemp "${TMPDIR:-/tmp}/webtune-build-wasm.XXXXXX")
trap 'rm -f "$log"' EXIT
set +e
"${cargo_cmd[@]}" build --lib --release --target "$TARGET" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  if grep -q 'you may need to enable the "wasm_js"' "$log"; then
    cat >&2 <<'EOF'
build-wasm: getrandom has no wasm backend. Every getrandom major version in the wasm dependency tree
build-wasm: (cargo tree --target wasm32-unknown-unknown -i getrandom) needs its `wasm_js` feature, e.g. in
build-wasm: Cargo.toml [target.'cfg(target_arch = "wasm32")'.dependencies]:
build-wasm:   getrandom = { version = "0.3", features = ["wasm_js"] }
build-wasm:   getrandom_04 = { package = "getrandom", version = "0.4", features = ["wasm_js"] }
EOF
  fi
  exit "$status"
fi

wasm="$CARGO_TARGET_DIR/$TARGET/release/webtune.wasm"
[[ -f $wasm ]] || { echo "build-wasm: $wasm not found" >&2; exit 1; }

# wasm-bindgen-cli must match the wasm-bindgen crate exactly (it refuses otherwise).
want=$(awk '/^\[\[package\]\]/{p=0} $0=="name = \"wasm-bindgen\""{p=1} p&&/^version = /{gsub(/^version = "|"$/,"");print;exit}' Cargo.lock)
have=$(wasm-bindgen --version | awk '{print $2}')
if [[ -n $want && $have != "$want" ]]; then
  echo "build-wasm: wasm-bindgen-cli is $have but Cargo.lock has wasm-bindgen $want; run scripts/setup.sh" >&2
  exit 1
fi

rm -rf "$OUT_DIR"
strip=(--remove-name-section --remove-producers-section)
[[ ${WEBTUNE_WASM_NAMES:-} == 1 ]] && strip=(--remove-producers-section)
wasm-bindgen --target web "${strip[@]}" --out-dir "$OUT_DIR" --out-name webtune "$wasm"

size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
raw=$(size "$wasm")
bg=$(size "$OUT_DIR/webtune_bg.wasm")
echo "build-wasm: raw wasm $wasm: $raw bytes ($(mib "$raw"))"
echo "build-wasm: $OUT_DIR/webtune_bg.wasm: $bg bytes ($(mib "$bg")); gzip -6: $(gzip -6 -c "$OUT_DIR/webtune_bg.wasm" | wc -c) bytes"
ls -l "$OUT_DIR"
