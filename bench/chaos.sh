#!/bin/sh
# The long run of the adversarial model test (crates/service/tests/chaos.rs, issue 8): random conversations
# of USERS users at once per seed, against the emulator with chaos on (webhook deliveries
# delayed, duplicated, reordered, dropped; Graph API calls slow, failing, rate-limited,
# applied-then-lost, dropped) and the service killed and restarted at random moments; then
# the invariants. Each failing seed's histories are written to target/tmp/chaos/.
#
#   bench/chaos.sh                          seeds 1-40, 8 users, 16 steps, 3 kills per seed
#   SEEDS=100-199 USERS=12 bench/chaos.sh   a range of seeds, more users
#   SEEDS=3,17,40 bench/chaos.sh            a list (one seed: SEEDS=17-17)
#   SEEDS=200 bench/chaos.sh                a count: seeds 1-200
#   DB=postgres TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test bench/chaos.sh
#
# Knobs: SEEDS, USERS, STEPS, KILLS, PARALLEL (seeds run at once, default 3), MIN_PAUSE_MS
# (least time between two actions of one person, default 1100; 0 = inhumanly fast), DB (sqlite or
# postgres), PROFILE (dev or release; timing changes with it). Exit status: 0 when every
# seed kept every invariant.
set -eu
cd "$(dirname "$0")/.."

export CHAOS_SEEDS="${SEEDS:-1-40}"
export CHAOS_USERS="${USERS:-8}"
export CHAOS_STEPS="${STEPS:-16}"
export CHAOS_KILLS="${KILLS:-3}"
export CHAOS_PARALLEL="${PARALLEL:-3}"
export CHAOS_DB="${DB:-sqlite}"
# Least time between two actions of one person (ms); 0 plays them inhumanly fast.
export CHAOS_MIN_PAUSE_MS="${MIN_PAUSE_MS:-1100}"

if [ "$CHAOS_DB" = postgres ] && [ -z "${TEST_POSTGRES_URL:-}" ]; then
    echo "chaos.sh: DB=postgres needs TEST_POSTGRES_URL" >&2
    exit 2
fi

profile=""
if [ "${PROFILE:-dev}" = release ]; then
    profile="--release"
fi

echo "chaos: seeds $CHAOS_SEEDS, $CHAOS_USERS users × $CHAOS_STEPS steps, $CHAOS_KILLS kills, $CHAOS_PARALLEL at once, $CHAOS_DB"
rm -rf target/tmp/chaos
status=0
# shellcheck disable=SC2086
cargo test $profile -p messenger-handover --test chaos -- --ignored --exact long_run --nocapture || status=$?
if [ -d target/tmp/chaos ]; then
    echo "histories of the failing seeds: target/tmp/chaos/"
    ls target/tmp/chaos
fi
exit "$status"
