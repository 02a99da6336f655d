-- An agent's activation asks whether it has fibers to recover: pending or
-- running ones another node ran, or interrupted ones its hook left. The
-- partial index on the pending and running ones did not cover the
-- interrupted, so the question read every fiber the agent ever had (the
-- finished ones stay until deleted). This one covers all three.
DROP INDEX agent_fibers_active;
CREATE INDEX agent_fibers_unfinished ON agent_fibers (class, name) WHERE status IN ('pending', 'running', 'interrupted');
