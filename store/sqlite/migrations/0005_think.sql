-- Think agents (SPEC §4.1–4.2): each agent's ledger of submissions, the
-- durable FIFO queue of its turns, and its conversation; see store/think.go.

-- seq orders an agent's submissions (first in, first out); the store
-- assigns it as the agent's largest plus one inside the inserting
-- transaction. metadata is JSON text; messages is the JSON array of
-- model.Message that ApplySubmission copies into the conversation, one row
-- per element. applied is 0 or 1. A claim (owner) held by a node with no
-- row in agentflow_nodes is free, as for fibers.
CREATE TABLE think_submissions (
    class           TEXT NOT NULL,
    name            TEXT NOT NULL,
    id              TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    idempotency_key TEXT,
    metadata        TEXT,
    messages        BLOB,
    status          TEXT NOT NULL,
    error           TEXT,
    output          BLOB,
    applied         INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    PRIMARY KEY (class, name, id)
);
CREATE UNIQUE INDEX think_submissions_key ON think_submissions (class, name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX think_submissions_seq ON think_submissions (class, name, seq);
-- The unfinished ones: the next to start (StartSubmission), the running one,
-- and the agents that need a runner (PendingSubmissionAgents).
CREATE INDEX think_submissions_active ON think_submissions (class, name, seq) WHERE status IN ('pending', 'running');

-- One row per message, in seq order per agent; submission_id is the
-- submission whose turn added it.
CREATE TABLE think_conversation (
    class         TEXT NOT NULL,
    name          TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    submission_id TEXT NOT NULL,
    message       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (class, name, seq)
);
