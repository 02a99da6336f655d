-- Operators' queries (store.InspectStore): step timing, attempt history,
-- when events were consumed, and the indexes that page the instance list.
-- Times are Unix microseconds; rows written before this migration have
-- NULL times, which read as zero.

-- started_at: when the step started (a Do's first attempt), kept from the
-- step's first write; attempt_started_at: when the attempt the row's last
-- write checkpointed started. A Do that succeeds is timed by its row alone
-- (attempt_started_at to updated_at), so it costs no attempts row.
ALTER TABLE workflow_steps ADD COLUMN started_at BIGINT;
ALTER TABLE workflow_steps ADD COLUMN attempt_started_at BIGINT;

-- One row per Do attempt that ended with an error, written by the same
-- write as the step checkpoint that records it.
CREATE TABLE workflow_step_attempts (
    instance_id   TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    started_at    BIGINT,
    ended_at      BIGINT NOT NULL,
    error_name    TEXT NOT NULL,
    error_message TEXT,
    PRIMARY KEY (instance_id, seq, attempt)
);

ALTER TABLE workflow_events ADD COLUMN consumed_at BIGINT;

-- The instance list runs newest first by (created_at, id), in keyset pages:
-- overall, per status and per workflow class. The instance row's updates
-- change wake_at and owner, which are indexed already, so they are not HOT
-- updates and each also adds an entry to these three indexes.
CREATE INDEX workflow_instances_created ON workflow_instances (created_at, id);
CREATE INDEX workflow_instances_status_created ON workflow_instances (status, created_at, id);
CREATE INDEX workflow_instances_workflow_created ON workflow_instances (workflow, created_at, id);
