-- emtrack schema, version 13: per-order tuning.
--
-- `rules.tuning` replaces the evidence thresholds of the rule's kind:
-- {"enter_fixes", "enter_span_s", "exit_fixes", "grace_s", "strict"} (every
-- key; `strict` counts a fix straddling the boundary as violating). NULL:
-- the defaults. Versioned with the rule in `order_versions`.

ALTER TABLE rules ADD COLUMN tuning jsonb;
