-- emtrack schema, version 15: retention for every table that holds personal
-- data (store::retention).
--
-- audit_log stays append-only, but for retention: its trigger lets through
-- the DELETE of a row older than the cutoff the deleting transaction has
-- declared in `emtrack.audit_retention_before` (set_config(..., true):
-- that transaction only). Every UPDATE and TRUNCATE, and every DELETE of a
-- newer row, is refused as before.
CREATE OR REPLACE FUNCTION emtrack_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    before text := current_setting('emtrack.audit_retention_before', true);
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(before, '') <> '' AND OLD.at < before::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The columns retention selects by, where no index had them first.
CREATE INDEX IF NOT EXISTS rule_transitions_at ON rule_transitions (at);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE INDEX IF NOT EXISTS fix_conflicts_fix_time ON fix_conflicts (fix_time);
CREATE INDEX IF NOT EXISTS device_findings_at ON device_findings (at);
CREATE INDEX IF NOT EXISTS alert_deliveries_created ON alert_deliveries (created_at)
    WHERE state IN ('delivered', 'dead');
CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts (resolved_at) WHERE state = 'resolved';
CREATE INDEX IF NOT EXISTS order_versions_ended ON order_versions (valid_to) WHERE valid_to IS NOT NULL;
CREATE INDEX IF NOT EXISTS credentials_ended ON credentials ((coalesce(revoked_at, expires_at)));
