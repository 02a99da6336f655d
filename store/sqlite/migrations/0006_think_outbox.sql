-- The Think outbox (store.OutboxMessage): a submission that names a waiting
-- workflow instance (notify_instance, notify_event) gets one outbox row in
-- the transaction that ends it; the runtime delivers it as an event until
-- delivery succeeds. A claim (owner) held by a node with no row in
-- agentflow_nodes is free. Times are Unix microseconds; payload is cleared
-- once delivered.
ALTER TABLE think_submissions ADD COLUMN notify_instance TEXT;
ALTER TABLE think_submissions ADD COLUMN notify_event TEXT;

CREATE TABLE think_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    class           TEXT NOT NULL,
    name            TEXT NOT NULL,
    submission_id   TEXT NOT NULL,
    instance_id     TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         BLOB,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER NOT NULL,
    owner           TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
-- The undelivered ones, by due time (ClaimOutbox, NextOutboxTimes).
CREATE INDEX think_outbox_due ON think_outbox (next_attempt_at, id) WHERE delivered_at IS NULL;
-- The delivered ones, by age (PruneOutbox).
CREATE INDEX think_outbox_delivered ON think_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
-- One submission's messages (GetOutbox).
CREATE INDEX think_outbox_submission ON think_outbox (class, name, submission_id, id);
