#!/usr/bin/env bash
# emtrack's CPU work per fix, counted in instructions by valgrind's callgrind:
# repeatable on a machine whose wall-clock rates vary by a third from run to
# run, so two builds can be compared in one run.
#
#   benches/ingest-instructions.sh [fixes] [emtrack-binary...]
#   (default 20,000 fixes and target/release/emtrack; under a minute per
#   binary). Give an earlier build before a later one: the database is
#   migrated by each in turn, and an older build refuses a newer schema. KEEP=DIR keeps each callgrind profile there, for
#   callgrind_annotate.
#
# For each binary, and for 1-fix and 10-fix messages: the evidence and alert
# tables are emptied; emtrack runs once to create its persistent session and
# stops; device-sim publishes the same messages (same seed, same start) while
# emtrack is away, so the broker queues them; then emtrack runs under
# callgrind until it has acked them all, and stops. A run with no messages
# (start, idle, stop) is subtracted. Batches are full (the queue is there from
# the start), so the count does not depend on arrival timing; the idle wake-ups
# of a longer run are the remaining noise (run twice to see it).
#
# Private tuned Mosquitto on a free loopback port; database emtrack_instr
# (dropped and recreated); a world of 2,000 bracelets.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
. benches/lib.sh
FIXES=${1:-20000}
shift || true
BINS=("$@")
bench_setup emtrack_instr
[ ${#BINS[@]} -eq 0 ] && BINS=("$EMT")
command -v valgrind > /dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
SUBJECTS=2000

$PG -d postgres -c "DROP DATABASE IF EXISTS $DB"
$SIM world --subjects $SUBJECTS --skew-share 0 --out "$DIR/world" > /dev/null
"${BINS[0]}" --database-url "$URL" migrate > /dev/null
"${BINS[0]}" --database-url "$URL" import-world "$DIR/world" > /dev/null
START=$(date -u -d '-2 days' +%Y-%m-%dT%H:%M:%SZ)
RUN="--port $PORT --qos 1 --max --subjects $SUBJECTS --skew-share 0 --start $START --hours 48
     --fixes $FIXES --duration 300 --connections 2 --inflight 100 --progress-secs 1000 --malformed-rate 0"

reset() { truncate_evidence; }
stop() { kill -TERM "$EMTRACK"; wait "$EMTRACK" || true; EMTRACK=; }
# instructions BINARY BATCH: prints callgrind's total for consuming BATCH-fix
# messages (0: none), the messages and the fixes.
instructions() {
  EMT=$1
  reset
  run_emtrack emtrack-instr; stop
  MSGS=0; FX=0
  if [ "$2" -gt 0 ]; then
    $SIM run $RUN --batch "$2" --truth "$DIR/truth.jsonl" > "$DIR/run.out"
    local line; line=$(grep '^published' "$DIR/run.out")
    MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/' <<< "$line")
    FX=$(sed -E 's/.*\(([0-9]+) fixes.*/\1/' <<< "$line")
  fi
  run_emtrack emtrack-instr valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out"
  wait_acked "$MSGS" 1800
  stop
  [ -n "${KEEP:-}" ] && cp "$DIR/cg.out" "$KEEP/$(basename "$1")-$2.callgrind"
  echo "$(awk '/^(summary|totals):/ { print $2; exit }' "$DIR/cg.out") $MSGS $FX"
}

echo "# emtrack instructions per fix (callgrind): $FIXES fixes per run, $SUBJECTS bracelets"
echo
echo "| binary | fixes/message | messages | fixes | instructions (run) | instructions (idle) | instructions per fix |"
echo "|---|---|---|---|---|---|---|"
for BIN in "${BINS[@]}"; do
  read -r IDLE _ _ < <(instructions "$BIN" 0)
  for BATCH in 1 10; do
    read -r IR MSGS FX < <(instructions "$BIN" "$BATCH")
    python3 -c "print(f'| $BIN | $BATCH | {$MSGS:,} | {$FX:,} | {$IR:,} | {$IDLE:,} | {($IR - $IDLE) / $FX:,.0f} |')"
  done
done
