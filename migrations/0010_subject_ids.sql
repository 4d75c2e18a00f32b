-- emtrack schema, version 10: ids for subjects enrolled through the officer
-- API, above any id an import assigns (as `order_ids` for orders).

CREATE SEQUENCE subject_ids START 1000000000;
