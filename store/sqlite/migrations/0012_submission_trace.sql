-- The W3C traceparent of the span that created a Think submission (a
-- workflow's prompt step, an HTTP request, a chat frame), NULL when it was
-- created outside any trace. The turn that runs it is that span's child,
-- so a workflow's trace holds the agent's turn its prompt asked for.
ALTER TABLE think_submissions ADD COLUMN trace_parent TEXT;
