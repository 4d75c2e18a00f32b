#!/usr/bin/env bash
# The throughput cost of TLS on the MQTT link, on this machine:
#
#   benches/tls-bench.sh [fixes-per-run] [rounds]    (default 300,000 and 3)
#
# One private broker (deploy/mosquitto/insecure-loopback-demo.conf) with two
# loopback listeners, plain TCP and TLS (a certificate made by openssl for
# this run only, in a scratch directory), the same anonymous access on both:
# only TLS differs. For each link in turn, plain then TLS, each round, in one
# sitting: device-sim publishes the same messages (1 fix each, QoS 1, at its
# maximum rate) while emtrack consumes them into PostgreSQL. Both ends of the
# link use TLS in the TLS runs (device-sim --ca-file, emtrack mqtt_tls).
# Reports emtrack's fixes/s, its CPU µs per fix, the TLS/plain ratios of
# each round and their median.
#
# Uses the database emtrack_tls_bench (dropped and recreated). Every run is
# bounded (fix count, 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
. benches/lib.sh
FIXES=${1:-300000}
ROUNDS=${2:-3}
SUBJECTS=20000
bench_setup emtrack_tls_bench
PLAIN_PORT=$PORT

# A CA and a certificate for 127.0.0.1 signed by it, for this run only.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=emtrack bench CA" -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$DIR/server.key" -out "$DIR/server.csr" 2> /dev/null
openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -days 1 -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost') \
  -out "$DIR/server.pem" 2> /dev/null
chmod 644 "$DIR/server.key"  # read by the mosquitto user; deleted on exit

# The same broker again, with a TLS listener beside the plain one.
kill "$BROKER"; wait "$BROKER" 2> /dev/null || true
TLS_PORT=$(free_port)
printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n' "$TLS_PORT" "$DIR/server.pem" "$DIR/server.key" \
  >> "$DIR/mosquitto.conf"
mosquitto -c "$DIR/mosquitto.conf" > "$DIR/mosquitto.log" 2>&1 &
BROKER=$!
for p in "$PLAIN_PORT" "$TLS_PORT"; do
  for _ in $(seq 200); do (exec 3<> /dev/tcp/127.0.0.1/"$p") 2> /dev/null && break; sleep 0.05; done
done

$PG -d postgres -c "DROP DATABASE IF EXISTS $DB"
$SIM world --subjects $SUBJECTS --skew-share 0 --out "$DIR/world" > /dev/null
$EMT --database-url "$URL" migrate > /dev/null
$EMT --database-url "$URL" import-world "$DIR/world" > /dev/null
echo "# MQTT over TLS against plain TCP: $(nproc) cores, $FIXES fixes per run, $SUBJECTS bracelets"
echo
echo "| run | link | emtrack fixes/s | emtrack CPU µs/fix |"
echo "|---|---|---|---|"
START=$(date -u -d '-3 days' +%Y-%m-%dT%H:%M:%SZ)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
RESULTS=()
for ROUND in $(seq "$ROUNDS"); do
  for LINK in plain tls; do
    truncate_evidence
    CLIENT="emtrack-tls-bench-$LINK-$ROUND"
    if [ "$LINK" = tls ]; then
      PORT=$TLS_PORT; SIM_TLS=(--ca-file "$DIR/ca.pem")
      export EMTRACK_MQTT_TLS=true EMTRACK_MQTT_CA_FILE="$DIR/ca.pem"
    else
      PORT=$PLAIN_PORT; SIM_TLS=()
      unset EMTRACK_MQTT_TLS EMTRACK_MQTT_CA_FILE
    fi
    run_emtrack "$CLIENT"
    C0=$(cpu_ticks "$EMTRACK"); T0=$(now)
    $SIM run --port "$PORT" "${SIM_TLS[@]}" --qos 1 --max --subjects $SUBJECTS --skew-share 0 \
      --start "$START" --hours 48 --fixes "$FIXES" --duration 300 --connections 4 --inflight 200 \
      --progress-secs 1000 --malformed-rate 0 --batch 1 --truth "$DIR/truth.jsonl" > "$DIR/run.out"
    MSGS=$(sed -E 's/^published ([0-9]+) messages.*/\1/;t;d' "$DIR/run.out")
    FX=$(grep '^published' "$DIR/run.out" | sed -E 's/.*\(([0-9]+) fixes.*/\1/')
    wait_acked "$MSGS" 300
    T1=$(now); C1=$(cpu_ticks "$EMTRACK")
    kill -TERM "$EMTRACK"; wait "$EMTRACK" || true; EMTRACK=
    # End the persistent session so the broker stops queueing for it.
    mosquitto_sub -h 127.0.0.1 -p "$PLAIN_PORT" -i "$CLIENT" -t emtrack/bench/none -E
    read -r R C < <(python3 -c "
fx=$FX; s=$T1-$T0; print(round(fx/s), round(($C1-$C0)/$(getconf CLK_TCK)*1e6/fx, 1))")
    RESULTS+=("$R" "$C")
    python3 -c "print(f'| $ROUND | $LINK | {$R:,} | $C |')"
  done
done
echo
python3 - "${RESULTS[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
rounds = [v[i:i + 4] for i in range(0, len(v), 4)]  # plain rate, cpu, tls rate, cpu
tput = [t / p for p, _, t, _ in rounds]
cpu = [tc / pc for _, pc, _, tc in rounds]
for n, (a, b) in enumerate(zip(tput, cpu), 1):
    print(f"round {n}: TLS/plain throughput {a:.2f}, CPU per fix {b:.2f}x")
print(f"median over {len(rounds)} rounds: TLS/plain throughput {statistics.median(tput):.2f}, "
      f"CPU per fix {statistics.median(cpu):.2f}x")
PY
