-- emtrack schema, version 6: every version of every order.
--
-- `order_versions` keeps each zone and rule as it was over a validity
-- interval [valid_from, valid_to): a trigger on `zones` and `rules` appends
-- the new version (the whole row as JSON; NULL once deleted) and closes the
-- previous one, whatever made the change (the officer API, import-world,
-- SQL by hand). Who and why come from the transaction's settings
-- `emtrack.actor` and `emtrack.reason` (`SET LOCAL`), which the officer API
-- sets; otherwise the database role is recorded. The question "which orders
-- were in force on the night in question" is a query on this table.
--
-- Rows that existed before this migration get one version each, valid from
-- the zone's `updated_at`, or from -infinity for a rule (its creation time
-- was not recorded).

CREATE TABLE order_versions (
    id         bigserial   PRIMARY KEY,
    object     text        NOT NULL CHECK (object IN ('zone', 'rule')),
    object_id  bigint      NOT NULL,
    version    integer     NOT NULL,
    -- The row from valid_from on; NULL: deleted.
    row        jsonb,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    changed_by text        NOT NULL,
    reason     text,
    UNIQUE (object, object_id, version),
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX order_versions_current ON order_versions (object, object_id) WHERE valid_to IS NULL;
CREATE INDEX order_versions_subject ON order_versions (((row ->> 'subject_id')::bigint), valid_from)
    WHERE object = 'rule';

CREATE FUNCTION emtrack_order_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    oid  bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    next integer;
BEGIN
    -- A key change is a deletion of the old id and a creation of the new.
    IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
        UPDATE order_versions SET valid_to = now()
         WHERE object = TG_ARGV[0] AND object_id = OLD.id AND valid_to IS NULL;
    END IF;
    UPDATE order_versions SET valid_to = now()
     WHERE object = TG_ARGV[0] AND object_id = oid AND valid_to IS NULL;
    SELECT coalesce(max(version), 0) + 1 INTO next
      FROM order_versions WHERE object = TG_ARGV[0] AND object_id = oid;
    INSERT INTO order_versions (object, object_id, version, row, valid_from, changed_by, reason)
    VALUES (TG_ARGV[0], oid, next,
            CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END,
            now(),
            coalesce(nullif(current_setting('emtrack.actor', true), ''), 'db:' || session_user),
            nullif(current_setting('emtrack.reason', true), ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER zones_version AFTER INSERT OR UPDATE OR DELETE ON zones
    FOR EACH ROW EXECUTE FUNCTION emtrack_order_version('zone');
CREATE TRIGGER rules_version AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH ROW EXECUTE FUNCTION emtrack_order_version('rule');

INSERT INTO order_versions (object, object_id, version, row, valid_from, changed_by, reason)
SELECT 'zone', id, 1, to_jsonb(z), updated_at, 'migration 0006', 'existing before versioning' FROM zones z;
INSERT INTO order_versions (object, object_id, version, row, valid_from, changed_by, reason)
SELECT 'rule', id, 1, to_jsonb(r), '-infinity', 'migration 0006', 'existing before versioning' FROM rules r;
