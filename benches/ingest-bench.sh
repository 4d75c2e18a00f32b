#!/usr/bin/env bash
# Ingest throughput, CPU cost, lag and storage rate of `emtrack`, on this
# machine, against baselines measured in the same run:
#
#   benches/ingest-bench.sh [fixes-per-run]    (default 500,000)
#
# 1. Throughput, for 1-fix and 10-fix messages: device-sim at max rate (QoS 1)
#    → a private tuned Mosquitto (deploy/mosquitto/insecure-loopback-demo.conf, free
#    loopback port) → first a null QoS 1 subscriber that only counts
#    (`device-sim sink`), then emtrack with PostgreSQL. Both see the same
#    messages. Reports fixes/s of each, their ratio, and emtrack's CPU time
#    per fix (utime + stime from /proc).
# 2. Lag: 100,000 bracelets in real time (`--speedup 1 --start now`, about
#    1,700 fixes/s) for 60 s; p50/p99 of commit time minus fix time.
# 3. Storage: the rows emtrack stored in the 10-fix run, written again with
#    `psql \copy` into an empty copy of the schema, against emtrack's own
#    write rate (rows per second of commit time, and end to end).
#
# Uses the database emtrack_bench (dropped and recreated) on the local server.
# Every run is bounded (fix count, 300 s per phase).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
. benches/lib.sh
FIXES=${1:-500000}
SUBJECTS=20000
bench_setup emtrack_bench

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_emtrack() { run_emtrack emtrack-bench; }
# Stop emtrack, then end its persistent session (a clean-session connect under
# the same client id), so the broker stops queueing for it in later phases.
stop_emtrack() {
  kill -TERM "$EMTRACK"; wait "$EMTRACK" || true; EMTRACK=
  mosquitto_sub -h 127.0.0.1 -p "$PORT" -i emtrack-bench -t emtrack/bench/none -E
}
reset_evidence() { truncate_evidence; }

$PG -d postgres -c "DROP DATABASE IF EXISTS $DB"
$SIM world --subjects 100000 --skew-share 0 --out "$DIR/world" > /dev/null
$EMT --database-url "$URL" migrate > /dev/null
$EMT --database-url "$URL" import-world "$DIR/world" > /dev/null
echo "# emtrack ingest benchmark: $(nproc) cores, $FIXES fixes per run, $SUBJECTS bracelets"
echo

START=$(date -u -d '-3 days' +%Y-%m-%dT%H:%M:%SZ)
RUN="--port $PORT --qos 1 --max --subjects $SUBJECTS --skew-share 0 --start $START --hours 48
     --fixes $FIXES --duration 300 --connections 4 --inflight 200 --progress-secs 1000 --malformed-rate 0"
parse_run() {  # sets MSGS FX
  local line; line=$(grep '^published' "$1")
  MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/' <<< "$line")
  FX=$(sed -E 's/.*\(([0-9]+) fixes.*/\1/' <<< "$line")
}

echo "| fixes/message | null subscriber fixes/s | emtrack fixes/s | ratio | emtrack CPU µs/fix | fixes stored | commit path fixes/s |"
echo "|---|---|---|---|---|---|---|"
for BATCH in 1 10; do
  # Baseline: a subscriber that only counts.
  $SIM sink --port "$PORT" --qos 1 --idle-secs 3 --max-secs 300 --client-id "sink-$BATCH" > "$DIR/sink.out" &
  SINK=$!
  sleep 0.5
  $SIM run $RUN --batch "$BATCH" --truth "$DIR/truth.jsonl" > "$DIR/run.out"
  wait $SINK
  parse_run "$DIR/run.out"
  SINK_MSG_S=$(sed -E 's/.* ([0-9]+) msg\/s while active.*/\1/;t;d' "$DIR/sink.out")
  SINK_FX_S=$(python3 -c "print(round($SINK_MSG_S * $FX / $MSGS))")

  # emtrack, same messages.
  reset_evidence
  start_emtrack
  C0=$(cpu_ticks "$EMTRACK"); T0=$(now)
  $SIM run $RUN --batch "$BATCH" --truth "$DIR/truth.jsonl" > "$DIR/run.out"
  parse_run "$DIR/run.out"
  wait_acked "$MSGS" 300
  T1=$(now); C1=$(cpu_ticks "$EMTRACK")
  STORED=$(metric emtrack_fixes_accepted_total)
  COMMIT_S=$(metric emtrack_commit_duration_seconds_sum)
  stop_emtrack
  TICK=$(getconf CLK_TCK)
  python3 - "$FX" "$T0" "$T1" "$C0" "$C1" "$TICK" "$SINK_FX_S" "$STORED" "$COMMIT_S" "$BATCH" <<'PY'
