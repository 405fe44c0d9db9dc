#!/bin/sh
# The long soak (crates/service/tests/soak.rs): the real binary under a steady load (20 users
# cycling through handovers and returns with the emulator, 50 writing plain messages, one
# delivery every 20 ms) for MINUTES, with its RSS, the store's size and row counts sampled
# every 3 s. Fails when the second half's RSS peak exceeds 1.5 × the first half's + 16 MiB,
# when events or jobs grow faster per acknowledged delivery in the second half than in the
# first, or when there are more threads than users.
#
#   bench/soak.sh                                          10 minutes on SQLite
#   MINUTES=30 DB=postgres TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test bench/soak.sh
#
# Knobs: MINUTES (default 10), DB (sqlite or postgres), PROFILE (dev or release). Prints each
# sample and a summary line; exits non-zero on a leak or an unbounded table.
set -eu
cd "$(dirname "$0")/.."

minutes="${MINUTES:-10}"
export SOAK_SECS=$((minutes * 60))
db="${DB:-sqlite}"
if [ "$db" = postgres ] && [ -z "${TEST_POSTGRES_URL:-}" ]; then
    echo "soak.sh: DB=postgres needs TEST_POSTGRES_URL" >&2
    exit 2
fi
profile=""
if [ "${PROFILE:-dev}" = release ]; then
    profile="--release"
fi
echo "soak: $minutes minute(s) on $db"
# shellcheck disable=SC2086
exec cargo test $profile -q -p messenger-handover --test soak -- --exact "steady_load_stays_bounded::$db" --nocapture
