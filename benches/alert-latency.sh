#!/usr/bin/env bash
# Alert latency under load: device-sim publish → broker → emtrack (commit,
# alert store) → broker → officer topic, p50/p99/max.
#
#   benches/alert-latency.sh [seconds-per-phase]    (default 30)
#
# 1. Max ingest rate of this machine, measured first in the same run as in
#    benches/ingest-bench.sh: 200,000 one-fix messages at --max, fixes/s from
#    the first publish to the last ack.
# 2. Half that rate, then the full rate, as background load (a 20,000-bracelet
#    scenario three days back, QoS 1), while `device-sim probe` publishes 10
#    strap-opened events a second for 50 bracelets, stamped with the wall
#    clock, and times their `strap_tamper` notifications on the officer and
#    duty topics (receipt − event time, one process, one clock).
#
# Private tuned Mosquitto on a free loopback port; database emtrack_bench_alerts
# (dropped and recreated). Every phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
. benches/lib.sh
SECS=${1:-30}
SUBJECTS=20000
bench_setup emtrack_bench_alerts
# wait_delivered DEADLINE_S: until no alert notification is pending.
wait_delivered() {
  local end=$(( $(date +%s) + $1 ))
  until [ "$($PG -d $DB -c "SELECT count(*) FROM alert_deliveries WHERE state = 'pending'")" = 0 ]; do
    [ "$(date +%s)" -ge $end ] && { echo "notifications still pending after $1 s" >&2; return 1; }
    sleep 0.2
  done
}

$PG -d postgres -c "DROP DATABASE IF EXISTS $DB"
$SIM world --subjects $SUBJECTS --skew-share 0 --out "$DIR/world" > /dev/null
$EMT --database-url "$URL" migrate > /dev/null
$EMT --database-url "$URL" import-world "$DIR/world" > /dev/null
run_emtrack emtrack-bench-alerts

# Each phase plays its own stretch of time (from 3, 2 and 1 days back, 20
# hours each): a phase replaying what an earlier one stored would measure
# the duplicate path, not live ingest.
start_of() { date -u -d "-$1 days" +%Y-%m-%dT%H:%M:%SZ; }
LOAD="--port $PORT --qos 1 --subjects $SUBJECTS --skew-share 0 --hours 20
      --connections 4 --inflight 200 --progress-secs 1000 --malformed-rate 0 --truth $DIR/truth.jsonl"

echo "# emtrack alert latency: $(nproc) cores, $SUBJECTS bracelets, $SECS s per phase"
echo
# 1. Max ingest rate.
A0=$(metric emtrack_messages_acked_total); A0=${A0%.*}
T0=$(now)
$SIM run $LOAD --start "$(start_of 3)" --max --fixes 200000 --duration 300 > "$DIR/run.out"
MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/;t;d' "$DIR/run.out")
FX=$(sed -E 's/^published .*\(([0-9]+) fixes.*/\1/;t;d' "$DIR/run.out")
wait_acked $(( A0 + MSGS )) 300
T1=$(now)
wait_delivered 300
MAX=$(python3 -c "print(int($FX / ($T1 - $T0)))")
echo "max ingest rate, measured: $MAX fixes/s ($FX fixes, first publish to last ack)"
echo
echo "| load | load fixes/s (target) | probe events | alerts received | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|"
for PHASE in half full; do
  if [ $PHASE = half ]; then RATE=$(( MAX / 2 )); DAYS=2; else RATE=$MAX; DAYS=1; fi
  A0=$(metric emtrack_messages_acked_total); A0=${A0%.*}
  $SIM run $LOAD --start "$(start_of $DAYS)" --rate "$RATE" --duration "$SECS" > "$DIR/load.out" &
  LOADPID=$!
  sleep 2
  $SIM probe --port "$PORT" --subjects $SUBJECTS --skew-share 0 --rate 10 --secs $(( SECS - 4 )) \
    --client-id "probe-$PHASE" > "$DIR/probe.out"
  wait $LOADPID
  MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/;t;d' "$DIR/load.out")
  wait_acked $(( A0 + MSGS )) 300
  wait_delivered 300
  python3 - "$DIR/probe.out" "$DIR/load.out" "$PHASE" "$RATE" <<'PY'
import re, sys
probe = open(sys.argv[1]).read()
load = open(sys.argv[2]).read()
m = re.search(r"sent (\d+) .* received (\d+) alerts; latency ms p50 (\S+) p99 (\S+) max (\S+)", probe)
r = re.search(r"\(([0-9]+) fixes.* ([0-9.]+) s\b", load)
fx = re.search(r"^published .*\((\d+) fixes", load, re.M)
secs = re.search(r" in ([0-9.]+) s", load)
rate = f"{int(fx.group(1)) / float(secs.group(1)):,.0f}" if fx and secs else "?"
print(f"| {sys.argv[3]} | {rate} ({int(sys.argv[4]):,}) | {m.group(1)} | {m.group(2)} | {m.group(3)} | {m.group(4)} | {m.group(5)} |")
PY
done
kill -TERM "$EMTRACK"; wait "$EMTRACK" || true; EMTRACK=
$PG -d postgres -c "DROP DATABASE $DB"
