-- emtrack schema, version 12: ids for webhooks added through the officer
-- API (admin), above any id written by hand.

CREATE SEQUENCE webhook_ids START 1000000000;
