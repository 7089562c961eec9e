#!/usr/bin/env bash
# Installs everything the build and the tests need, on Debian 12. Idempotent: each step is skipped
# when its result is already there, so a second run takes a second or two.
#
#   scripts/setup.sh                 # all steps
#   scripts/setup.sh STEP...         # only these steps: system rust wasm-target wasm-bindgen node
#
# Steps:
#   system        apt: chromium (browser tests; ships SwiftShader for WebGPU without a GPU),
#                 mesa-vulkan-drivers + libvulkan1 (lavapipe: a CPU Vulkan device for wgpu in the
#                 native tests), a C compiler (cc, for build scripts and linking), a C++ compiler
#                 (c++, for libFuzzer in scripts/fuzz.sh)
#   rust          cargo/rustc: rustup's toolchain if present, else Debian's rustc-web/cargo-web
#   wasm-target   the wasm32-unknown-unknown std: `rustup target add`, else (no rustup, or the
#                 target cannot be downloaded) Debian's rust-web-src + lld-22, used by
#                 scripts/build-wasm.sh through -Z build-std
#   wasm-bindgen  wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock
#   node          node >= 20 check, then `npm ci` for the root package.json (playwright-core)
#
# Runs as root on CI; elsewhere apt-get goes through sudo. Needs crates.io, npm and Debian mirrors.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

[[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]] && export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/webtune-setup.XXXXXX")
trap 'rm -rf "$LOG_DIR"' EXIT

say() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# run_logged NAME CMD...: runs CMD with its output in a log file; on failure prints the log's tail.
run_logged() {
  local name=$1; shift
  local log="$LOG_DIR/$name.log"
  if ! "$@" >"$log" 2>&1; then
    echo "setup: '$*' failed; last lines of its output:" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand: $*"
  if [[ $APT_UPDATED -eq 0 ]]; then
    run_logged apt-update as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    APT_UPDATED=1
  fi
  run_logged apt-install as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

deb_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# --- system packages ---------------------------------------------------------------------------
step_system() {
  local missing=() pkg
  for pkg in chromium mesa-vulkan-drivers libvulkan1; do
    deb_installed "$pkg" || missing+=("$pkg")
  done
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  # python3: a zip test reads the page's download back with Python's zipfile.
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]} (apt)"
    apt_install "${missing[@]}"
  fi
  say "chromium ok ($(chromium --version 2>/dev/null | head -n1 || echo '?'))"
  say "vulkan (mesa lavapipe) ok"
  say "cc, c++, python3 ok"
}

# --- rust --------------------------------------------------------------------------------------
DEBIAN_RUST_PKGS=(rustc-web cargo-web rust-web-src lld-22)

step_rust() {
  if command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1; then
    say "rust ok ($(rustc --version))"
    return
  fi
  # rustup's toolchain cannot be installed without static.rust-lang.org; Debian's can.
  say "no cargo/rustc: installing Debian's ${DEBIAN_RUST_PKGS[*]}"
  apt_install "${DEBIAN_RUST_PKGS[@]}"
  say "rust ok ($(rustc --version))"
}

# True when the active toolchain has a prebuilt std for wasm32-unknown-unknown.
has_wasm_std() {
  local libdir
  libdir="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/wasm32-unknown-unknown/lib"
  compgen -G "$libdir/libstd-*.rlib" >/dev/null
}

# True when Debian's toolchain can build std for wasm32 itself (-Z build-std), see build-wasm.sh.
has_debian_wasm_fallback() {
  [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library ]] &&
    { command -v rust-lld || command -v lld-22; } >/dev/null 2>&1
}

