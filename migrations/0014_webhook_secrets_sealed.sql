-- emtrack schema, version 14: webhook secrets sealed at rest.
--
-- `secret_sealed` holds the secret sealed (ChaCha20-Poly1305) under the key
-- in `alerts.webhook_key_file`, bound to the row's id; `secret` (plain text)
-- stays only for a service run without a key, and `emtrack run` with a key
-- seals what it finds there. A row has exactly one of the two.

ALTER TABLE webhooks ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhooks ADD COLUMN secret_sealed bytea;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_one_secret
    CHECK ((secret IS NULL) <> (secret_sealed IS NULL));
COMMENT ON COLUMN webhooks.secret IS 'HMAC key in plain text: only when the service has no alerts.webhook_key_file';
COMMENT ON COLUMN webhooks.secret_sealed IS 'HMAC key: 12-byte nonce || ChaCha20-Poly1305(key file, secret, aad = id as text)';
