-- emtrack schema, version 11: a tamper alert records the strap or case
-- closing again.
--
-- `alerts.condition_ended_at` is the device time at which the device
-- reported the alert's condition over (strap_closed, case_closed); the
-- alert stays open until an officer resolves it with a note. The change is
-- an `alert_events` row, `condition_ended`, whose note says what and when.

ALTER TABLE alerts ADD COLUMN condition_ended_at timestamptz;
ALTER TABLE alert_events DROP CONSTRAINT alert_events_change_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_change_check
    CHECK (change IN ('raised', 'repeated', 'acknowledged', 'escalated', 'condition_ended', 'resolved'));
