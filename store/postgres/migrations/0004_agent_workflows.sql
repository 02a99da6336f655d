-- Agents ⇄ workflows (SPEC §3.5): the agent that started an instance, and
-- each agent's tracking rows for the instances it started; see
-- store/agentworkflows.go.

-- Both NULL when no agent started the instance.
ALTER TABLE workflow_instances ADD COLUMN origin_class TEXT;
ALTER TABLE workflow_instances ADD COLUMN origin_name TEXT;

-- metadata is JSON text (TEXT rather than BYTEA, unlike the other JSON
-- columns): the metadata filter casts it to json, and TEXT is checked to be
-- valid UTF-8 when it is stored. workflow_id sorts bytewise (COLLATE "C"),
-- as on SQLite, so that pages break ties in created_at the same way on both.
CREATE TABLE agent_workflows (
    class         TEXT NOT NULL,
    name          TEXT NOT NULL,
    workflow_id   TEXT COLLATE "C" NOT NULL,
    binding       TEXT NOT NULL DEFAULT '',
    workflow      TEXT NOT NULL,
    service       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    metadata      TEXT,
    error_name    TEXT,
    error_message TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    completed_at  BIGINT,
    PRIMARY KEY (class, name, workflow_id)
);
-- Pages run newest first per agent, by (created_at, workflow_id).
CREATE INDEX agent_workflows_page ON agent_workflows (class, name, created_at DESC, workflow_id DESC);
