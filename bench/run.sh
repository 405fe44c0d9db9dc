#!/usr/bin/env bash
# The service against the floor: throughput, latency, end-to-end take latency, memory, start-up
# time and idle CPU of messenger-handover (release build), on SQLite and PostgreSQL, next to
# the *floor* (handover-bench floor: the least a server must do for the same requests, nothing
# durable). Prints one markdown table. See bench/README.md for what each row measures.
#
#   bench/run.sh                                   both backends, full length
#   DURATION=2 E2E_USERS=300 E2E_RATE=100 IDLE_SECS=2 bench/run.sh     a short check
#   BACKENDS=sqlite bench/run.sh                   one backend
#
# Knobs (environment):
#   BACKENDS            backends to measure, in order (default "sqlite postgres")
#   DURATION            seconds of each wrk run (default 8)
#   CONNECTIONS         wrk connections, over 2 wrk threads (default 32)
#   E2E_RATE            "back to bot" deliveries per second in the end-to-end case (default 500)
#   E2E_USERS           users handed over, then brought back, in that case (default 5000)
#   IDLE_SECS           seconds over which idle CPU is measured (default 10)
#   DRAIN_SECS          longest wait for the service's job queue to empty after a load case
#                       (default 300)
#   BENCH_POSTGRES_URL  the PostgreSQL database to use; it is DROPPED and re-created, so its name
#                       must contain "bench" (default postgres://postgres@127.0.0.1:5432/bench_handover)
#   BENCH_PORT_BASE     first TCP port tried for the processes it starts (default 28100)
#
# Needs wrk (apt-get install wrk), and psql for PostgreSQL.
# Logs, inputs and the table go to ${CARGO_TARGET_DIR:-target}/bench/run/; every process it
# starts is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BACKENDS:-sqlite postgres}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-32}
E2E_RATE=${E2E_RATE:-500}
E2E_USERS=${E2E_USERS:-5000}
IDLE_SECS=${IDLE_SECS:-10}
DRAIN_SECS=${DRAIN_SECS:-300}
BENCH_POSTGRES_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/bench_handover}
NEXT_PORT=${BENCH_PORT_BASE:-28100}
WRK_THREADS=2

# The service's settings (bench values, no real Meta app).
APP_ID=111111111111111
INBOX_APP_ID=263902037430900
PAGE_ID=958823367603818
SECRET=bench-app-secret
TOKEN=bench-fulfillment-token-0123456789
# PSIDs: 91… the 1000 users of the plain intents and the deliveries, 92… one per handover
# request, 93… the end-to-end users.
USERS=1000
PLAIN_BASE=9100000000000000
E2E_BASE=9300000000000000

for n in DURATION CONNECTIONS E2E_USERS IDLE_SECS DRAIN_SECS; do
    if ! [[ ${!n} =~ ^[1-9][0-9]*$ ]]; then
        echo "run.sh: $n must be a positive whole number (is ${!n@Q})" >&2
        exit 2
    fi
