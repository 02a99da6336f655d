-- The W3C traceparent of the span that created an instance (Engine.Create,
-- an agent's RunWorkflow), NULL when it was created outside any trace. Each
-- execution segment's span is a child of it, so one trace holds a run's
-- segments across suspensions, crashes and processes.
ALTER TABLE workflow_instances ADD COLUMN trace_parent TEXT;
