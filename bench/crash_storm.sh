#!/bin/sh
# The large crash storm (crates/service/tests/crash_storm.rs): CONVERSATIONS users against the
# emulator with Meta's faults on, while the real binary is SIGKILLed and restarted KILLS
# times; then every user's history is checked at the emulated Graph API (each pass and take
# applied once per decision, at most one welcome per return, nothing sent while not the
# owner, every handover reached the inbox or the user was told).
#
#   bench/crash_storm.sh                                   1000 conversations, 30 kills, SQLite
#   CONVERSATIONS=300 KILLS=10 STEPS=4 bench/crash_storm.sh
#   DB=postgres TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test bench/crash_storm.sh
#
# Knobs: CONVERSATIONS, STEPS (actions per user, default 4), KILLS, SEED (default 3), DB
# (sqlite or postgres), PROFILE (dev or release). Prints the storm's summary line; exits
# non-zero on a violation (the failing users' histories are printed).
set -eu
cd "$(dirname "$0")/.."

export STORM_CONVERSATIONS="${CONVERSATIONS:-1000}"
export STORM_STEPS="${STEPS:-4}"
export STORM_KILLS="${KILLS:-30}"
export STORM_SEED="${SEED:-3}"
db="${DB:-sqlite}"
if [ "$db" = postgres ] && [ -z "${TEST_POSTGRES_URL:-}" ]; then
    echo "crash_storm.sh: DB=postgres needs TEST_POSTGRES_URL" >&2
    exit 2
fi
profile=""
if [ "${PROFILE:-dev}" = release ]; then
    profile="--release"
fi
echo "crash storm: $STORM_CONVERSATIONS conversations × $STORM_STEPS steps, $STORM_KILLS kills, seed $STORM_SEED, $db"
# shellcheck disable=SC2086
exec cargo test $profile -q -p messenger-handover --test crash_storm -- --exact "crash_storm::$db" --nocapture
