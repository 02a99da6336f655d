-- Agents ⇄ workflows (SPEC §3.5): the agent that started an instance, and
-- each agent's tracking rows for the instances it started; see
-- store/agentworkflows.go.

-- Both NULL when no agent started the instance.
ALTER TABLE workflow_instances ADD COLUMN origin_class TEXT;
ALTER TABLE workflow_instances ADD COLUMN origin_name TEXT;

-- metadata is JSON text, bound as TEXT: SQLite's JSON functions read a BLOB
-- as binary JSONB, not as JSON text.
CREATE TABLE agent_workflows (
    class         TEXT NOT NULL,
    name          TEXT NOT NULL,
    workflow_id   TEXT NOT NULL,
    binding       TEXT NOT NULL DEFAULT '',
    workflow      TEXT NOT NULL,
    service       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    metadata      TEXT,
    error_name    TEXT,
    error_message TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    PRIMARY KEY (class, name, workflow_id)
);
-- Pages run newest first per agent, by (created_at, workflow_id).
CREATE INDEX agent_workflows_page ON agent_workflows (class, name, created_at DESC, workflow_id DESC);
