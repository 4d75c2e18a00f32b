#!/usr/bin/env bash
# The live demo: a simulated fleet → Mosquitto → emtrack → PostgreSQL, with
# the violations it found set against the simulator's ground truth.
#
#   deploy/demo.sh [subjects] [seconds]      (default 600 bracelets, 60 s)
#   KEEP=1 deploy/demo.sh                    (then keep emtrack running for
#                                             the officer API, until Ctrl-C)
#
# - Starts a private Mosquitto from deploy/mosquitto/insecure-loopback-demo.conf on a free
#   loopback port (the packaged defaults drop QoS 1 messages under load).
# - Recreates the database emtrack_demo on the local PostgreSQL, imports a
#   seeded world (zones, subjects, devices, rules) and runs `emtrack run`.
# - Plays 24 simulated hours of the fleet, ending now, in [seconds] of wall
#   time (curfew breaks, exclusion zones, leaving the city, victim approaches,
#   tampering, store-and-forward, hostile payloads).
# - An officers' console (mosquitto_sub on em/v1/officers/+/alerts and
#   em/v1/duty/alerts) receives the alerts as they are raised.
# - Creates officer API users (the duty desk, and the officer with the most
#   subjects) with a fresh password, logs in with curl and reads the alert
#   queue, and prints how to log in.
# - Prints what emtrack stored and judged, the alerts and their deliveries,
#   and its metrics; stops everything (with KEEP=1, once you press Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/broker.sh
SUBJECTS=${1:-600}
SECS=${2:-60}
HOURS=24
echo "== building (release; the first build takes about 7 minutes on 2 cores, later ones seconds)"
cargo build --release -p device-sim -p emtrack
SIM=target/release/device-sim
# Never the installed package's /etc/emtrack/emtrack.toml: flags only.
EMT="target/release/emtrack --config /dev/null"
DB=emtrack_demo
URL=postgres://postgres@127.0.0.1:5432/$DB
PG="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q"
HTTP=$(free_port)
API=$(free_port)
DIR=$(mktemp -d)
EMTRACK=
CONSOLE=
cleanup() {
  [ -n "$EMTRACK" ] && kill "$EMTRACK" 2>/dev/null || true
  [ -n "$CONSOLE" ] && kill "$CONSOLE" 2>/dev/null || true
  kill ${BROKER:-} 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
start_broker "$DIR"

echo "== world: $SUBJECTS bracelets around Almaty, database $DB"
$PG -d postgres -c "DROP DATABASE IF EXISTS $DB" 2> /dev/null
$SIM world --subjects "$SUBJECTS" --out "$DIR/world" > /dev/null
$EMT --database-url "$URL" migrate
$EMT --database-url "$URL" import-world "$DIR/world"
# Officer API users: the duty desk, and the officer with the most subjects.
PASSWORD=$(head -c 15 /dev/urandom | base64 | tr -d '/+=')
OFFICER=$($PG -d $DB -At -c "SELECT officer_id FROM subjects WHERE officer_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
echo "$PASSWORD" | $EMT --database-url "$URL" user add desk --role duty
echo "$PASSWORD" | $EMT --database-url "$URL" user add officer --role officer --officer-id "$OFFICER"

echo "== emtrack run (broker 127.0.0.1:$PORT, metrics http://127.0.0.1:$HTTP/metrics, officer API http://127.0.0.1:$API/v1)"
EMTRACK_LOG=warn $EMT --database-url "$URL" --mqtt-port "$PORT" --http-listen "127.0.0.1:$HTTP" \
  --api-listen "127.0.0.1:$API" --mqtt-client-id emtrack-demo run &
EMTRACK=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$HTTP/readyz" > /dev/null && break; sleep 0.1; done
curl -s "http://127.0.0.1:$HTTP/readyz"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t 'em/v1/officers/+/alerts' -t 'em/v1/duty/alerts' -v \
  > "$DIR/console.txt" &
CONSOLE=$!

START=$(date -u -d "-$HOURS hours" +%Y-%m-%dT%H:%M:%SZ)
SPEEDUP=$(( HOURS * 3600 / SECS ))
echo "== device-sim: $HOURS simulated hours from $START at ${SPEEDUP}x"
$SIM run --port "$PORT" --qos 1 --subjects "$SUBJECTS" --start "$START" --hours "$HOURS" \
  --speedup "$SPEEDUP" --duration "$SECS" --connections 2 --progress-secs 10 \
  --truth "$DIR/truth.jsonl" | grep -v '^ground truth' | tee "$DIR/run.out"
PUBLISHED=$(sed -E 's/^published ([0-9]+) messages.*/\1/;t;d' "$DIR/run.out")
if grep -q 'stopped by duration' "$DIR/run.out"; then
  echo "note: device-sim could not keep the pace on this machine; the run covers less than $HOURS simulated hours"
fi
# Wait until emtrack has committed and acked everything published.
for _ in $(seq 1200); do
  ACKED=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk '$1 == "emtrack_messages_acked_total" { print int($2) }')
  [ "${ACKED:-0}" -ge "$PUBLISHED" ] && break
  sleep 0.1
done
echo "emtrack acked ${ACKED:-0} of $PUBLISHED messages"
echo
echo "== what emtrack stored"
$PG -d $DB -c "SELECT (SELECT count(*) FROM fixes) AS fixes, (SELECT count(*) FROM fixes WHERE suspect) AS suspect,
  (SELECT count(*) FROM device_events) AS device_events, (SELECT count(*) FROM rule_transitions) AS transitions,
  (SELECT count(*) FROM rejected_messages) AS rejected"
$PG -d $DB -c "SELECT reason, count(*) FROM rejected_messages GROUP BY 1 ORDER BY 2 DESC"
$PG -d $DB -c "SELECT kind, historical, count(*) FROM rule_transitions GROUP BY 1, 2 ORDER BY 1, 2"
echo "== the latest violations"
$PG -d $DB -c "SELECT t.at AT TIME ZONE 'Asia/Almaty' AS local_time, s.reference AS subject, t.kind, z.name AS zone, t.other_device
  FROM rule_transitions t JOIN subjects s ON s.id = t.subject_id LEFT JOIN zones z ON z.id = t.zone_id
  WHERE t.kind IN ('exclusion_entered', 'inclusion_left', 'curfew_violation_started', 'proximity_entered')
  ORDER BY t.at DESC LIMIT 10"
echo "== against the ground truth"
$PG -d $DB -At -F ' ' -c "SELECT CASE WHEN kind = 'exclusion_entered' AND zone_id IN (SELECT id FROM zones WHERE category IS NOT NULL) THEN 'category'
    ELSE split_part(kind, '_', 1) END, count(*) FROM rule_transitions
  WHERE kind IN ('exclusion_entered', 'inclusion_left', 'curfew_violation_started', 'proximity_entered') GROUP BY 1" > "$DIR/found.txt"
python3 - "$DIR/truth.jsonl" "$DIR/found.txt" <<'PY'
import json, sys, collections
eps = [json.loads(l) for l in open(sys.argv[1])]
eps = [e for e in eps if e.get("type") == "episode"]
truth = collections.Counter(e["kind"] for e in eps)
optional = collections.Counter(e["kind"] for e in eps if e["cut_short"])
found = {k: int(n) for k, n in (l.split() for l in open(sys.argv[2]) if l.strip())}
print(f"{'episode kind':<12} {'committed (device-sim)':>24} {'of which cut short by the run end':>34} {'found (emtrack)':>16}")
for k in ["curfew", "exclusion", "category", "inclusion", "proximity"]:
    print(f"{k:<12} {truth[k]:>24} {optional[k]:>34} {found.get(k, 0):>16}")
print(f"{sum(e['historical'] for e in eps)} of them reached emtrack only in late store-and-forward uploads")
PY
echo "== alerts (one per episode, tamper or condition; charger events are records, resolved at once)"
for _ in $(seq 100); do  # until every notification is delivered
  [ "$($PG -d $DB -At -c "SELECT count(*) FROM alert_deliveries WHERE state = 'pending'")" = 0 ] && break
  sleep 0.1
done
$PG -d $DB -c "SELECT kind AS type, severity, count(*) AS alerts, count(*) FILTER (WHERE state = 'open') AS open,
  count(*) FILTER (WHERE historical) AS historical FROM alerts GROUP BY 1, 2 ORDER BY 2, 1"
$PG -d $DB -c "SELECT channel, state, count(*) AS notifications FROM alert_deliveries GROUP BY 1, 2"
sleep 0.5
echo "the officers' console received $(wc -l < "$DIR/console.txt") notifications; the newest critical one:"
grep '"severity":"critical"' "$DIR/console.txt" | grep '"change":"raised"' | tail -1 || true
echo
echo "== metrics (http://127.0.0.1:$HTTP/metrics)"
curl -s "http://127.0.0.1:$HTTP/metrics" | grep -E '^emtrack_(messages|fixes|events|rejected|transitions|queue|mqtt|devices|alerts_raised|alerts_open|alert_latency_seconds_(sum|count))' | grep -v _bucket
echo
echo "== the officer API (http://127.0.0.1:$API/v1; its OpenAPI document: /v1/openapi.json)"
LOGIN=$(printf '{"username": "officer", "password": "%s"}' "$PASSWORD")
TOKEN=$(curl -s -X POST "http://127.0.0.1:$API/v1/login" -H 'content-type: application/json' -d "$LOGIN" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
echo "officer $OFFICER's caseload (GET /v1/subjects), by status:"
curl -s "http://127.0.0.1:$API/v1/subjects" -H "authorization: Bearer $TOKEN" \
  | python3 -c 'import json, sys, collections; print(" ", dict(collections.Counter(s["status"] for s in json.load(sys.stdin)["subjects"])))'
echo "officer $OFFICER's newest unresolved alerts (GET /v1/alerts?state=unresolved&limit=3):"
curl -s "http://127.0.0.1:$API/v1/alerts?state=unresolved&limit=3" -H "authorization: Bearer $TOKEN" \
  | python3 -c 'import json, sys; [print(" ", a["id"], a["raised_at"], a["subject_reference"], a["type"], a["severity"], a["state"]) for a in json.load(sys.stdin)["alerts"]]'
echo "Log in as the duty desk (user desk: every alert) or as officer $OFFICER (user officer: their caseload),"
echo "password $PASSWORD, while emtrack runs (KEEP=1):"
echo "  TOKEN=\$(curl -s -X POST http://127.0.0.1:$API/v1/login -H 'content-type: application/json' \\"
echo "    -d '{\"username\": \"desk\", \"password\": \"$PASSWORD\"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"token\"])')"
echo "  curl -s 'http://127.0.0.1:$API/v1/alerts?state=unresolved' -H \"authorization: Bearer \$TOKEN\""
if [ -n "${KEEP:-}" ]; then
  echo "KEEP is set: emtrack keeps running on database $DB; press Ctrl-C to stop it"
  wait "$EMTRACK" || true
fi
kill -TERM "$EMTRACK"; wait "$EMTRACK" || true; EMTRACK=
echo "== done: emtrack stopped cleanly; the data stays in database $DB"
