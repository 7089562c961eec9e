#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every parser of untrusted input: the targets are in
# fuzz/fuzz_targets/, their seeds in fuzz/seeds/<target> (made by `--example seeds` from the test
# fixtures), the inputs of fixed crashes in fuzz/regressions/<target>. Any crash, panic, hang or
# out-of-memory abort fails the script and leaves the input in the log's folder.
#
#   scripts/fuzz.sh                         every target for 5 s (what CI runs, from scripts/test.sh)
#   scripts/fuzz.sh --campaign 600          every target for 10 minutes, everything instrumented
#   scripts/fuzz.sh --campaign 600 dataset  some targets
#
# The short run instruments only webtune and the fuzz crate (fuzz/instrument.sh) and builds in the
# test build's target folder, so it reuses the dependencies `cargo test` compiled: about a minute
# cold. Campaigns go through cargo-fuzz, which instruments every crate (tokenizers, minijinja,
# safetensors, serde_json too) in a target folder of their own; the inputs they find are kept in
# $CARGO_TARGET_DIR/fuzz-corpus/<target> (not in the repo). The stable toolchain takes the unstable
# flags through RUSTC_BOOTSTRAP=1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]] && export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webtune/target}"

campaign=false
seconds=5
if [[ ${1:-} == --campaign ]]; then
  campaign=true
  seconds=${2:?"--campaign SECONDS [targets...]"}
  shift 2
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^webtune-fuzz$')
fi

start=$SECONDS
if $campaign; then
  # cargo-fuzz's unstable flags on the stable toolchain (only here: it changes every crate's build).
  export RUSTC_BOOTSTRAP=1
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
  fi
  flags=(-O -a -s none --target-dir "$CARGO_TARGET_DIR/fuzz")
  cargo fuzz build "${flags[@]}"
  binaries="$CARGO_TARGET_DIR/fuzz/x86_64-unknown-linux-gnu/release"
  corpora="$CARGO_TARGET_DIR/fuzz-corpus"
else
  export RUSTC_WRAPPER="$PWD/fuzz/instrument.sh"
  cargo build --quiet --manifest-path fuzz/Cargo.toml --bins
  binaries="$CARGO_TARGET_DIR/debug"
  corpora=$(mktemp -d)
  trap 'rm -rf "$corpora"' EXIT
fi
echo "== fuzz build: $((SECONDS - start)) s"

# Campaigns also start from fresh seeds of what webtune writes now (adapters, GGUF, checkpoints),
# each checked to parse. (Not in the short run: the seed maker cannot link the instrumented crate.)
fresh="$CARGO_TARGET_DIR/fuzz-seeds"
rm -rf "$fresh"
if $campaign; then
  env -u RUSTC_BOOTSTRAP CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" \
    cargo run --quiet --manifest-path fuzz/Cargo.toml --example seeds -- "$fresh"
fi

logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"
for target in "${targets[@]}"; do
  corpus="$corpora/$target"
  mkdir -p "$corpus"
  inputs=("$corpus" "fuzz/seeds/$target")
  [[ -d "$fresh/$target" ]] && inputs+=("$fresh/$target")
  [[ -d "fuzz/regressions/$target" ]] && inputs+=("fuzz/regressions/$target")
  log="$logs/$target.log"
  status=0
  nice -n 19 "$binaries/$target" "${inputs[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$logs/$target-" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "== fuzz $target: ${runs:-?} inputs in $seconds s"
  if [[ $status -ne 0 ]]; then
    tail -n 40 "$log" >&2
    echo "== fuzz $target: FAILED (exit $status); the failing input is in $logs/$target-*:" \
      "fix it and add it to fuzz/regressions/$target/ with a test" >&2
    exit "$status"
  fi
done
echo "== fuzz: $((SECONDS - start)) s, ${#targets[@]} targets, no failures"
