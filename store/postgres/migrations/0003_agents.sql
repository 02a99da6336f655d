-- Agents (SPEC §3): one row per agent instance, its schedules and its fibers'
-- ledger. A claim (owner) held by a node with no row in agentflow_nodes is
-- free; see store/agents.go.

CREATE TABLE agent_instances (
    class      TEXT NOT NULL,
    name       TEXT NOT NULL,
    state      BYTEA,
    owner      TEXT,
    fence      BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (class, name)
);

CREATE TABLE agent_schedules (
    id              TEXT PRIMARY KEY,
    class           TEXT NOT NULL,
    name            TEXT NOT NULL,
    method          TEXT NOT NULL,
    payload         BYTEA,
    kind            TEXT NOT NULL,
    cron            TEXT,
    interval_us     BIGINT,
    idempotency_key TEXT,
    next_run_at     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    owner           TEXT
);
CREATE UNIQUE INDEX agent_schedules_key ON agent_schedules (class, name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX agent_schedules_agent ON agent_schedules (class, name, next_run_at);
CREATE INDEX agent_schedules_due ON agent_schedules (next_run_at);

-- Fiber ids are unique per agent, like idempotency keys: the application
-- may choose them (StartFiber's ID).
CREATE TABLE agent_fibers (
    class           TEXT NOT NULL,
    name            TEXT NOT NULL,
    id              TEXT NOT NULL,
    fiber_name      TEXT NOT NULL,
    idempotency_key TEXT,
    metadata        BYTEA,
    status          TEXT NOT NULL,
    stash           BYTEA,
    error           TEXT,
    owner           TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (class, name, id)
);
CREATE UNIQUE INDEX agent_fibers_key ON agent_fibers (class, name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX agent_fibers_agent ON agent_fibers (class, name, created_at);
CREATE INDEX agent_fibers_active ON agent_fibers (class, name) WHERE status IN ('pending', 'running');
