#!/bin/sh
# RUSTC_WRAPPER for the short fuzz run in CI (scripts/fuzz.sh --quick): adds libFuzzer's coverage
# instrumentation to webtune and the fuzz crate only, so that their dependencies are the ones the
# test build already compiled (no second build of burn). The long campaigns instrument everything.
rustc="$1"
shift
case " $* " in
*" --crate-name webtune "* | *" --crate-name webtune_fuzz "*)
  exec "$rustc" "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions --cfg fuzzing
  ;;
esac
exec "$rustc" "$@"
