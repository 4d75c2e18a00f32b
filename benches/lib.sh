# Sourced by the benches/*.sh scripts: the common set-up (bench_setup) and
# reading a running emtrack's metrics (needs HTTP, its metrics port).

# metric NAME: the value of an unlabelled metric.
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

# now: wall-clock seconds, with nanoseconds.
now() { date +%s.%N; }

# wait_acked MESSAGES DEADLINE_S: until emtrack has acked that many messages.
wait_acked() {
  local end=$(( $(date +%s) + $2 ))
  while :; do
    local a; a=$(metric emtrack_messages_acked_total); a=${a%.*}
    [ "${a:-0}" -ge "$1" ] && return 0
    [ "$(date +%s)" -ge $end ] && { echo "only ${a:-0} of $1 acked" >&2; return 1; }
    sleep 0.05
  done
}

# bench_setup DATABASE: what every bench script starts with: the release
# binaries built (SIM, EMT), psql on the local server (PG), the bench's
# database (DB, URL; dropped and recreated by the script), a free HTTP port
# (HTTP), a scratch directory (DIR) and a private broker in it (PORT,
# BROKER); emtrack (EMTRACK, once started) and the broker are stopped and
# DIR removed on exit.
bench_setup() {
  cargo build --release -q -p device-sim -p emtrack
  SIM=target/release/device-sim
  # EMT_BIN=PATH measures another emtrack build (an earlier commit's, for a
  # before/after comparison in one sitting).
  EMT=${EMT_BIN:-target/release/emtrack}
  PG="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt"
  DB=$1
  URL=postgres://postgres@127.0.0.1:5432/$DB
  HTTP=$(free_port)
  API=$(free_port)
  DIR=$(mktemp -d)
  EMTRACK=
  trap bench_cleanup EXIT
  start_broker "$DIR"
}

# truncate_evidence: empties the evidence and alert tables of $DB, including
# the custody tables where the schema has them (an earlier build's may not).
truncate_evidence() {
  $PG -d $DB -c "TRUNCATE fixes, device_events, rule_transitions, rejected_messages, device_state,
                 alert_deliveries, alert_events, alerts; UPDATE alert_progress SET processed_to = now()"
  $PG -d $DB -c "DO \$\$ BEGIN IF to_regclass('messages') IS NOT NULL THEN
                 TRUNCATE messages, fix_conflicts, device_findings; END IF; END \$\$"
}

bench_cleanup() {
  [ -n "${EMTRACK:-}" ] && kill "$EMTRACK" 2>/dev/null || true
  kill ${BROKER:-} 2>/dev/null || true
  rm -rf "$DIR"
}

# run_emtrack CLIENT_ID [PREFIX...]: starts `$EMT run` (behind PREFIX, such as
# valgrind) on the bench's database and broker, and waits until /readyz says
# ready (up to 10 minutes: under valgrind, startup is slow).
run_emtrack() {
  local client=$1; shift
  "$@" "$EMT" --config /dev/null --database-url "$URL" --mqtt-port "$PORT" --http-listen "127.0.0.1:$HTTP" \
    --api-listen "127.0.0.1:$API" --mqtt-client-id "$client" run 2> "$DIR/emtrack.log" &
  EMTRACK=$!
  for _ in $(seq 6000); do
    curl -sf "http://127.0.0.1:$HTTP/readyz" > /dev/null && return 0
    sleep 0.1
  done
  echo "emtrack did not become ready:" >&2; tail "$DIR/emtrack.log" >&2; exit 1
}
