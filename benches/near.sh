#!/usr/bin/env bash
# Who was near: emtrack's grid index (`fixes_near`, `emtrack_fixes_near`,
# migration 0008) against a plain PostGIS GiST index (geography, ST_DWithin)
# on the same rows, side by side, with the plans.
#
#   benches/near.sh [subjects] [days] [queries]    (default 10000, 3.5, 20)
#   REUSE=1 benches/near.sh                        (the queries only, on the
#                                                   rows and indexes a full run left)
#
# - A database emtrack_near_bench, migrated; `subjects` bracelets around
#   Almaty (homes spread over 28 x 28 km, each moving on a daily loop of up
#   to 3 km) at a fix a minute for `days` days: 10000 x 3.5 days = 50.4 M
#   fixes, in daily partitions.
# - Both indexes built after the load (build times and sizes reported).
# - `queries` points picked from stored fixes; per point a 200 m, two-day
#   search and a 1 km, six-hour one, through emtrack_fixes_near and through
#   PostGIS. Both must return the same fixes (the script fails otherwise).
#   Each query runs twice; the second (warm cache) execution time is kept.
# - Track playback (the query of GET /v1/subjects/{id}/track) for three
#   subjects, one day and the whole period.
# - Needs PostGIS (Debian's postgresql-15-postgis-3: installed with apt-get
#   when missing and run as root). Takes about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SUBJECTS=${1:-10000}
DAYS=${2:-3.5}
QUERIES=${3:-20}
PGV=$(ls /etc/postgresql | head -n 1)
if [ ! -f "/usr/share/postgresql/$PGV/extension/postgis.control" ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$PGV-postgis-3" > /dev/null
  else
    echo "PostGIS is missing: apt-get install postgresql-$PGV-postgis-3" >&2; exit 1
  fi
fi
cargo build -q --release -p emtrack
# Never the installed package's /etc/emtrack/emtrack.toml: flags only.
EMT="target/release/emtrack --config /dev/null"
DB=emtrack_near_bench
URL=postgres://postgres@127.0.0.1:5432/$DB
PG="psql -h 127.0.0.1 -U postgres -d $DB -v ON_ERROR_STOP=1 -q -At"
MINUTES=$(python3 -c "print(int($DAYS * 1440))")
START=$(date -u -d "$(date -u +%Y-%m-%d) - 4 days" +%Y-%m-%dT00:00:00Z)
secs() { python3 -c "import time; print(time.time())"; }
since() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }
if [ -n "${REUSE:-}" ]; then
  START=$($PG -c "SELECT to_char(min(fix_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM fixes")
  echo "# who was near: reusing $($PG -c "SELECT count(*) FROM fixes") fixes from $START ($(nproc) cores, PostgreSQL $PGV)"
else
echo "# who was near: $SUBJECTS bracelets x $MINUTES minutes from $START ($(nproc) cores, PostgreSQL $PGV)"
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB" 2> /dev/null
$EMT --database-url "$URL" migrate > /dev/null

$PG -c "SELECT emtrack_ensure_partitions('$START'::date, ('$START'::timestamptz + interval '$MINUTES minutes')::date + 1)" > /dev/null
$PG -c "DROP INDEX fixes_near"
T=$(secs)
# One statement per day, so that progress shows.
for ((from = 0; from < MINUTES; from += 1440)); do
  to=$(( from + 1440 < MINUTES ? from + 1440 : MINUTES ))
  $PG -c "SET synchronous_commit = off;
    INSERT INTO fixes (device_id, fix_time, lat, lon, accuracy_m)
    SELECT 'B' || lpad(d::text, 6, '0'), '$START'::timestamptz + k * interval '1 minute',
           43.15 + 0.25 * ((d * 7919) % 10007) / 10007.0 + r * sin(a) + 0.0004 * sin(k / 3.0),
           76.75 + 0.35 * ((d * 104729) % 10009) / 10009.0 + 1.37 * r * cos(a) + 0.0005 * cos(k / 5.0),
           5 + (d + k) % 20
    FROM generate_series(1, $SUBJECTS) AS d,
         LATERAL (SELECT 0.002 + 0.025 * ((d * 31) % 97) / 97.0 AS r) AS rr,
         generate_series($from, $to - 1) AS k,
         LATERAL (SELECT 2 * pi() * k / 1440.0 + d AS a) AS aa"
  echo "  loaded minutes $from..$to ($(since "$T") s)"
done
$PG -c "INSERT INTO devices (id, kind, format, report_interval_s)
          SELECT 'B' || lpad(d::text, 6, '0'), 'bracelet', 'binary', 60 FROM generate_series(1, $SUBJECTS) d;
        INSERT INTO subjects (id, reference) SELECT d, 'S-' || d FROM generate_series(1, $SUBJECTS) d;
        INSERT INTO assignments (device_id, subject_id) SELECT 'B' || lpad(d::text, 6, '0'), d FROM generate_series(1, $SUBJECTS) d;"
ROWS=$($PG -c "SELECT count(*) FROM fixes")
echo "loaded $ROWS fixes in $(since "$T") s"

T=$(secs)
$PG -c "SET maintenance_work_mem = '1GB'; CREATE INDEX fixes_near ON fixes (emtrack_cell(lat, lon), fix_time) INCLUDE (lat, lon, accuracy_m)"
NEAR_BUILD=$(since "$T")
T=$(secs)
$PG -c "CREATE EXTENSION IF NOT EXISTS postgis; SET maintenance_work_mem = '1GB';
        CREATE INDEX fixes_gist ON fixes USING gist ((ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography))"
