#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg -i as an operator would,
# and checks it: `emtrack --version`, the unit passes `systemd-analyze
# verify`, the configuration it ships loads (`emtrack check-config` as the
# service user, with the secret files the Deploy section has you create),
# and the installed binary migrates a fresh database as that user. Purges
# the package, the database and its role at the end. Needs root (or sudo),
# cargo-deb (`cargo install cargo-deb --locked`), dpkg, systemd-analyze,
# openssl and the local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=; [ "$(id -u)" = 0 ] || S=sudo    # dpkg -i and /etc/emtrack need root

echo "== building the package (release build: several minutes on 2 cores)"
# The build's progress goes to stderr as it comes; stdout ends with the
# package's path.
DEB=$(cargo deb -p emtrack --locked | tail -n 1)
[ -f "$DEB" ] || { echo "no package built" >&2; exit 1; }

DB=emtrack_pkg_test
PG="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q"
cleanup() {
  $S dpkg --purge emtrack >/dev/null 2>&1 || true
  $PG -c "DROP DATABASE IF EXISTS $DB" -c "DROP ROLE IF EXISTS $DB" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

echo "== dpkg -i $DEB"
$S dpkg -i "$DEB"
emtrack --version
getent passwd emtrack >/dev/null || { echo "no emtrack system user" >&2; exit 1; }
$S stat -c '%U:%G %a %n' /etc/emtrack /etc/emtrack/emtrack.toml

echo "== systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/emtrack.service

echo "== the shipped configuration, with the secret files an operator creates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=emtrack-package-test-ca -keyout /dev/null -out /dev/stdout 2>/dev/null \
  | $S install -m 640 -g emtrack /dev/stdin /etc/emtrack/ca.pem
for f in mqtt.password broker-admin.password; do
  openssl rand -hex 24 | $S install -m 640 -g emtrack /dev/stdin /etc/emtrack/$f
done
$S runuser -u emtrack -- emtrack check-config > /dev/null

echo "== emtrack migrate, as the service user, on a fresh database"
$PG -c "CREATE ROLE $DB LOGIN" -c "CREATE DATABASE $DB OWNER $DB"
$S runuser -u emtrack -- env EMTRACK_DATABASE_URL="postgres://$DB@127.0.0.1:5432/$DB" emtrack migrate
TABLES=$($PG -At -d "$DB" -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('fixes', 'alerts', 'service_lease', 'audit_log')")
[ "$TABLES" = 4 ] || { echo "migrate left $TABLES of 4 tables" >&2; exit 1; }
echo "package test passed: installed, verified, configured, migrated"
