-- A runtime looks for the due schedules of its own classes every poll
-- interval (NextScheduleTimes, ClaimDueSchedules). By due time alone, the
-- look read the due schedules of every class, those of a service that is
-- down or of a class no longer registered too, and they stay due; by class
-- first it reads only its own.
DROP INDEX agent_schedules_due;
CREATE INDEX agent_schedules_due ON agent_schedules (class, next_run_at);
