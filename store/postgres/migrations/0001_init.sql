CREATE TABLE workflow_instances (
    id             TEXT PRIMARY KEY,
    workflow       TEXT NOT NULL,
    service        TEXT NOT NULL DEFAULT '',
    params         BYTEA,
    status         TEXT NOT NULL,
    prior_status   TEXT,
    error_name     TEXT,
    error_message  TEXT,
    output         BYTEA,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    wake_at        BIGINT,
    waiting_event  TEXT,
    paused_at      BIGINT,
    paused_wake_at BIGINT,
    owner          TEXT,
    fence          BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX workflow_instances_due ON workflow_instances (service, wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX workflow_instances_owner ON workflow_instances (owner) WHERE owner IS NOT NULL;
CREATE INDEX workflow_instances_finished ON workflow_instances (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workflow_steps (
    instance_id   TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    occurrence    INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    result        BYTEA,
    error_name    TEXT,
    error_message TEXT,
    wake_at       BIGINT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE workflow_events (
    seq         BIGSERIAL PRIMARY KEY,
    instance_id TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     BYTEA,
    created_at  BIGINT NOT NULL,
    consumed    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_events_instance ON workflow_events (instance_id, type, consumed, seq);

CREATE TABLE agentflow_nodes (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
