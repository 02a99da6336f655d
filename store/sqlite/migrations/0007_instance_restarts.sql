-- How many times each instance was restarted (store.Instance.Restarts):
-- Restart increments it, so it names the run a step belongs to, the same
-- on every replay of that run.
ALTER TABLE workflow_instances ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
