-- emtrack schema, version 5: the officer API's identities, credentials and
-- audit log.
--
-- - `users`: the people and integrations that use the API. A role, and for
--   officers and supervisors the `officers` row whose caseload they hold.
--   Passwords are argon2id PHC strings; an account without one logs in only
--   with an API token. A disabled account's credentials stop working at once.
-- - `credentials`: session tokens (from a login) and long-lived API tokens,
--   stored only as the SHA-256 of the token; revocable, with an expiry.
-- - `audit_log`: append-only. Every login (and refused login), every request
--   made with a credential (so every token use, every read of location data,
--   every change): who, with which credential, what, from where, the answer,
--   and the stated reason where one is required. A trigger refuses UPDATE,
--   DELETE and TRUNCATE for every role, the owner's included.
-- - `alert_events.user_id`: the authenticated user behind an action (the
--   older `officer_id` was a body field, kept for the rows written before);
--   `alert_events.disposition`: how an officer closed the alert.

CREATE TABLE users (
    id           bigserial PRIMARY KEY,
    username     text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9._@-]{1,64}$'),
    display_name text,
    role         text NOT NULL CHECK (role IN ('officer', 'supervisor', 'duty', 'admin', 'auditor')),
    -- The caseload an officer or supervisor holds (NULL for every other role).
    officer_id   bigint REFERENCES officers (id),
    -- argon2id, PHC string format; NULL: API tokens only.
    password_hash text CHECK (password_hash IS NULL OR password_hash LIKE '$argon2id$%'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    CHECK ((role IN ('officer', 'supervisor')) = (officer_id IS NOT NULL))
);

CREATE TABLE credentials (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id),
    kind         text   NOT NULL CHECK (kind IN ('session', 'api_token')),
    -- What an API token is for ("case-management sync").
    name         text,
    token_sha256 bytea  NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX credentials_user ON credentials (user_id);

CREATE TABLE audit_log (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL for a refused login by an unknown name.
    user_id       bigint,
    username      text,
    role          text,
    credential_id bigint,
    -- 'login', 'login_refused', 'logout', or the request: 'GET /v1/alerts/{id}'.
    action        text        NOT NULL,
    -- The request's path with its query, as sent.
    target        text,
    status        smallint,
    -- Set on every read of a subject's data (location, track, alerts).
    subject_id    bigint,
    reason        text,
    from_addr     text,
    detail        jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_user ON audit_log (user_id, at);
CREATE INDEX audit_log_subject ON audit_log (subject_id, at) WHERE subject_id IS NOT NULL;

CREATE FUNCTION emtrack_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION emtrack_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION emtrack_audit_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;

ALTER TABLE alert_events
    ADD COLUMN user_id bigint REFERENCES users (id),
    ADD COLUMN disposition text CHECK (disposition IN
        ('violation_confirmed', 'false_alarm', 'device_fault', 'approved_by_officer'));
