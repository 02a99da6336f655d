CREATE TABLE workflow_instances (
    id             TEXT PRIMARY KEY,
    workflow       TEXT NOT NULL,
    service        TEXT NOT NULL DEFAULT '',
    params         BLOB,
    status         TEXT NOT NULL,
    prior_status   TEXT,
    error_name     TEXT,
    error_message  TEXT,
    output         BLOB,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    wake_at        INTEGER,
    waiting_event  TEXT,
    paused_at      INTEGER,
    paused_wake_at INTEGER,
    owner          TEXT,
    fence          INTEGER NOT NULL DEFAULT 0
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
    result        BLOB,
    error_name    TEXT,
    error_message TEXT,
    wake_at       INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

CREATE TABLE workflow_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    type        TEXT NOT NULL,
    payload     BLOB,
    created_at  INTEGER NOT NULL,
    consumed    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_events_instance ON workflow_events (instance_id, type, consumed, seq);

CREATE TABLE agentflow_nodes (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
