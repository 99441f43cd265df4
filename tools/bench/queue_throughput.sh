#!/usr/bin/env bash
# Queue throughput: N `atelier watch --exit-when-idle` processes drain one queue of files,
# for N = 1, 2, 4, on the SQLite journal and on PostgreSQL (a throwaway cluster on a Unix
# socket in /tmp, Debian's postgresql-15, default durability settings), for the checksum
# kind (small files) and Whisper tiny.en (greedy) on the LibriVox clips; then the claim
# latency at 100k queued jobs (examples/claim_latency.rs). Prints Markdown tables.
#
#   tools/bench/queue_throughput.sh [--files N] [--clips N] [--workers "1 2 4"]
#                                   [--kinds "checksum transcribe"]
#                                   [--backends "sqlite postgres"] [--claim-jobs N] [--no-claims]
#
# Needs target/release/atelier and target/release/examples/claim_latency
# (cargo build --release --bin atelier --example claim_latency) and the test models
# (tools/dev.sh test prepares .cache/models; or set ATELIER_MODELS).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ATELIER=${ATELIER:-$ROOT/target/release/atelier}
CLAIMS_BIN=${CLAIMS_BIN:-$ROOT/target/release/examples/claim_latency}
MODELS=${ATELIER_MODELS:-$ROOT/.cache/models}
PG_BIN=/usr/lib/postgresql/15/bin
LIBRIVOX=/usr/share/pocketsphinx/test/data/librivox

FILES=2000
CLIPS=10
WORKERS="1 2 4"
KINDS="checksum transcribe"
BACKENDS="sqlite postgres"
CLAIM_JOBS=100000
CLAIMS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --files) FILES=$2; shift 2 ;;
        --clips) CLIPS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --kinds) KINDS=$2; shift 2 ;;
        --backends) BACKENDS=$2; shift 2 ;;
        --claim-jobs) CLAIM_JOBS=$2; shift 2 ;;
        --no-claims) CLAIMS=0; shift ;;
        *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

die() { printf 'error: %s\n' "$*" >&2; exit 2; }
[ -x "$ATELIER" ] || die "$ATELIER is missing: cargo build --release"
[ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb is missing: apt install postgresql-15"
[ -d "$LIBRIVOX" ] || die "$LIBRIVOX is missing: apt install pocketsphinx-testdata"

WORK=$(mktemp -d /tmp/atelier-bench.XXXXXX)
PGDIR=""
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    if [ -n "$PGDIR" ]; then as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w -s stop || true; fi
    rm -rf "$WORK" "$PGDIR"
}
trap cleanup EXIT

PORT=5432  # names the socket file in our own folder only
pg_start() {
    PGDIR=$(mktemp -d /tmp/atelier-bench-pg.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDIR"
    as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C \
        --no-instructions >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -s \
        -o "-k $PGDIR -c listen_addresses='' -p $PORT" start
}
pg_url() {  # a fresh database's URL (called in $(…): the name cannot come from a counter)
    local db
    db=bench_$(date +%s%N)
    "$PG_BIN/createdb" -h "$PGDIR" -p "$PORT" -U postgres "$db"
    printf 'postgres://postgres@%s:%s/%s' "$(printf %s "$PGDIR" | sed 's|/|%2F|g')" "$PORT" "$db"
}
case " $BACKENDS " in *" postgres "*) pg_start ;; esac

# $1 home: a private config, state and data folder
home_env() {
    mkdir -p "$1/config"
    printf '[whisper]\nbeam-size = 1\n' > "$1/config/config.toml"
}

# $1 backend, $2 kind, $3 workers, $4 inbox (filled), $5 expected jobs: prints wall seconds
run_fleet() {
    local backend=$1 kind=$2 n=$3 inbox=$4 want=$5 h queue
    h=$(dirname "$inbox")
    if [ "$backend" = sqlite ]; then queue=$h/queue.sqlite; else queue=$(pg_url); fi
    local extra=()
    [ "$kind" = transcribe ] && extra=(--model whisper-tiny.en -f txt)
    local start end i
    start=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
        XDG_STATE_HOME=$h/state XDG_DATA_HOME=$h/data ATELIER_CONFIG_DIR=$h/config \
            ATELIER_MODELS=$MODELS "$ATELIER" watch "$inbox" --kind "$kind" "${extra[@]}" \
            --stable-ms 100 --exit-when-idle --queue "$queue" >"$h/out.$i" 2>"$h/err.$i" &
    done
    wait
    end=$(date +%s.%N)
    local done
    done=$(cat "$h"/out.* | grep -c '"event":"done"' || true)
    if [ "$done" -ne "$want" ]; then
        cat "$h"/err.* >&2
        die "$backend $kind N=$n: $done jobs done, not $want"
    fi
    echo "$end - $start" | bc -l
}

fill() {  # $1 kind, $2 inbox
    mkdir -p "$2"
    if [ "$1" = checksum ]; then
        local i
        for i in $(seq 1 "$FILES"); do printf 'small file %s\n' "$i" > "$2/f$i.bin"; done
        echo "$FILES"
    else
        local i=0 c
        while [ "$i" -lt "$CLIPS" ]; do
            for c in "$LIBRIVOX"/*.wav; do
                [ "$i" -lt "$CLIPS" ] || break
                cp "$c" "$2/clip$i.wav"; i=$((i + 1))
            done
        done
        echo "$CLIPS"
    fi
}

echo "## $(date -u +%Y-%m-%d) on $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores"
echo
echo "| backend | kind | files | workers | start-up s | wall s | jobs/s |"
echo "|---|---|---:|---:|---:|---:|---:|"
for kind in $KINDS; do
    for backend in $BACKENDS; do
        # Start-up alone: one watcher on an empty folder (model loading for transcribe).
        h=$WORK/$backend-$kind-empty
        home_env "$h"; mkdir -p "$h/inbox"
        boot=$(run_fleet "$backend" "$kind" 1 "$h/inbox" 0)
        for n in $WORKERS; do
            h=$WORK/$backend-$kind-$n
            home_env "$h"
            count=$(fill "$kind" "$h/inbox")
            wall=$(run_fleet "$backend" "$kind" "$n" "$h/inbox" "$count")
            printf '| %s | %s | %s | %s | %.2f | %.2f | %.1f |\n' "$backend" "$kind" "$count" \
                "$n" "$boot" "$wall" "$(echo "$count / $wall" | bc -l)"
        done
    done
done

if [ "$CLAIMS" = 1 ]; then
    [ -x "$CLAIMS_BIN" ] || die "$CLAIMS_BIN is missing: cargo build --release --example claim_latency"
    echo
    args=(--jobs "$CLAIM_JOBS" --sqlite "$WORK/claims.sqlite")
    case " $BACKENDS " in *" postgres "*) args+=(--postgres "$(pg_url)") ;; esac
    echo '```'
    "$CLAIMS_BIN" "${args[@]}"
    echo '```'
fi