import sys
fx, t0, t1, c0, c1, tick, sink, stored, commit_s, batch = sys.argv[1:]
fx = int(fx); secs = float(t1) - float(t0); rate = fx / secs
cpu_us = (int(c1) - int(c0)) / int(tick) * 1e6 / fx
print(f"| {batch} | {int(sink):,} | {rate:,.0f} | {rate / int(sink):.2f} | {cpu_us:.1f} | {int(float(stored)):,} | {int(float(stored)) / float(commit_s):,.0f} |")
PY
done
echo

# Storage: the same rows through psql \copy into an empty copy of the schema.
$PG -d $DB -c "\\copy (SELECT device_id, fix_time, received_at, lat, lon, accuracy_m, speed_m_s, heading_deg, battery_pct, flags, suspect, seq FROM fixes) TO '$DIR/fixes.csv' CSV"
ROWS=$(wc -l < "$DIR/fixes.csv")
$PG -d postgres -c "DROP DATABASE IF EXISTS ${DB}_copy"
$EMT --database-url "${URL}_copy" migrate > /dev/null
$PG -d ${DB}_copy -c "SELECT emtrack_ensure_partitions(current_date - 4, current_date)" > /dev/null
T0=$(now)
$PG -d ${DB}_copy -c "\\copy fixes (device_id, fix_time, received_at, lat, lon, accuracy_m, speed_m_s, heading_deg, battery_pct, flags, suspect, seq) FROM '$DIR/fixes.csv' CSV"
T1=$(now)
$PG -d postgres -c "DROP DATABASE ${DB}_copy"
python3 -c "print(f'psql \\\\copy of the same {$ROWS:,} rows into an empty fixes table: {$ROWS / ($T1 - $T0):,.0f} rows/s')"
echo

# Lag: 100,000 bracelets in real time for 60 s. The first seconds are a
# catch-up burst (fixes due while device-sim set up its scenario go out at
# once), so lag is taken over the steady state: histogram counts between a
# snapshot 15 s after the first message and the end, and table rows
# received after that point.
reset_evidence
start_emtrack
$SIM run --port "$PORT" --qos 1 --speedup 1 --start now --subjects 100000 --skew-share 0 --hours 1 \
  --duration 60 --connections 4 --inflight 200 --progress-secs 1000 --malformed-rate 0 \
  --store-forward-rate 0 --silence-rate 0 --truth "$DIR/truth.jsonl" > "$DIR/run.out" &
SIMPID=$!
until [ "$(metric emtrack_messages_received_total | cut -d. -f1)" -gt 0 ] 2>/dev/null; do sleep 0.1; done
sleep 15
curl -s "http://127.0.0.1:$HTTP/metrics" > "$DIR/metrics0.txt"
STEADY=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
wait $SIMPID
parse_run "$DIR/run.out"
wait_acked "$MSGS" 60
curl -s "http://127.0.0.1:$HTTP/metrics" > "$DIR/metrics1.txt"
stop_emtrack
python3 - "$DIR/metrics0.txt" "$DIR/metrics1.txt" "$FX" <<'PY'
import sys
def buckets(path):
    out = []
    for line in open(path):
        if line.startswith('emtrack_ingest_lag_seconds_bucket'):
            le = line.split('le="')[1].split('"')[0]
            out.append((float('inf') if le == '+Inf' else float(le), float(line.split()[-1])))
    return out
b0, b1 = buckets(sys.argv[1]), buckets(sys.argv[2])
bk = [(le, n1 - n0) for (le, n0), (_, n1) in zip(b0, b1)]
total = bk[-1][1]
def q(p):
    # Linear interpolation inside the bucket, as Prometheus' histogram_quantile.
    target, lo, below = p * total, 0.0, 0.0
    for le, n in bk:
        if n >= target:
            return lo + (le - lo) * (target - below) / max(n - below, 1e-9)
        lo, below = le, n
print(f"real-time lag, steady state ({int(total):,} live fixes from 15 s after the first message; {int(sys.argv[3]):,} fixes in 60 s): "
      f"p50 {q(0.5) * 1000:.0f} ms, p99 {q(0.99) * 1000:.0f} ms (emtrack_ingest_lag_seconds: commit time - fix time)")
PY
for WHO in "all devices|true" "bracelets only (phone fixes, OwnTracks, carry whole seconds, so up to 1 s shows as lag)|device_id LIKE 'EM-%'"; do
  $PG -d $DB -c "SELECT 'same window from the table, ${WHO%%|*}: received_at (transaction start) - fix_time p50 ' || round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - fix_time)) * 1000)::numeric, 1) || ' ms, p99 ' || round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - fix_time)) * 1000)::numeric, 1) || ' ms, max ' || round((max(extract(epoch FROM received_at - fix_time)) * 1000)::numeric, 1) || ' ms over ' || count(*) || ' fixes' FROM fixes WHERE received_at >= '$STEADY' AND ${WHO#*|}"
done
$PG -d postgres -c "DROP DATABASE $DB"
