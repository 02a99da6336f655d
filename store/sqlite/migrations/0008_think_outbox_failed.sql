-- An outbox message given up on (store.OutboxMessage.Failed, FailedOutbox):
-- its payload can never reach the instance (too large for it, or the
-- instance is gone or finished). It is done like a delivered one
-- (delivered_at set, payload cleared); last_error says why.
ALTER TABLE think_outbox ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