done
if ! [[ $E2E_RATE =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "run.sh: E2E_RATE must be a positive number (is ${E2E_RATE@Q})" >&2
    exit 2
fi
if ! command -v wrk >/dev/null 2>&1; then
    echo "run.sh: wrk is not installed: apt-get install wrk" >&2
    exit 2
fi

# The PostgreSQL database (dropped and re-created) and the server's maintenance database.
pg_db=${BENCH_POSTGRES_URL##*/}
pg_db=${pg_db%%\?*}
pg_admin=${BENCH_POSTGRES_URL%/*}/postgres
for backend in $BACKENDS; do
    case $backend in
    sqlite) ;;
    postgres)
        if [[ $pg_db != *bench* ]]; then
            echo "run.sh: BENCH_POSTGRES_URL names database ${pg_db@Q}, which run.sh would drop; use a name containing \"bench\"" >&2
            exit 2
        fi
        ;;
    *)
        echo "run.sh: unknown backend ${backend@Q} in BACKENDS (sqlite, postgres)" >&2
        exit 2
        ;;
    esac
done

TARGET=${CARGO_TARGET_DIR:-target}
SERVICE_BIN=$TARGET/release/messenger-handover
TOOL=$TARGET/release/handover-bench
W=$TARGET/bench/run

echo "== building (release)" >&2
cargo build --release -p messenger-handover -p handover-bench

rm -rf "$W"
mkdir -p "$W"

# ---------------------------------------------------------------------------------------------
# Processes: every one started is in PIDS and stopped on exit.
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# Stops one process: SIGTERM, up to 30 s for a graceful stop, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Runs a command in the background (so the trap can stop it) and waits for it; its status.
run_tracked() {
    "$@" &
    local pid=$! rc=0
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# Sets PORT to a port nothing listens on (tried from BENCH_PORT_BASE upwards).
free_port() {
    local p=$NEXT_PORT
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
    done
    NEXT_PORT=$((p + 1))
    PORT=$p
}

# Wall-clock time, seconds with a fraction, into T_NOW (bash 5's $EPOCHREALTIME: no fork).
now() {
    T_NOW=${EPOCHREALTIME:-$(date +%s.%N)}
}

# Reads key=value from a file (the last one wins); empty if absent.
kv() {
    sed -n "s/^$2=//p" "$1" | tail -n 1
}

# ---------------------------------------------------------------------------------------------
# Results: CELL[column|row]; NOTES are printed under the table.
declare -A CELL=()
NOTES=()
FAILED=0
note() {
    NOTES+=("$*")
    echo "run.sh: $*" >&2
}
fail_cell() { # column row message
    CELL[$1|$2]="FAILED"
    FAILED=1
    note "$1: $3"
}

# Starts a process in the background with its output in a log; sets STARTED_PID and
# READY_MS (time from just before the start to the first 200 on READY_URL).
start_ready() { # name ready_url command...
    local name=$1 url=$2
    shift 2
    local t0
    now
    t0=$T_NOW
    "$@" >"$W/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local out
    if ! out=$("$TOOL" ready --url "$url" --since "$t0" --pid "$STARTED_PID" --timeout 60); then
        READY_MS=""
        return 1
    fi
    READY_MS=${out#ready_ms=}
}

# Sets SVC_CMD: the service with its Graph API at $1, listening on port $2, store $3. env -i:
# nothing of the caller's environment (a stray DIALOGFLOW_PROJECT_ID, say) reaches it.
service_cmd() { # graph_base port database_url
    SVC_CMD=(env -i
        HOST=127.0.0.1 PORT="$2" DATABASE_URL="$3"
        FB_APP_ID=$APP_ID FB_APP_SECRET=$SECRET FB_PAGE_ACCESS_TOKEN=EAAbenchpagetoken
        FB_VERIFY_TOKEN=bench-verify-token-123 FB_PAGE_ID=$PAGE_ID
        GRAPH_API_BASE="$1" GRAPH_API_VERSION=v25.0 HANDOVER_TARGET_APP_ID=$INBOX_APP_ID
        HANDOVER_PASS_DELAY_MS=0 FULFILLMENT_TOKEN=$TOKEN RUST_LOG=warn LOG_FORMAT=json
        "$SERVICE_BIN" serve)
}

# Starts the service on a fresh store (LABEL: load or e2e) with its Graph API at GRAPH_BASE;
# sets SVC and SVC_PID. On failure, marks the row CELL of BACKEND and returns 1.
start_service() { # backend label graph_base cell
    local backend=$1 label=$2 graph=$3 cell=$4 log=$1
    [ "$label" = load ] || log=$1-$2
    if ! fresh_store "$backend" "$label"; then
        fail_cell "$backend" "$cell" "cannot create the database (see $W/psql.log)"
        return 1
    fi
    free_port
    SVC_PORT=$PORT
    SVC=http://127.0.0.1:$SVC_PORT
    service_cmd "$graph" "$SVC_PORT" "$DB_URL"
    if ! start_ready "$log" "$SVC/readyz" "${SVC_CMD[@]}"; then
        fail_cell "$backend" "$cell" "the service did not become ready (see $W/$log.log)"
        stop_pid "$STARTED_PID"
        return 1
    fi
    SVC_PID=$STARTED_PID
}

# One wrk run; fills the rows PREFIX_rps, PREFIX_p50, PREFIX_p99 of COLUMN.
wrk_case() { # column row_prefix url mode file [psid_prefix] [users]
    local col=$1 row=$2 url=$3 mode=$4 file=$5 pfx=${6:-} users=${7:-1}
    local out=$W/wrk-$col-$row.txt
    echo "== $col: $row (wrk -t $WRK_THREADS -c $CONNECTIONS -d ${DURATION}s)" >&2
    if ! run_tracked wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 10s \
        --latency -s bench/load.lua "$url" -- "$mode" "$file" "$WRK_THREADS" "$TOKEN" "$pfx" \
        "$users" >"$out" 2>&1; then
        fail_cell "$col" "${row}_rps" "$row: wrk failed (see $out)"
        return 1
    fi
    local req dur p50 p99 st so to ex
    req=$(kv "$out" wrk_requests)
    dur=$(kv "$out" wrk_duration_us)
    p50=$(kv "$out" wrk_p50_us)
    p99=$(kv "$out" wrk_p99_us)
    st=$(kv "$out" wrk_errors_status)
    so=$(kv "$out" wrk_errors_socket)
    to=$(kv "$out" wrk_errors_timeout)
    ex=$(kv "$out" wrk_exhausted_threads)
    if [[ -z $req || -z $dur || $req == 0 ]]; then
        fail_cell "$col" "${row}_rps" "$row: no requests completed (see $out)"
        return 1
    fi
    CELL[$col|${row}_rps]=$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
    CELL[$col|${row}_p50]=$(awk -v v="$p50" 'BEGIN { printf "%.2f", v / 1000 }')
    CELL[$col|${row}_p99]=$(awk -v v="$p99" 'BEGIN { printf "%.2f", v / 1000 }')
    local bad=$((${st:-0} + ${so:-0} + ${to:-0}))
    if ((bad > 0)); then
        CELL[$col|${row}_rps]+=" (!)"
        FAILED=1
        note "$col: $row: $st non-2xx answers, $so socket errors, $to timeouts (>10 s) of $req requests (see $out and $W/$col.log)"
    fi
    if ((${ex:-0} > 0)); then
        CELL[$col|${row}_rps]+=" (!)"
        FAILED=1
        note "$col: $row: $ex wrk threads ran out of deliveries before the end: the rate is understated"
    fi
}

# Waits for the service's queue to empty (at most DRAIN_SECS). Status 0 when empty.
drain() { # column base_url why
    local out=$W/drain-$1-${3// /-}.txt
    if run_tracked "$TOOL" drain --url "$2" --timeout "$DRAIN_SECS" >"$out"; then
        echo "   queue empty after $(kv "$out" drain_secs) s ($3)" >&2
        return 0
    fi
    note "$1: the job queue was not empty $DRAIN_SECS s after $3 ($(kv "$out" queue_left) jobs left)"
    return 1
}

# plain, handover, ingest against the service (column BACKEND) and, just before each, the same
# case against the floor (column floor_BACKEND), so that each ratio compares two runs made
# seconds apart: on a shared machine the speed drifts over a run of several minutes. Drains the
# service's queue after the handover and ingest cases.
load_cases() { # backend service_url floor_url
    local col=$1 base=$2 floor=$3 fcol=floor_$1
    echo "== $col: warming $USERS users" >&2
    if ! run_tracked "$TOOL" warm --url "$base" --token "$TOKEN" --users "$USERS" \
        --psid-base "$PLAIN_BASE" >"$W/warm-$col.txt" 2>&1; then
        note "$col: warming failed: $(cat "$W/warm-$col.txt")"
        FAILED=1
    fi
    wrk_case "$fcol" plain "$floor/fulfillment" plain "$W/plain.tpl" 91 "$USERS" || true
    wrk_case "$col" plain "$base/fulfillment" plain "$W/plain.tpl" 91 "$USERS" || true
    wrk_case "$fcol" handover "$floor/fulfillment" handover "$W/handover.tpl" 92 || true
    wrk_case "$col" handover "$base/fulfillment" handover "$W/handover.tpl" 92 || true
    drain "$col" "$base" "the handover case" || true
    wrk_case "$fcol" ingest "$floor/messenger" deliveries "$W/deliveries.txt" || true
    wrk_case "$col" ingest "$base/messenger" deliveries "$W/deliveries.txt" || true
    ingest_check "$col" "$base"
    drain "$col" "$base" "the ingest case" || return 1
}

# Every delivery wrk saw answered must have been stored as a new event, none as a duplicate.
ingest_check() { # column base_url
    local stored dup req
    stored=$("$TOOL" metric --url "$2" --series 'handover_webhook_events_total{outcome="stored"}') || return 0
    dup=$("$TOOL" metric --url "$2" --series 'handover_webhook_events_total{outcome="duplicate"}') || return 0
    req=$(kv "$W/wrk-$1-ingest.txt" wrk_requests)
    echo "   $stored events stored, $dup duplicates, for ${req:-?} answered deliveries" >&2
    if ! awk -v s="$stored" -v d="$dup" -v r="${req:-0}" 'BEGIN { exit !(d == 0 && s >= r) }'; then
        note "$1: ingest: $stored events stored and $dup duplicates for $req answered deliveries"
        CELL[$1|ingest_rps]+=" (!)"
        FAILED=1
    fi
}

peak_rss() { # column pid
    local kb
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$2/status" 2>/dev/null || true)
    if [[ -n $kb ]]; then
        CELL[$1|rss]=$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')
    else
        fail_cell "$1" rss "cannot read /proc/$2/status"
    fi
}

cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2206
    local f=($rest)
    # Fields 14 (utime) and 15 (stime) of stat; rest starts at field 3.
    echo $((f[11] + f[12]))
}

# CPU time of PID over IDLE_SECS, as a percentage of one core.
idle_cpu() { # column pid
    local hz t0 t1 c0 c1
    hz=$(getconf CLK_TCK)
    sleep 1
    now
    t0=$T_NOW
    c0=$(cpu_ticks "$2")
    sleep "$IDLE_SECS"
    c1=$(cpu_ticks "$2")
    now
    t1=$T_NOW
    CELL[$1|idle]=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v a="$t0" -v b="$t1" \
        'BEGIN { gsub(",", ".", a); gsub(",", ".", b); printf "%.2f", 100 * c / hz / (b - a) }')
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: the database is dropped and re-created before each service start.
pg_fresh() {
    psql "$pg_admin" -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$pg_db\"" >>"$W/psql.log" 2>&1
}

# A fresh store for BACKEND; sets DB_URL.
fresh_store() { # backend name
    case $1 in
    sqlite)
        local dir
        dir=$(mktemp -d "$W/sqlite-$2.XXXX")
        DB_URL="sqlite://$dir/handover.db"
        ;;
    postgres)
        pg_fresh || return 1
        DB_URL=$BENCH_POSTGRES_URL
        ;;
    esac
}

# ---------------------------------------------------------------------------------------------
echo "== inputs" >&2
"$TOOL" template --kind plain --out "$W/plain.tpl"
"$TOOL" template --kind handover --out "$W/handover.tpl"
# Enough distinct deliveries for DURATION seconds at 150 000 a second (the floor took up to
# 100 000 a second on 2 cores); a wrk thread that runs out anyway is reported. About 320 bytes each.
DELIVERIES=$((DURATION * 150000))
"$TOOL" deliveries --count "$DELIVERIES" --secret "$SECRET" --users "$USERS" \
    --psid-base "$PLAIN_BASE" --out "$W/deliveries.txt"

free_port
STUB_PORT=$PORT
STUB=http://127.0.0.1:$STUB_PORT
start_ready stub "$STUB/ready" "$TOOL" stub --listen "127.0.0.1:$STUB_PORT" \
    --app-id "$APP_ID" --inbox-app-id "$INBOX_APP_ID" || {
    echo "run.sh: the Graph API stub did not start (see $W/stub.log)" >&2
    exit 1
}

# The floor.
free_port
FLOOR_PORT=$PORT
FLOOR=http://127.0.0.1:$FLOOR_PORT
echo "== floor" >&2
# Kept running: each load case of a backend runs against it just before (load_cases).
if start_ready floor "$FLOOR/readyz" "$TOOL" floor --listen "127.0.0.1:$FLOOR_PORT" \
    --graph "$STUB" --secret "$SECRET" --token "$TOKEN" --inbox-app-id "$INBOX_APP_ID"; then
    FLOOR_PID=$STARTED_PID
    CELL[floor|ready]=$READY_MS
else
    echo "run.sh: the floor did not start (see $W/floor.log)" >&2
    exit 1
fi

declare -A SKIPPED=()
for backend in $BACKENDS; do
    case $backend in
    sqlite) ;;
    postgres)
        if ! command -v psql >/dev/null 2>&1; then
            note "postgres: skipped: psql is not installed (apt-get install postgresql-client)"
            SKIPPED[postgres]="skipped: no psql"
            continue
        fi
        if ! psql "$pg_admin" -Atqc 'select 1' >/dev/null 2>&1; then
            note "postgres: skipped: PostgreSQL is unreachable at ${pg_admin%%\?*}"
            SKIPPED[postgres]="skipped: unreachable"
            continue
        fi
        ;;
    esac

    # Load cases, RSS, idle CPU: one instance, Graph API = the stub.
    echo "== $backend" >&2
    start_service "$backend" load "$STUB" ready || continue
    CELL[$backend|ready]=$READY_MS
    if load_cases "$backend" "$SVC" "$FLOOR"; then
        idle_cpu "$backend" "$SVC_PID"
    else
        CELL[$backend|idle]="FAILED"
        FAILED=1
    fi
    peak_rss "$backend" "$SVC_PID"
    stop_pid "$SVC_PID"

    # End-to-end: a fresh instance whose Graph API is the e2e tool's own stub.
    echo "== $backend: end-to-end take latency ($E2E_USERS users, $E2E_RATE/s)" >&2
    free_port
    E2E_GRAPH_PORT=$PORT
    start_service "$backend" e2e "http://127.0.0.1:$E2E_GRAPH_PORT" e2e_p50 || continue
    out=$W/e2e-$backend.txt
    if run_tracked "$TOOL" e2e --service "$SVC" --graph-listen "127.0.0.1:$E2E_GRAPH_PORT" \
        --secret "$SECRET" --token "$TOKEN" --users "$E2E_USERS" --rate "$E2E_RATE" \
        --page-id "$PAGE_ID" --psid-base "$E2E_BASE" --app-id "$APP_ID" \
        --inbox-app-id "$INBOX_APP_ID" >"$out" 2>"$W/e2e-$backend.err"; then
        CELL[$backend|e2e_p50]=$(kv "$out" e2e_p50_ms)
        CELL[$backend|e2e_p99]=$(kv "$out" e2e_p99_ms)
        CELL[$backend|e2e_welcome_p50]=$(kv "$out" e2e_welcome_p50_ms)
        CELL[$backend|e2e_welcome_p99]=$(kv "$out" e2e_welcome_p99_ms)
        CELL[$backend|e2e_queue]=$(kv "$out" e2e_queue_max)
        echo "   $(kv "$out" e2e_takes)/$E2E_USERS takes, max $(kv "$out" e2e_max_ms) ms, client send lag max $(kv "$out" e2e_send_lag_max_ms) ms" >&2
    else
        takes=$(kv "$out" e2e_takes)
        CELL[$backend|e2e_p50]="FAILED (${takes:-0}/$E2E_USERS takes)"
        CELL[$backend|e2e_p99]="FAILED"
        CELL[$backend|e2e_queue]=$(kv "$out" e2e_queue_max)
        FAILED=1
        while IFS= read -r line; do
            note "$backend: e2e: $line"
        done < <(sed -n 's/^e2e_error=//p' "$out")
        if ! grep -q '^e2e_error=' "$out"; then
            note "$backend: e2e failed (see $out, $W/e2e-$backend.err, $W/$backend-e2e.log)"
        fi
    fi
    stop_pid "$SVC_PID"
done

# The floor's memory after every load case it ran, and its idle CPU.
peak_rss floor "$FLOOR_PID"
idle_cpu floor "$FLOOR_PID"
stop_pid "$FLOOR_PID"

# ---------------------------------------------------------------------------------------------
# The table.
ROWS=(plain_rps plain_p50 plain_p99 handover_rps handover_p50 handover_p99 ingest_rps ingest_p99
    e2e_p50 e2e_p99 e2e_welcome_p50 e2e_welcome_p99 e2e_queue rss ready idle)
declare -A LABEL=(
    [plain_rps]="plain intent, req/s"
    [plain_p50]="plain intent, p50 ms"
    [plain_p99]="plain intent, p99 ms"
    [handover_rps]="handover intent, req/s"
    [handover_p50]="handover intent, p50 ms"
    [handover_p99]="handover intent, p99 ms"
    [ingest_rps]="signed ingest, events/s"
    [ingest_p99]="signed ingest, p99 ms"
    [e2e_p50]="end-to-end take, p50 ms"
    [e2e_p99]="end-to-end take, p99 ms"
    [e2e_welcome_p50]="end-to-end welcome back, p50 ms"
    [e2e_welcome_p99]="end-to-end welcome back, p99 ms"
    [e2e_queue]="end-to-end, max queue depth (pending jobs)"
    [rss]="peak RSS, MiB"
    [ready]="start to /readyz, ms"
    [idle]="idle CPU, % of one core"
)
# Rows where service/floor means something (the floor has no queue and no background work).
declare -A RATIO=([plain_rps]=1 [plain_p50]=1 [plain_p99]=1 [handover_rps]=1 [handover_p50]=1
    [handover_p99]=1 [ingest_rps]=1 [ingest_p99]=1 [rss]=1 [ready]=1)

ran() { [[ " $BACKENDS " == *" $1 "* ]] && [[ -z ${SKIPPED[$1]:-} ]]; }

cell() { # backend row
    local v=${CELL[$1|$2]:-}
    if [[ -n $v ]]; then
        echo "$v"
    elif ! ran "$1"; then
        echo "${SKIPPED[$1]:-not run}"
    else
        echo "n/a"
    fi
}

# The floor's figure paired with BACKEND's (its run just before), else its only one.
floor_of() { # backend row
    echo "${CELL[floor_$1|$2]:-${CELL[floor|$2]:-}}"
}

floor_cell() { # backend row
    local v
    v=$(floor_of "$1" "$2")
    if [[ -n $v ]]; then
        echo "$v"
    elif [[ $2 == e2e_* ]]; then
        echo ""
    elif ! ran "$1"; then
        echo "${SKIPPED[$1]:-not run}"
    else
        echo "n/a"
    fi
}

ratio() { # column row
    [[ -n ${RATIO[$2]:-} ]] || return 0
    local a=${CELL[$1|$2]:-} b
    b=$(floor_of "$1" "$2")
    [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] || return 0
    awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b }'
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "Machine: $(nproc) × ${cpu_model:-unknown CPU}, Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'). Settings: wrk -t $WRK_THREADS -c $CONNECTIONS -d ${DURATION}s; end-to-end $E2E_USERS users at $E2E_RATE/s; idle CPU over ${IDLE_SECS}s; messenger-handover $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
    echo "| | sqlite | floor | sqlite/floor | postgres | floor | postgres/floor |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for r in "${ROWS[@]}"; do
        echo "| ${LABEL[$r]} | $(cell sqlite "$r") | $(floor_cell sqlite "$r") | $(ratio sqlite "$r") | $(cell postgres "$r") | $(floor_cell postgres "$r") | $(ratio postgres "$r") |"
    done
    if ((${#NOTES[@]} > 0)); then
        echo
        for n in "${NOTES[@]}"; do
            echo "- $n"
        done
    fi
} | tee "$W/table.md"
echo >&2
echo "logs and inputs: $W/ (table: $W/table.md)" >&2
exit "$FAILED"
