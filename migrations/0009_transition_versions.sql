-- emtrack schema, version 9: which version of its zone a transition was
-- judged under.
--
-- `rule_transitions.zone_version` is the version (`order_versions.version`
-- of the zone, as the officer API's orders show it) in force at the
-- confirming fix's own time: the engine judges every fix, late ones
-- included, against that version. NULL for a
-- proximity rule, an end no fix was judged for (a closed late run, a
-- removed rule) and transitions stored before this version. Not a foreign
-- key: retention may drop old versions before the evidence that names them
-- (the row as judged stays readable in an evidence export taken before).

ALTER TABLE rule_transitions ADD COLUMN zone_version bigint;
