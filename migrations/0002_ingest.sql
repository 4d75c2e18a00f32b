-- emtrack schema, version 2: what the running service needs.
--
-- - `fixes.seq`: arrival order of a fix within its commit (fixes of one commit
--   share `received_at`), so that a restart replays fixes in the order the
--   engine first judged them.
-- - `device_state`: per device, the newest stored fix and the last good
--   (non-suspect) position, upserted in the same transaction as the fixes. A
--   restart rebuilds the engine from it without scanning the evidence.
-- - Partition creation is serialised by an advisory lock: workers create a
--   day's partition on demand when a fix of that day arrives.
-- - Reference tables fire NOTIFY emtrack_reference on change; the service
--   LISTENs and applies the change without a restart.

ALTER TABLE fixes ADD COLUMN seq integer NOT NULL DEFAULT 0;

-- A refused message the broker redelivers (DUP set: it may have been handed
-- over before a crash) is not stored twice; this finds the earlier copy.
CREATE INDEX rejected_messages_copy ON rejected_messages (topic, md5(payload));

CREATE TABLE device_state (
    device_id      text        PRIMARY KEY,
    -- Newest fix time stored (any fix, suspect or not; NULL before the first).
    head_time      timestamptz,
    -- Last good fix: the reference for the implausible-jump check.
    good_time      timestamptz,
    good_lat       double precision,
    good_lon       double precision,
    -- Last message of any kind, and the store-and-forward backlog the device
    -- last announced in a heartbeat.
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    pending        integer
);

CREATE OR REPLACE FUNCTION emtrack_ensure_partitions(from_day date, to_day date) RETURNS integer
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
    -- Two sessions creating the same day would otherwise race between the
    -- existence check and CREATE TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('emtrack_partitions'));
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

-- The payload is `table:key`, where key is the subject id (rules,
-- assignments, subjects, victims), the zone id (zones) or the device id
-- (devices). An UPDATE that moves a row notifies for both old and new keys.
CREATE FUNCTION emtrack_notify_reference() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    FOREACH k IN ARRAY ARRAY[
        CASE WHEN TG_OP <> 'INSERT' THEN
            CASE TG_TABLE_NAME
                WHEN 'rules' THEN to_jsonb(OLD) ->> 'subject_id'
                WHEN 'assignments' THEN to_jsonb(OLD) ->> 'subject_id'
                WHEN 'victims' THEN to_jsonb(OLD) ->> 'protected_from'
                ELSE to_jsonb(OLD) ->> 'id'
            END
        END,
        CASE WHEN TG_OP <> 'DELETE' THEN
            CASE TG_TABLE_NAME
                WHEN 'rules' THEN to_jsonb(NEW) ->> 'subject_id'
                WHEN 'assignments' THEN to_jsonb(NEW) ->> 'subject_id'
                WHEN 'victims' THEN to_jsonb(NEW) ->> 'protected_from'
                ELSE to_jsonb(NEW) ->> 'id'
            END
        END
    ] LOOP
        IF k IS NOT NULL THEN
            PERFORM pg_notify('emtrack_reference', TG_TABLE_NAME || ':' || k);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER zones_notify AFTER INSERT OR UPDATE OR DELETE ON zones
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
CREATE TRIGGER rules_notify AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
CREATE TRIGGER assignments_notify AFTER INSERT OR UPDATE OR DELETE ON assignments
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
CREATE TRIGGER subjects_notify AFTER INSERT OR UPDATE OR DELETE ON subjects
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
CREATE TRIGGER victims_notify AFTER INSERT OR UPDATE OR DELETE ON victims
    FOR EACH ROW EXECUTE FUNCTION emtrack_notify_reference();
