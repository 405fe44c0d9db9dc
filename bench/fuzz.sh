#!/bin/sh
# Fuzzes every endpoint parser with cargo fuzz (libFuzzer): the /messenger delivery (signature
# check and parse), the /fulfillment request, the admin API's query strings, path ids and
# bodies, and the settings file. Each target runs FUZZ_SECS seconds; what it checks is in
# crates/service/src/fuzzing.rs. Not in CI.
#
#   bench/fuzz.sh                              every target, 180 s each
#   FUZZ_SECS=30 bench/fuzz.sh                 shorter
#   TARGETS="admin_inputs settings" bench/fuzz.sh
#
# Knobs: FUZZ_SECS (per target, default 180), TARGETS (default all), FUZZ_TIMEOUT (seconds one
# input may take before it counts as a hang, default 5). The corpus grows in fuzz/corpus/<target>/ (not committed), seeded from
# fuzz/seeds/<target>/ and crates/service/fixtures/. A crash or hang is written to
# fuzz/artifacts/<target>/ and the script exits 1: fix it, then copy the input to
# crates/service/fixtures/fuzz/<target>/, where `cargo test` replays it.
#
# cargo fuzz needs nightly compiler flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows
# them. Built without a sanitizer (the code is safe Rust; debug assertions and overflow checks
# stay on), which builds and runs faster.
set -eu
cd "$(dirname "$0")/.."

FUZZ_SECS="${FUZZ_SECS:-180}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-5}"
TARGETS="${TARGETS:-messenger_delivery fulfillment_request admin_inputs settings}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

seeds() {
    case "$1" in
        messenger_delivery) echo crates/service/fixtures/messenger ;;
        fulfillment_request) echo crates/service/fixtures/dialogflow ;;
        *) echo "fuzz/seeds/$1" ;;
    esac
}

failed=""
for target in $TARGETS; do
    mkdir -p "fuzz/corpus/$target" fuzz/logs
    found="crates/service/fixtures/fuzz/$target"
    extra=""
    [ -d "$found" ] && extra="$found"
    echo "== $target: ${FUZZ_SECS}s" >&2
    log="fuzz/logs/$target.log"
    # shellcheck disable=SC2046,SC2086
    if cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" $(seeds "$target") $extra -- \
        -max_total_time="$FUZZ_SECS" -timeout="$FUZZ_TIMEOUT" \
        -print_final_stats=1 >"$log" 2>&1; then
        # The figures of the run: executions, their rate, coverage.
        grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|DONE" "$log" >&2
    else
        tail -40 "$log" >&2
        failed="$failed $target"
    fi
done

if [ -n "$failed" ]; then
    echo "crashes or hangs in:$failed (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash or hang in: $TARGETS" >&2
