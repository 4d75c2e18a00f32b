-- emtrack schema, version 7: ids for orders written through the officer API.
--
-- Zones and rules written by the API take their ids from one sequence that
-- starts at 10^9, above any id an import (`import-world`, an agency's
-- migration) assigns itself, so the two never collide.

CREATE SEQUENCE order_ids START WITH 1000000000;
