-- The service lease: which `emtrack run` is the active node of this
-- database (store/src/lease.rs). One row, named 'run'. The active node
-- renews it; a standby takes it once it has expired (by this server's
-- clock) or once no session named after its holder is left (the holder's
-- process died: the server closed its connections).
CREATE TABLE service_lease (
    name text PRIMARY KEY,
    holder text NOT NULL,
    epoch bigint NOT NULL,
    taken_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The fence, called first in each write transaction of ingest and the alert
-- service: locks the lease row FOR SHARE (a takeover waits until the
-- transaction ends) and refuses, with SQLSTATE EMF01, unless the caller
-- still holds the lease it took. A node that lost the lease cannot write,
-- even before it notices. The transaction may then sit idle for at most
-- 5 s: a frozen node's lock is released by the server, so that a standby
-- can take over (other transactions keep the server's setting).
CREATE FUNCTION emtrack_fence(p_holder text, p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
    PERFORM 1 FROM service_lease
     WHERE name = 'run' AND holder = p_holder AND epoch = p_epoch
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: % no longer holds the service lease (epoch %)', p_holder, p_epoch
            USING ERRCODE = 'EMF01';
    END IF;
END
$$;
