#!/usr/bin/env bash
# Maximum publish rate of device-sim into a local Mosquitto, checked against a
# null subscriber's receive count. Starts its own broker from
# deploy/mosquitto/insecure-loopback-demo.conf on a free loopback port, and stops it.
#
#   benches/publish-rate.sh [fixes-per-run]    (default 1,000,000)
#
# Each run is bounded: by the fix count and by 120 s of wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
FIXES=${1:-1000000}
cargo build --release -q -p device-sim
SIM=target/release/device-sim
DIR=$(mktemp -d)
trap 'kill ${BROKER:-} 2>/dev/null; rm -rf "$DIR"' EXIT
start_broker "$DIR"

echo "| QoS | fixes/message | messages | fixes | seconds | msg/s | fixes/s | acked | sink received | lost |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for QOS in 1 0; do
  for BATCH in 1 10; do
    $SIM sink --port "$PORT" --qos 1 --idle-secs 3 --max-secs 300 --client-id "sink-$QOS-$BATCH" > "$DIR/sink.out" &
    SINK=$!
    sleep 0.5   # let the subscription settle before the first publish
    $SIM run --port "$PORT" --qos "$QOS" --batch "$BATCH" --max --subjects 20000 --hours 24 \
      --fixes "$FIXES" --duration 120 --connections 4 --inflight 200 --progress-secs 1000 \
      --malformed-rate 0 --truth "$DIR/truth.jsonl" > "$DIR/run.out"
    wait $SINK
    LINE=$(grep '^published' "$DIR/run.out")
    MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/' <<< "$LINE")
    FX=$(sed -E 's/.*\(([0-9]+) fixes.*/\1/' <<< "$LINE")
    SECS=$(sed -E 's/.* in ([0-9.]+) s:.*/\1/' <<< "$LINE")
    MSGRATE=$(sed -E 's/.* s: ([0-9]+) msg\/s.*/\1/' <<< "$LINE")
    FXRATE=$(sed -E 's/.* ([0-9]+) fixes\/s.*/\1/' <<< "$LINE")
    ACKED=$(sed -E 's/.*acked ([0-9]+);.*/\1/' <<< "$LINE")
    GOT=$(sed -E 's/^sink: received ([0-9]+) messages.*/\1/;t;d' "$DIR/sink.out")
    echo "| $QOS | $BATCH | $MSGS | $FX | $SECS | $MSGRATE | $FXRATE | $ACKED | $GOT | $((MSGS - GOT)) |"
  done
done
