-- emtrack schema, version 1.
--
-- Reference data (officers, subjects, devices, zones, rules, assignments) and
-- evidence (fixes, device events, rule transitions, rejected messages).
--
-- `fixes` and `device_events` are time-partitioned:
-- - with TimescaleDB available, as hypertables with one-day chunks and
--   compression after 7 days (retention is set by the service from its config);
-- - otherwise, with PostgreSQL native range partitions, one per UTC day, created
--   ahead of time by `emtrack_ensure_partitions` and dropped after the retention
--   period by `emtrack_drop_partitions_before`.

CREATE TABLE officers (
    id            bigint PRIMARY KEY,
    name          text   NOT NULL,
    role          text   NOT NULL CHECK (role IN ('officer', 'supervisor', 'duty_desk')),
    supervisor_id bigint REFERENCES officers (id)
);

CREATE TABLE subjects (
    id         bigint PRIMARY KEY,
    reference  text   NOT NULL UNIQUE,
    officer_id bigint REFERENCES officers (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    -- The protocol's device id rule (protocol/README.md).
    id                text PRIMARY KEY CHECK (
        id ~ '^[A-Za-z0-9._-]{1,64}$' OR id ~ '^ot:[A-Za-z0-9._-]{1,29}:[A-Za-z0-9._-]{1,29}$'
    ),
    kind              text    NOT NULL CHECK (kind IN ('bracelet', 'victim_phone')),
    format            text    NOT NULL CHECK (format IN ('binary', 'json', 'owntracks')),
    report_interval_s integer NOT NULL CHECK (report_interval_s > 0),
    retired_at        timestamptz
);

CREATE TABLE zones (
    id         bigint PRIMARY KEY,
    name       text   NOT NULL,
    kind       text   NOT NULL CHECK (kind IN ('inclusion', 'exclusion')),
    -- Global zones of a restriction category are exclusion zones.
    category   integer CHECK (category IS NULL OR kind = 'exclusion'),
    -- An RFC 7946 geometry: Polygon, MultiPolygon, or Point with radius_m.
    geometry   jsonb  NOT NULL CHECK (geometry ->> 'type' IN ('Polygon', 'MultiPolygon', 'Point')),
    radius_m   double precision CHECK (radius_m > 0),
    buffer_m   double precision NOT NULL DEFAULT 0 CHECK (buffer_m >= 0),
    -- When the zone imposes anything (NULL: always).
    schedule   jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((geometry ->> 'type' = 'Point') = (radius_m IS NOT NULL))
);

CREATE TABLE assignments (
    device_id  text   NOT NULL REFERENCES devices (id),
    subject_id bigint NOT NULL REFERENCES subjects (id),
    valid_from timestamptz NOT NULL DEFAULT '-infinity',
    valid_to   timestamptz,
    PRIMARY KEY (device_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX assignments_subject ON assignments (subject_id);

CREATE TABLE rules (
    id             bigint PRIMARY KEY,
    subject_id     bigint NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    kind           text   NOT NULL CHECK (kind IN ('zone', 'curfew', 'category', 'proximity')),
    zone_id        bigint REFERENCES zones (id),
    category       integer,
    other_device   text REFERENCES devices (id),
    min_distance_m double precision CHECK (min_distance_m > 0),
    max_age_s      integer CHECK (max_age_s > 0),
    -- When the rule is in force: {"tz": "...", "windows": [{"days": [...], "start": "HH:MM", "end": "HH:MM"}]}.
    schedule       jsonb,
    CHECK (CASE kind
        WHEN 'zone' THEN zone_id IS NOT NULL
        WHEN 'curfew' THEN zone_id IS NOT NULL AND schedule IS NOT NULL
        WHEN 'category' THEN category IS NOT NULL
        WHEN 'proximity' THEN other_device IS NOT NULL AND min_distance_m IS NOT NULL AND max_age_s IS NOT NULL
    END)
);
CREATE INDEX rules_subject ON rules (subject_id);

CREATE TABLE victims (
    id             bigint PRIMARY KEY,
    device_id      text   NOT NULL REFERENCES devices (id),
    protected_from bigint NOT NULL REFERENCES subjects (id),
    home_zone_id   bigint REFERENCES zones (id)
);

-- Rule transitions: the key is deterministic, so a redelivered message that
-- produces the same transition again inserts nothing.
CREATE TABLE rule_transitions (
    subject_id   bigint      NOT NULL,
    rule_id      bigint      NOT NULL,
    -- 0 when the rule has no zone (proximity), so that the key has no NULL.
    zone_id      bigint      NOT NULL DEFAULT 0,
    kind         text        NOT NULL,
    at           timestamptz NOT NULL,
    historical   boolean     NOT NULL,
    confirmed_at timestamptz NOT NULL,
    other_device text,
    end_cause    text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, rule_id, zone_id, kind, at, historical)
);

-- Every refused message, with its raw bytes: never silently lost.
CREATE TABLE rejected_messages (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    detail      text,
    payload     bytea       NOT NULL
);
CREATE INDEX rejected_messages_received ON rejected_messages (received_at);

-- The time-partitioned evidence tables.
DO $$
DECLARE
    fix_columns text := $cols$
        device_id   text        NOT NULL,
        fix_time    timestamptz NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
        lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
        accuracy_m  real        NOT NULL CHECK (accuracy_m >= 0),
        speed_m_s   real,
        heading_deg real,
        battery_pct smallint,
        flags       smallint    NOT NULL DEFAULT 0,
        suspect     boolean     NOT NULL DEFAULT false,
        PRIMARY KEY (device_id, fix_time)
    $cols$;
    event_columns text := $cols$
        device_id   text        NOT NULL,
        event_time  timestamptz NOT NULL,
        kind        text        NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        battery_pct smallint,
        flags       smallint    NOT NULL DEFAULT 0,
        late        boolean     NOT NULL DEFAULT false,
        PRIMARY KEY (device_id, event_time, kind)
    $cols$;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE fixes (%s)', fix_columns);
        EXECUTE format('CREATE TABLE device_events (%s)', event_columns);
        PERFORM create_hypertable('fixes', 'fix_time', chunk_time_interval => interval '1 day');
        PERFORM create_hypertable('device_events', 'event_time', chunk_time_interval => interval '1 day');
        EXECUTE 'ALTER TABLE fixes SET (timescaledb.compress, timescaledb.compress_segmentby = ''device_id'')';
        EXECUTE 'ALTER TABLE device_events SET (timescaledb.compress, timescaledb.compress_segmentby = ''device_id'')';
        PERFORM add_compression_policy('fixes', interval '7 days');
        PERFORM add_compression_policy('device_events', interval '7 days');
    ELSE
        EXECUTE format('CREATE TABLE fixes (%s) PARTITION BY RANGE (fix_time)', fix_columns);
        EXECUTE format('CREATE TABLE device_events (%s) PARTITION BY RANGE (event_time)', event_columns);
    END IF;
END
$$;

-- Whether the evidence tables use native partitions (false under TimescaleDB).
CREATE FUNCTION emtrack_native_partitions() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass)
$$;

-- Creates the daily partitions (UTC days) of fixes and device_events covering
-- [from_day, to_day]; returns how many were created. A no-op under TimescaleDB.
CREATE FUNCTION emtrack_ensure_partitions(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    parent  text;
    child   text;
    created integer := 0;
BEGIN
    IF NOT emtrack_native_partitions() THEN
        RETURN 0;
    END IF;
    d := from_day;
    WHILE d <= to_day LOOP
        FOREACH parent IN ARRAY ARRAY['fixes', 'device_events'] LOOP
            child := format('%s_p%s', parent, to_char(d, 'YYYYMMDD'));
            IF to_regclass(child) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    child, parent,
                    (d::timestamp AT TIME ZONE 'UTC'),
                    ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                created := created + 1;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drops the daily partitions that end on or before `cutoff` (UTC); returns
-- how many were dropped. Under TimescaleDB, retention is a policy instead.
CREATE FUNCTION emtrack_drop_partitions_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    IF NOT emtrack_native_partitions() THEN
        RETURN 0;
    END IF;
    FOR part IN
        SELECT c.relname AS name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('fixes'::regclass, 'device_events'::regclass)
          AND c.relname ~ '_p[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', part.name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