step_wasm_target() {
  if has_wasm_std; then
    say "wasm32-unknown-unknown target ok (rustup)"
    return
  fi
  if command -v rustup >/dev/null 2>&1; then
    say "wasm32-unknown-unknown target: rustup target add (quiet, may take a minute)"
    if run_logged rustup-target timeout 900 rustup target add wasm32-unknown-unknown && has_wasm_std; then
      say "wasm32-unknown-unknown target ok (rustup)"
      return
    fi
    say "rustup could not install the target; falling back to Debian's rust-web toolchain"
  fi
  if has_debian_wasm_fallback; then
    say "wasm32-unknown-unknown target ok (Debian rustc-web + -Z build-std)"
    return
  fi
  apt_install "${DEBIAN_RUST_PKGS[@]}"
  has_debian_wasm_fallback || die "Debian rust-web fallback incomplete after installing ${DEBIAN_RUST_PKGS[*]}"
  say "wasm32-unknown-unknown target ok (Debian rustc-web + -Z build-std)"
}

# --- wasm-bindgen-cli --------------------------------------------------------------------------
lock_version() { # the version of package $1 in Cargo.lock (first entry)
  awk -v name="$1" '
    /^\[\[package\]\]/ { in_pkg = 1; found = 0; next }
    in_pkg && $0 == "name = \"" name "\"" { found = 1; next }
    in_pkg && found && /^version = / { gsub(/^version = "|"$/, ""); print; exit }
  ' "$ROOT/Cargo.lock"
}

step_wasm_bindgen() {
  if [[ ! -f Cargo.lock ]]; then
    say "no Cargo.lock: cargo generate-lockfile"
    run_logged lockfile cargo generate-lockfile
  fi
  local want have
  want=$(lock_version wasm-bindgen)
  [[ -n $want ]] || die "no wasm-bindgen package in Cargo.lock"
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [[ $have == "$want" ]]; then
    say "wasm-bindgen-cli $want ok"
    return
  fi
  say "wasm-bindgen-cli $want: cargo install (have: ${have:-none}; takes a few minutes)"
  # Built in cargo's own temporary directory, not in the project's CARGO_TARGET_DIR.
  if ! run_logged cargo-install env -u CARGO_TARGET_DIR cargo install --force wasm-bindgen-cli --version "$want"; then
    say "retrying with --locked (the crate's own Cargo.lock)"
    run_logged cargo-install-locked env -u CARGO_TARGET_DIR cargo install --force --locked wasm-bindgen-cli --version "$want"
  fi
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  [[ $have == "$want" ]] || die "wasm-bindgen --version says '${have:-nothing}', expected $want (is ~/.cargo/bin first in PATH?)"
  say "wasm-bindgen-cli $want ok"
}

# --- node / npm --------------------------------------------------------------------------------
step_node() {
  command -v node >/dev/null 2>&1 || die "node not found; Node.js >= 20.19 (or >= 22.12) is required (Debian 12's nodejs 18 is too old)"
  command -v npm >/dev/null 2>&1 || die "npm not found"
  local v
  v=$(node -p 'process.versions.node')
  # Vite 7/8 (the npm package test) needs 20.19+ on the 20 line, 22.12+ on the 22 line.
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=12)||(a===20&&b>=19)?0:1)' ||
    die "node $v is too old; >= 20.19 (or >= 22.12) is required by Vite"
  # npm ci writes node_modules/.package-lock.json; newer than both manifests = up to date.
  if [[ -f node_modules/.package-lock.json &&
        node_modules/.package-lock.json -nt package.json &&
        ( ! -f package-lock.json || node_modules/.package-lock.json -nt package-lock.json ) ]]; then
    say "node $v, npm packages ok"
    return
  fi
  if [[ -f package-lock.json ]]; then
    say "npm ci"
    run_logged npm npm ci --no-audit --no-fund
  else
    say "npm install (no package-lock.json)"
    run_logged npm npm install --no-audit --no-fund
  fi
  say "node $v, npm packages ok"
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(system rust wasm-target wasm-bindgen node)
for s in "${steps[@]}"; do
  case $s in
    system) step_system ;;
    rust) step_rust ;;
    wasm-target) step_wasm_target ;;
    wasm-bindgen) step_wasm_bindgen ;;
    node) step_node ;;
    *) die "unknown step '$s' (steps: system rust wasm-target wasm-bindgen node)" ;;
  esac
done