GIST_BUILD=$(since "$T")
$PG -c "VACUUM ANALYZE fixes" 2> /dev/null
size() { $PG -c "SELECT pg_size_pretty(sum(pg_relation_size(i.indexrelid))) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE c.relname LIKE '$1'"; }
echo "index      build (s)  size"
echo "fixes_near $NEAR_BUILD $(size 'fixes_%_emtrack_cell_%')"
echo "fixes_gist $GIST_BUILD $(size 'fixes_%_st_setsrid_idx')"
echo "heap $($PG -c "SELECT pg_size_pretty(sum(pg_relation_size(c.oid))) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'fixes'::regclass")"

fi

# The query points: stored fixes, spread over the fleet.
$PG -c "SELECT lat, lon, fix_time FROM fixes TABLESAMPLE SYSTEM (0.01) REPEATABLE (42)
        WHERE fix_time >= '$START'::timestamptz + interval '1 day' LIMIT $QUERIES" > /tmp/near-points.$$
OURS() { echo "SELECT device_id, fix_time FROM emtrack_fixes_near($1, $2, $3, '$4'::timestamptz, '$4'::timestamptz + interval '$5')"; }
POSTGIS() { echo "SELECT device_id, fix_time FROM fixes
  WHERE ST_DWithin(ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, $3, false)
    AND fix_time >= '$4'::timestamptz AND fix_time < '$4'::timestamptz + interval '$5'"; }
exec_ms() { $PG -c "EXPLAIN (ANALYZE, TIMING OFF) $1" | sed -nE 's/^Execution Time: ([0-9.]+) ms/\1/p'; }
echo
echo "query          point                     rows   emtrack (ms)  PostGIS (ms)"
RESULTS=/tmp/near-results.$$
: > "$RESULTS"
while IFS='|' read -r lat lon at; do
  for spec in "200 2 days -1 day" "1000 6 hours -3 hours"; do
    read -r r len1 len2 back1 back2 <<< "$spec"
    from=$($PG -c "SELECT ('$at'::timestamptz + interval '$back1 $back2')::text")
    q1=$(OURS "$lat" "$lon" "$r" "$from" "$len1 $len2")
    q2=$(POSTGIS "$lat" "$lon" "$r" "$from" "$len1 $len2")
    n1=$($PG -c "SELECT count(*) FROM ($q1) x")
    n2=$($PG -c "SELECT count(*) FROM ($q2) x")
    diff=$($PG -c "SELECT count(*) FROM (($q1) EXCEPT ($q2)) a" )
    if [ "$n1" != "$n2" ] || [ "$diff" != 0 ]; then
      echo "MISMATCH at ($lat, $lon) $r m: emtrack $n1 rows, PostGIS $n2, $diff only in emtrack" >&2; exit 1
    fi
    exec_ms "$q1" > /dev/null; t1=$(exec_ms "$q1")
    exec_ms "$q2" > /dev/null; t2=$(exec_ms "$q2")
    printf "%-14s (%.5f, %.5f)  %6s  %12s  %12s\n" "${r}m/$len1$len2" "$lat" "$lon" "$n1" "$t1" "$t2"
    echo "$r $t1 $t2" >> "$RESULTS"
  done
done < /tmp/near-points.$$
python3 - "$RESULTS" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
for r in sorted({x[0] for x in rows}, key=float):
    a = sorted(float(x[1]) for x in rows if x[0] == r); b = sorted(float(x[2]) for x in rows if x[0] == r)
    q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
    print(f"{r:>5} m: emtrack median {st.median(a):.1f} ms (p90 {q(a, .9):.1f}, max {a[-1]:.1f}); "
          f"PostGIS median {st.median(b):.1f} ms (p90 {q(b, .9):.1f}, max {b[-1]:.1f}); {len(a)} queries")
PY
read -r lat lon at < <(head -1 /tmp/near-points.$$ | tr '|' ' ')
from=$($PG -c "SELECT ('$at'::timestamptz - interval '1 day')::text")
echo; echo "== plan, emtrack (200 m, 2 days; the statement emtrack_fixes_near runs, through auto_explain)"
$PG -c "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
        SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET client_min_messages = log;
        $(OURS "$lat" "$lon" 200 "$from" "2 days")" 2>&1 > /dev/null | sed -n '/FROM fixes f WHERE/,$p' | grep -v '^LOG:' | head -40
echo; echo "== plan, PostGIS (200 m, 2 days)"
$PG -c "EXPLAIN (ANALYZE, BUFFERS) $(POSTGIS "$lat" "$lon" 200 "$from" "2 days")"

# Track playback: the query of `GET /v1/subjects/{id}/track` (api/src/subjects.rs)
# for one subject, one day and the whole period, a page of 5,000 and 20,000.
TRACK() { echo "SELECT f.device_id, f.fix_time, f.lat, f.lon, f.accuracy_m, f.speed_m_s, f.battery_pct,
       (f.flags & 4) <> 0, f.suspect, f.judged_at
  FROM fixes f JOIN assignments x ON x.device_id = f.device_id AND x.subject_id = $1
   AND f.fix_time >= x.valid_from AND (x.valid_to IS NULL OR f.fix_time < x.valid_to)
  WHERE f.fix_time >= '$START'::timestamptz AND f.fix_time < '$START'::timestamptz + interval '$2'
  ORDER BY f.fix_time, f.device_id LIMIT $3"; }
echo
echo "track playback     rows  execution (ms, warm)"
for spec in "1 day 5001" "4 days 5001" "4 days 20001"; do
  read -r n unit limit <<< "$spec"
  for subject in 17 4242 9001; do
    q=$(TRACK "$subject" "$n $unit" "$limit")
    exec_ms "$q" > /dev/null
    printf "%-16s %6s  %s\n" "$n $unit/$((limit - 1))" "$($PG -c "SELECT count(*) FROM ($q) x")" "$(exec_ms "$q")"
  done
done
rm -f /tmp/near-points.$$ "$RESULTS"
