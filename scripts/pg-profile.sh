#!/usr/bin/env bash
# Where PostgreSQL's time goes while one hookd node drains a backlog (docs/benchmarks.md).
#
#   scripts/pg-profile.sh [--perf] [--explain MS] [--events N] [--drain] [--slots S]
#
# Builds the release binary (or takes $HOOKD_BIN), creates a fresh database `hookd_profile` on
# $HOOKD_BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432), starts a Node receiver
# that answers 200 and one hookd with the ceiling benchmark's limits (the example config's
# max_in_flight_per_subscription = 16, or S with --slots; before 2026-12-07 this script used
# 64), posts N events (default 20000) in batches of 100 from 16 clients, and prints the
# deliveries per second from the first post to the last delivery.
#   --perf         also records `perf record -a -g -F 999` for 3 s of the drain and prints the
#                  postgres processes' share of the samples and their hottest functions
#                  (inclusive), hookd_claim's PL/pgSQL among them, and hookd's hottest
#                  functions (self).
#   --explain MS   logs every statement of hookd's (nested ones inside hookd_claim included)
#                  slower than MS ms with auto_explain, and prints their total time, count
#                  and median by statement. Needs the server log readable at
#                  /var/log/postgresql/postgresql-15-main.log (Debian's default).
#   --drain        posts every event with the subscription paused, then resumes it and times
#                  the drain alone (resume to last delivery): the delivery path without ingest
#                  beside it. Also prints what the ingest alone cost PostgreSQL.
# Also prints the claims made per 1000 deliveries, the PostgreSQL processes' CPU seconds per
# 1000 deliveries and the WAL bytes per delivery.
# Loopback only. Not part of the test command: it takes a minute and perf needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

PERF=0
EXPLAIN=""
EVENTS=20000
DRAIN=0
SLOTS=16
while [ $# -gt 0 ]; do
  case "$1" in
    --perf) PERF=1 ;;
    --explain) EXPLAIN="$2"; shift ;;
    --events) EVENTS="$2"; shift ;;
    --drain) DRAIN=1 ;;
    --slots) SLOTS="$2"; shift ;;
    *) echo "usage: $0 [--perf] [--explain MS] [--events N] [--drain] [--slots S]" >&2; exit 2 ;;
  esac
  shift
done
SERVER="${HOOKD_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
DB=hookd_profile
LOG=/var/log/postgresql/postgresql-15-main.log

# HOOKD_BIN names another binary to profile (say, one built from an earlier commit).
if [ -z "${HOOKD_BIN:-}" ]; then
  cargo build --release --quiet
  HOOKD_BIN=target/release/hookd
fi
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" 2>/dev/null
if [ -n "$EXPLAIN" ]; then
  psql "$SERVER/postgres" -q \
    -c "ALTER DATABASE $DB SET session_preload_libraries = 'auto_explain'" \
    -c "ALTER DATABASE $DB SET auto_explain.log_min_duration = $EXPLAIN" \
    -c "ALTER DATABASE $DB SET auto_explain.log_nested_statements = on" \
    -c "ALTER DATABASE $DB SET auto_explain.log_analyze = on" \
    -c "ALTER DATABASE $DB SET auto_explain.log_buffers = on"
  LOG_FROM=$(($(wc -l < "$LOG") + 1))
fi

# The receiver: counts requests into a file every 100 ms.
cat > "$WORK/receiver.js" <<'JS'
const http = require('http');
const fs = require('fs');
let n = 0;
const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => { n++; res.writeHead(200); res.end('ok'); });
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(process.argv[2] + '.port', String(server.address().port));
});
setInterval(() => fs.writeFileSync(process.argv[2] + '.tmp', String(n)) ||
  fs.renameSync(process.argv[2] + '.tmp', process.argv[2]), 100);
JS
echo 0 > "$WORK/count"
node "$WORK/receiver.js" "$WORK/count" & PIDS+=($!)
until [ -s "$WORK/count.port" ]; do sleep 0.05; done
RPORT=$(cat "$WORK/count.port")

cat > "$WORK/hookd.toml" <<TOML
[api]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[storage]
engine = "postgres"
url = "$SERVER/$DB"
[delivery]
max_in_flight = 256
max_in_flight_per_subscription = $SLOTS
[targets]
allow = ["127.0.0.0/8"]
allow_http = true
[[subscription]]
id = "bench"
url = "http://127.0.0.1:$RPORT/hook"
secret = "profile-secret"
events = ["*"]
TOML
RUST_LOG=info "$HOOKD_BIN" run --config "$WORK/hookd.toml" > "$WORK/hookd.log" 2>&1 & PIDS+=($!)
until grep -q "hookd started" "$WORK/hookd.log"; do sleep 0.05; done
API=$(sed -n 's/.*hookd started api=\([0-9.:]*\).*/\1/p' "$WORK/hookd.log" | head -1)
METRICS=$(sed -n 's/.*hookd started .*metrics=\([0-9.:]*\).*/\1/p' "$WORK/hookd.log" | head -1)
if [ "$DRAIN" = 1 ]; then
  curl -sf -o /dev/null -X POST "http://$API/v1/subscriptions/bench/pause"
fi

# Batches of 100 events of about 1 KiB each.
PAD=$(head -c 900 /dev/zero | tr '\0' x)
BATCHES=$(( (EVENTS + 99) / 100 ))
for b in $(seq 0 $((BATCHES - 1))); do
  {
    printf '['
    for i in $(seq 0 99); do
      [ "$i" -gt 0 ] && printf ','
      printf '{"request_id":"job-%d-%d","status":"completed","result":{"pad":"%s"}}' "$b" "$i" "$PAD"
    done
    printf ']'
  } > "$WORK/batch$b.json"
