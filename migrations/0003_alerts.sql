-- emtrack schema, version 3: alerts, their log, and their deliveries.
--
-- - `alerts`: one row per alert. Its key (subject, type, scope, episode) is
--   unique: a redelivered or replayed transition can never make a second
--   alert. Ids are assigned by the service (one emtrack per database) and
--   are stable: they are the idempotency key of every delivery.
-- - `alert_events`: append-only; every change (raised, repeated,
--   acknowledged, escalated, resolved) with who, when and the note.
-- - `alert_deliveries`: the outbox. Written in the same transaction as the
--   change it announces, so a crash loses no notification; a delivery is
--   `pending` until the broker or the webhook accepts it, then `delivered`,
--   or `dead` after the webhook's attempts run out (the dead-letter record).
-- - `alert_progress`: how far the alert service has read the stored
--   transitions and device events; a restart re-reads from a little before.
-- - `webhooks`: the agency's endpoints.

CREATE TABLE alerts (
    id             bigint      PRIMARY KEY,
    subject_id     bigint      NOT NULL,
    kind           text        NOT NULL,
    -- Zone id for zone rules, rule id for proximity, 0 for device alerts.
    scope          bigint      NOT NULL,
    episode_at     timestamptz NOT NULL,
    severity       text        NOT NULL CHECK (severity IN ('critical', 'serious', 'info')),
    state          text        NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    -- When it happened (fix or event time) and when emtrack raised it.
    event_at       timestamptz NOT NULL,
    raised_at      timestamptz NOT NULL,
    historical     boolean     NOT NULL,
    repeats        integer     NOT NULL DEFAULT 0,
    -- 0 officer, 1 supervisor, 2 duty desk; the next escalation, if any.
    level          smallint    NOT NULL DEFAULT 0,
    escalate_at    timestamptz,
    device_id      text,
    -- The version of its newest alert_events row.
    version        integer     NOT NULL,
    resolved_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject_id, kind, scope, episode_at)
);
CREATE INDEX alerts_unresolved ON alerts (state) WHERE state <> 'resolved';
CREATE INDEX alerts_subject ON alerts (subject_id, raised_at);

CREATE TABLE alert_events (
    id         bigserial   PRIMARY KEY,
    alert_id   bigint      NOT NULL REFERENCES alerts (id),
    -- 1 for 'raised', then +1 per change: (alert, version) names a change.
    version    integer     NOT NULL,
    at         timestamptz NOT NULL,
    -- NULL: emtrack itself.
    officer_id bigint,
    change     text        NOT NULL CHECK (change IN ('raised', 'repeated', 'acknowledged', 'escalated', 'resolved')),
    level      smallint,
    automatic  boolean,
    note       text,
    UNIQUE (alert_id, version)
);

CREATE TABLE webhooks (
    id           bigint  PRIMARY KEY,
    url          text    NOT NULL CHECK (url ~ '^https?://'),
    -- HMAC-SHA256 key of X-Emtrack-Signature.
    secret       text    NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0)
);

CREATE TABLE alert_deliveries (
    id              bigserial   PRIMARY KEY,
    alert_id        bigint      NOT NULL REFERENCES alerts (id),
    -- The alert's change this announces (alert_events.version).
    version         integer     NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('mqtt', 'webhook')),
    -- MQTT topic, or the webhook id.
    target          text        NOT NULL,
    payload         text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the sweeper may (re)send it: a lease while a sender holds it.
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    -- The fix or event time, for the latency of live alerts (NULL: historical).
    live_event_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (alert_id, version, channel, target)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE alert_progress (
    id           integer     PRIMARY KEY CHECK (id = 1),
    processed_to timestamptz NOT NULL
);
INSERT INTO alert_progress VALUES (1, now());

-- A restart re-reads what was stored since alert_progress.processed_to.
CREATE INDEX rule_transitions_recorded ON rule_transitions (recorded_at);
CREATE INDEX device_events_received ON device_events (received_at);
