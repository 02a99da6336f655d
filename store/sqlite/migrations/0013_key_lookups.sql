-- Lookups by primary key must not be planned through a secondary index
-- that starts with the same agent (class, name). SQLite's planner does not
-- make that mistake; the indexes are the same on both stores so that the
-- statements are. On a table without
-- statistics (autovacuum off, or before its first analyze) PostgreSQL
-- estimates one row for both indexes and may keep, in a connection's
-- generic plan, the secondary one with the key's last column as a filter:
-- every lookup then reads all of the agent's rows (its tracking rows,
-- schedules, fibers or submissions), and the cost grows with the agent's
-- history. Each such index is made partial on a condition every row meets,
-- which the statements that page through it state and the key lookups do
-- not, so that only the primary key can serve a lookup.
DROP INDEX agent_schedules_agent;
CREATE INDEX agent_schedules_agent ON agent_schedules (class, name, next_run_at) WHERE next_run_at IS NOT NULL;
DROP INDEX agent_fibers_agent;
CREATE INDEX agent_fibers_agent ON agent_fibers (class, name, created_at) WHERE created_at IS NOT NULL;
DROP INDEX agent_workflows_page;
CREATE INDEX agent_workflows_page ON agent_workflows (class, name, created_at DESC, workflow_id DESC) WHERE created_at IS NOT NULL;
DROP INDEX think_submissions_seq;
CREATE UNIQUE INDEX think_submissions_seq ON think_submissions (class, name, seq) WHERE seq IS NOT NULL;
