-- emtrack schema, version 4: evidence that holds up (chain of custody, clock
-- faults, conflicting records, replay of quarantined messages).
--
-- - `messages`: one row per accepted message, keyed by the SHA-256 of its
--   bytes and its broker topic (an OwnTracks app's identity is its topic),
--   with its receipt time and format. Fixes and device events name the
--   message that carried them (`message_id`), so a stored fix can be shown to
--   come from given bytes. A redelivered or replayed copy adds no row. OwnTracks' tracker id and trigger are
--   kept here, with the message that carried them.
-- - `fixes.judged_at`: set when the fix's own clock disagreed with its arrival
--   (ahead of it, or behind the device's live stream): the time the engine
--   judged it at instead (arrival order). NULL means the fix time.
-- - `fix_conflicts`: every version of a (device, fix time) whose records
--   disagree, the stored one and each conflicting one, with its message.
--   `fixes` holds the version the track shows (see ARCHITECTURE.md).
-- - `device_findings`: what emtrack concluded about a device's records (clock
--   fault, conflicting record), stored with the batch that showed it, so the
--   alert service re-reads it after a restart like any device event.
-- - `rejected_messages.replayed_at`: when `emtrack rejected replay` published
--   the message again.

CREATE TABLE messages (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256      bytea       NOT NULL CHECK (length(sha256) = 32),
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    device_id   text        NOT NULL,
    format      text        NOT NULL CHECK (format IN ('binary', 'json', 'owntracks')),
    bytes       integer     NOT NULL,
    tid         text,
    trigger     text,
    UNIQUE (sha256, topic)
);
CREATE INDEX messages_device ON messages (device_id, received_at);

ALTER TABLE fixes ADD COLUMN message_id bigint;
ALTER TABLE fixes ADD COLUMN judged_at timestamptz;
ALTER TABLE device_events ADD COLUMN message_id bigint;

CREATE TABLE fix_conflicts (
    device_id   text        NOT NULL,
    fix_time    timestamptz NOT NULL,
    message_id  bigint      NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    accuracy_m  real        NOT NULL,
    speed_m_s   real,
    heading_deg real,
    battery_pct smallint,
    flags       smallint    NOT NULL,
    judged_at   timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- One row per distinct version: a message may carry two versions of one
    -- instant, and a redelivery adds none.
    UNIQUE NULLS NOT DISTINCT (device_id, fix_time, message_id, lat, lon, accuracy_m, speed_m_s,
                               heading_deg, battery_pct, flags)
);

CREATE TABLE device_findings (
    device_id   text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('clock_ahead', 'clock_behind', 'conflicting_fix')),
    at          timestamptz NOT NULL,
    message_id  bigint,
    detail      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, kind, at)
);
CREATE INDEX device_findings_recorded ON device_findings (recorded_at);

ALTER TABLE rejected_messages ADD COLUMN replayed_at timestamptz;
CREATE INDEX rejected_messages_reason ON rejected_messages (reason, received_at);

-- The device's newest judged time (differs from head_time while its clock is
-- suspect), so a restart resumes the same timeline.
ALTER TABLE device_state ADD COLUMN judged_head timestamptz;