done

# CPU seconds (user + system) of the PostgreSQL processes alive now.
# Two figures: every PostgreSQL process, and only the backends serving $DB (whose titles name
# it), which other clients of the same server (a test suite, say) do not inflate.
pg_cpu() {
  local all=0 own=0 pid t
  for pid in $(pgrep -x postgres); do
    t=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null) || continue
    all=$(awk -v a="$all" -v t="$t" 'BEGIN { print a + t }')
    if grep -q " $DB " "/proc/$pid/cmdline" 2>/dev/null || tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q " $DB "; then
      own=$(awk -v a="$own" -v t="$t" 'BEGIN { print a + t }')
    fi
  done
  echo "$all $own"
}
# WAL written so far, in bytes: the write volume per delivery, which a busy machine does not blur.
wal() { psql "$SERVER/$DB" -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"; }
start=$(date +%s.%N)
PG_CPU0=$(pg_cpu)
WAL0=$(wal)
post() {
  for b in $(seq "$1" 16 $((BATCHES - 1))); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      --data-binary "@$WORK/batch$b.json" "http://$API/v1/events"
  done
}
for c in $(seq 0 15); do post "$c" & done
if [ "$DRAIN" = 1 ]; then
  wait $(jobs -p | grep -v -x -e "${PIDS[0]}" -e "${PIDS[1]}") 2>/dev/null || true
  INGEST_CPU=$(pg_cpu)
  INGEST_WAL=$(wal)
  awk -v n=$((BATCHES * 100)) -v a="$PG_CPU0" -v b="$INGEST_CPU" -v w0="$WAL0" -v w1="$INGEST_WAL" \
    'BEGIN { split(a, x, " "); split(b, y, " ");
             printf "ingest alone: %s'"'"'s backends %.3f s of CPU per 1000 events, %.0f WAL bytes per event\n",
                    "'"$DB"'", (y[2] - x[2]) * 1000 / n, (w1 - w0) / n }'
  start=$(date +%s.%N)
  PG_CPU0=$INGEST_CPU
  WAL0=$INGEST_WAL
  curl -sf -o /dev/null -X POST "http://$API/v1/subscriptions/bench/resume"
fi
if [ "$PERF" = 1 ]; then
  perf record -a -g -F 999 -o "$WORK/perf.data" -- sleep 3 > /dev/null 2>&1
fi
if [ "$DRAIN" = 0 ]; then
  wait $(jobs -p | grep -v -x -e "${PIDS[0]}" -e "${PIDS[1]}") 2>/dev/null || true
fi
until [ "$(cat "$WORK/count")" -ge $((BATCHES * 100)) ]; do sleep 0.02; done
end=$(date +%s.%N)
PG_CPU1=$(pg_cpu)
WAL1=$(wal)
FROM="first post"
[ "$DRAIN" = 1 ] && FROM="resume"
awk -v n=$((BATCHES * 100)) -v s="$start" -v e="$end" -v from="$FROM" \
  'BEGIN { printf "delivered %d in %.2f s = %.0f/s (%s to last delivery)\n", n, e - s, n / (e - s), from }'
awk -v n=$((BATCHES * 100)) -v a="$PG_CPU0" -v b="$PG_CPU1" \
  'BEGIN { split(a, x, " "); split(b, y, " ");
           printf "postgres cpu: %.3f s per 1000 deliveries (its processes alive at both ends); %s'"'"'s backends: %.3f s\n",
                  (y[1] - x[1]) * 1000 / n, "'"$DB"'", (y[2] - x[2]) * 1000 / n }'
awk -v n=$((BATCHES * 100)) -v a="$WAL0" -v b="$WAL1" \
  'BEGIN { printf "postgres WAL: %.0f bytes per delivery\n", (b - a) / n }'
echo "hookd peak RSS: $(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/${PIDS[1]}/status")"
curl -sf "http://$METRICS/metrics" | awk -v n=$((BATCHES * 100)) '
  /^hookd_store_claim_duration_seconds_count/ { c = $2 }
  /^hookd_store_claim_duration_seconds_sum/ { t = $2 }
  END { if (c > 0) printf "claims: %d (%.1f per 1000 deliveries), %.2f ms each\n", c, c * 1000 / n, t * 1000 / c }'

if [ "$PERF" = 1 ]; then
  echo "--- perf: share of all samples by process"
  perf report -i "$WORK/perf.data" --no-children --sort comm --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -8 || true
  echo "--- perf: hookd's hottest functions, self (% of all samples)"
  perf report -i "$WORK/perf.data" --pid "${PIDS[1]}" --no-children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -12 || true
  echo "--- perf: postgres's hottest functions, inclusive (% of all samples)"
  perf report -i "$WORK/perf.data" --comm postgres --children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | grep -v '0x0000' | head -25 || true
fi
if [ -n "$EXPLAIN" ]; then
  echo "--- auto_explain: statements slower than $EXPLAIN ms (total, count, median)"
  tail -n +"$LOG_FROM" "$LOG" | python3 -c '
import re, sys, collections
text = sys.stdin.read()
times = collections.defaultdict(list)
for block in re.split(r"\n(?=\S.*LOG:  duration)", text):
    d = re.search(r"duration: ([\d.]+) ms", block)
    q = re.search(r"Query Text: (.{0,70})", block)
    if d and q and "'"$DB"'" in block.split("\n")[0]:
        times[q.group(1).strip()].append(float(d.group(1)))
for q, t in sorted(times.items(), key=lambda kv: -sum(kv[1])):
    t.sort()
    print(f"{sum(t):8.0f} ms  n={len(t):5d}  p50={t[len(t)//2]:6.2f} ms  {q}")
'
fi
