package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	cron "github.com/netresearch/go-cron"

	"agentflow/internal/ids"
	"agentflow/recur"
	"agentflow/store"
)

// When is when a schedule runs: After a delay, At a time, or on a Cron
// expression. Build it with After, At or Cron.
type When struct {
	kind  store.ScheduleKind
	delay time.Duration
	at    time.Time
	cron  string
}

// After runs a schedule once, d from now.
func After(d time.Duration) When { return When{kind: store.ScheduleDelayed, delay: d} }

// At runs a schedule once at t; a time in the past runs at once.
func At(t time.Time) When { return When{kind: store.ScheduleScheduled, at: t} }

// Cron runs a schedule on a standard five-field cron expression
// ("*/5 * * * *") or a descriptor ("@hourly"), in UTC unless the
// expression starts with CRON_TZ=<IANA zone> or ScheduleOptions.TimeZone
// is set.
func Cron(expr string) When { return When{kind: store.ScheduleCron, cron: expr} }

// ScheduleOptions are options of Schedule.
type ScheduleOptions struct {
	// Idempotent makes a delayed or timed schedule idempotent: scheduling
	// the same method with the same payload (and, for At, the same time)
	// again returns the pending schedule instead of adding one. Cron and
	// interval schedules are always idempotent on method, expression or
	// interval, and payload.
	Idempotent bool
	// TimeZone is the IANA zone a cron expression is read in.
	TimeZone string
}

// ScheduleInfo describes a schedule.
type ScheduleInfo struct {
	ID        string
	Method    string
	Payload   json.RawMessage
	Kind      store.ScheduleKind
	Cron      string        // cron schedules
	Interval  time.Duration // interval schedules
	NextRunAt time.Time
	CreatedAt time.Time
	// Created is false when an idempotent schedule already existed and
	// was returned instead.
	Created bool
}

// ScheduleError reports a schedule whose callback failed on every attempt.
// A one-shot schedule is dropped after it; a recurring one goes on.
type ScheduleError struct {
	Agent    store.AgentKey
	Schedule ScheduleInfo
	Attempts int
	Err      error
}

func (e *ScheduleError) Error() string {
	return fmt.Sprintf("schedule %s of agent %s: %s failed after %d attempt(s): %v",
		e.Schedule.ID, e.Agent, e.Schedule.Method, e.Attempts, e.Err)
}

func (e *ScheduleError) Unwrap() error { return e.Err }

func infoOf(s *store.Schedule) ScheduleInfo {
	return ScheduleInfo{ID: s.ID, Method: s.Method, Payload: s.Payload, Kind: s.Kind, Cron: s.Cron,
		Interval: s.Interval, NextRunAt: s.NextRunAt, CreatedAt: s.CreatedAt}
}

// ScheduleFromContext returns the schedule a method was called by, when it
// was; a recurring schedule's callback can cancel itself with its ID.
func ScheduleFromContext(ctx context.Context) (ScheduleInfo, bool) {
	s, ok := ctx.Value(scheduleKey).(ScheduleInfo)
	return s, ok
}

// Schedule calls method with payload when `when` says. The method and
// the payload's fit to its parameter are checked now: the method must be
// an exported method of the class taking at most one argument after its
// context, and the payload must decode into that argument (nil for none).
func (a *Agent[S]) Schedule(ctx context.Context, when When, method string, payload any, opts ...ScheduleOptions) (ScheduleInfo, error) {
	var o ScheduleOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	return a.in.schedule(ctx, when, 0, method, payload, o)
}

// ScheduleEvery calls method with payload every interval, starting one
// interval from now. A run that is due while the previous one is still
// running is skipped. It is idempotent on method, interval and payload.
func (a *Agent[S]) ScheduleEvery(ctx context.Context, interval time.Duration, method string, payload any) (ScheduleInfo, error) {
	return a.in.schedule(ctx, When{kind: store.ScheduleInterval}, interval, method, payload, ScheduleOptions{})
}

// GetSchedule returns one of the agent's schedules; it fails with an error
// matching store.ErrNotFound when there is none with that id.
func (a *Agent[S]) GetSchedule(ctx context.Context, id string) (ScheduleInfo, error) {
	s, err := a.in.rt.store.GetSchedule(ctx, a.in.key, id)
	if err != nil {
		return ScheduleInfo{}, err
	}
	return infoOf(s), nil
}

// ListSchedules returns the agent's schedules, by next run time.
func (a *Agent[S]) ListSchedules(ctx context.Context, f store.ScheduleFilter) ([]ScheduleInfo, error) {
	ss, err := a.in.rt.store.ListSchedules(ctx, a.in.key, f)
	if err != nil {
		return nil, err
	}
	out := make([]ScheduleInfo, 0, len(ss))
	for i := range ss {
		if !isNotice(ss[i].Method) { // the runtime's own, from workflows
			out = append(out, infoOf(&ss[i]))
		}
	}
	return out, nil
}

// CancelSchedule removes a schedule and reports whether it existed. A run
// already under way finishes; a recurring schedule does not run again.
func (a *Agent[S]) CancelSchedule(ctx context.Context, id string) (bool, error) {
	return a.in.rt.store.DeleteSchedule(ctx, a.in.key, id)
}

func (in *instance) schedule(ctx context.Context, when When, interval time.Duration, method string, payload any, o ScheduleOptions) (ScheduleInfo, error) {
	rt := in.rt
	raw, err := in.checkScheduled(method, payload)
	if err != nil {
		return ScheduleInfo{}, err
	}
	now := rt.clock.Now()
	s := &store.Schedule{ID: "sch_" + ids.Random(), AgentKey: in.key, Method: method, Payload: raw,
		Kind: when.kind, CreatedAt: now}
	idem := o.Idempotent
	switch when.kind {
	case store.ScheduleDelayed:
		if when.delay < 0 {
			return ScheduleInfo{}, fmt.Errorf("%w: delay %s is negative", ErrInvalidSchedule, when.delay)
		}
		s.NextRunAt = now.Add(when.delay)
	case store.ScheduleScheduled:
		if when.at.IsZero() {
			return ScheduleInfo{}, fmt.Errorf("%w: time is zero", ErrInvalidSchedule)
		}
		s.NextRunAt = when.at
	case store.ScheduleCron:
		expr := strings.TrimSpace(when.cron)
		if o.TimeZone != "" {
			if strings.HasPrefix(expr, "CRON_TZ=") || strings.HasPrefix(expr, "TZ=") {
				return ScheduleInfo{}, fmt.Errorf("%w: cron %q has a time zone and TimeZone is %q: give one", ErrInvalidSchedule, when.cron, o.TimeZone)
			}
			expr = "CRON_TZ=" + o.TimeZone + " " + expr
		}
		sched, err := parseCron(expr)
		if err != nil {
			return ScheduleInfo{}, err
		}
		s.Cron, s.NextRunAt, idem = expr, sched.Next(now), true
	case store.ScheduleInterval:
		if interval <= 0 {
			return ScheduleInfo{}, fmt.Errorf("%w: interval %s must be positive", ErrInvalidSchedule, interval)
		}
		s.Interval, s.NextRunAt, idem = interval, now.Add(interval), true
	default:
		return ScheduleInfo{}, fmt.Errorf("%w: no time given (use agent.After, agent.At or agent.Cron)", ErrInvalidSchedule)
	}
	if idem {
		s.IdempotencyKey = idempotencyKey(s)
	}
	existing, created, err := rt.store.CreateSchedule(ctx, s)
	if err != nil {
		return ScheduleInfo{}, fmt.Errorf("schedule %s for agent %s: %w", method, in.key, err)
	}
	if !created {
		return infoOf(existing), nil
	}
	rt.sched.Add(s.NextRunAt)
	info := infoOf(s)
	info.Created = true
	return info, nil
}

// checkScheduled checks that method can be called with payload and
// returns the payload's JSON.
func (in *instance) checkScheduled(method string, payload any) ([]byte, error) {
	m := in.cls.methods[method]
	if m == nil {
		return nil, &MethodError{Class: in.cls.name, Method: method, Err: ErrMethodNotFound}
	}
	if m.stream || len(m.params) > 1 {
		return nil, m.badArgs(in.cls.name, "a scheduled method takes at most one argument (the payload) and no stream")
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, m.badArgs(in.cls.name, "payload: %v", err)
	}
	if len(m.params) == 0 {
		if payload != nil {
			return nil, m.badArgs(in.cls.name, "the method takes no payload, got %s", truncate(raw))
		}
		return nil, nil
	}
	if _, err := m.decodeArgs(in.cls.name, []json.RawMessage{raw}); err != nil {
		return nil, err
	}
	return raw, nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

func idempotencyKey(s *store.Schedule) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00", s.Kind, s.Method, s.Cron, s.Interval)
	if s.Kind == store.ScheduleScheduled {
		fmt.Fprintf(h, "%d\x00", s.NextRunAt.UnixMicro())
	}
	h.Write(s.Payload)
	return string(s.Kind) + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

func parseCron(expr string) (cron.Schedule, error) {
	sched, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: cron %q: %v", ErrInvalidSchedule, expr, err)
	}
	return sched, nil
}

// claimBatch caps how many schedules one claim takes.
const claimBatch = 256

// claimSchedules claims due schedules and runs each in the background.
func (rt *Runtime) claimSchedules(ctx context.Context) {
	defer rt.probe.Begin()()
	for ctx.Err() == nil {
		got, err := rt.store.ClaimDueSchedules(ctx, rt.node, rt.classNames(), rt.clock.Now(), claimBatch)
		if err != nil {
			if ctx.Err() == nil {
				rt.log.Warn("claiming due schedules failed", "err", err)
			}
			return
		}
		for _, s := range got {
			rt.goWork(func() { rt.runSchedule(ctx, s) })
		}
		if len(got) < claimBatch {
			return
		}
	}
}

// runSchedule runs a claimed schedule: its callback with retries in place,
// then the schedule's removal (one-shot) or its next run time (recurring).
func (rt *Runtime) runSchedule(ctx context.Context, s *store.Schedule) {
	info := infoOf(s)
	if rt.scheduleHook(ctx, s, false) != nil {
		return // crashed here by a test harness
	}
	sctx, span := rt.tel.StartSchedule(ctx, s.Class, s.Name, s.Method, s.ID, rt.clock.Now().Sub(s.NextRunAt))
	attempts, acked, err := rt.fire(sctx, s)
	rt.tel.EndSchedule(sctx, span, s.Class, attempts, err)
	if ctx.Err() != nil {
		return // stopping: the claim is released when this node goes
	}
	if rt.scheduleHook(ctx, s, true) != nil {
		return
	}
	var agentErr *ScheduleError
	if err != nil && !errors.Is(err, ErrAgentElsewhere) {
		agentErr = &ScheduleError{Agent: s.AgentKey, Schedule: info, Attempts: attempts, Err: err}
	}
	now := rt.clock.Now()
	switch {
	case errors.Is(err, ErrAgentElsewhere):
		// The agent went live on another node after the claim: let that
		// node run it.
		err = rt.store.RescheduleSchedule(ctx, s.ID, rt.node, now.Add(rt.opts.PollInterval))
	case s.Kind.Recurring():
		next := rt.nextRun(s, now)
		if err = rt.store.RescheduleSchedule(ctx, s.ID, rt.node, next); err == nil {
			rt.sched.Add(next)
		}
	case acked:
		// The delivery deleted the notice in its own write.
	default:
		_, err = rt.store.DeleteSchedule(ctx, s.AgentKey, s.ID)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		rt.log.Warn("updating schedule after its run failed", "schedule", s.ID, "agent", s.AgentKey, "err", err)
	}
	if agentErr != nil {
		rt.reportTo(ctx, s.AgentKey, agentErr)
	}
}

// fire calls the schedule's method, retrying in place, and returns how many
// attempts it made, and whether a notice's delivery deleted the notice.
func (rt *Runtime) fire(ctx context.Context, s *store.Schedule) (int, bool, error) {
	if isNotice(s.Method) {
		var acked bool
		n, err := rt.retry(ctx, func() error { return rt.deliver(ctx, s, &acked) })
		return n, acked, err
	}
	c, err := rt.class(s.Class)
	if err != nil {
		return 0, false, err
	}
	m := c.methods[s.Method]
	if m == nil {
		return 0, false, &MethodError{Class: c.name, Method: s.Method, Err: ErrMethodNotFound}
	}
	var args []json.RawMessage
	if len(m.params) == 1 {
		args = []json.RawMessage{s.Payload}
		if s.Payload == nil {
			args[0] = json.RawMessage("null")
		}
	}
	vals, err := m.decodeArgs(c.name, args)
	if err != nil {
		return 0, false, err
	}
	ctx = context.WithValue(ctx, scheduleKey, infoOf(s))
	n, err := rt.retry(ctx, func() error {
		_, err := rt.invoke(ctx, c, s.Name, m, vals, CallOptions{})
		return err
	})
	return n, false, err
}

// retry calls fn until it succeeds, with the runtime's schedule retry
// policy, and returns how many attempts it made. A malformed notice, like
// an invalid agent name, fails the same way every time: it is not retried.
func (rt *Runtime) retry(ctx context.Context, fn func() error) (int, error) {
	r := rt.opts.ScheduleRetry
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt >= r.Attempts || errors.Is(err, ErrAgentElsewhere) || errors.Is(err, ErrMalformedNotice) || errors.Is(err, ErrInvalidName) || ctx.Err() != nil {
			return attempt, err
		}
		if err := rt.probe.Sleep(ctx, rt.clock, backoff(r, attempt)); err != nil {
			return attempt, err
		}
	}
}

// backoff is the jittered delay after a failed attempt: exponential from
// MinDelay, capped at MaxDelay, drawn uniformly from its upper half.
func backoff(r Retry, attempt int) time.Duration {
	d := r.MinDelay << min(attempt-1, 20)
	if d > r.MaxDelay || d <= 0 {
		d = r.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

// nextRun is a recurring schedule's next run after now. Runs missed while
// the schedule ran or the process was down are not made up.
func (rt *Runtime) nextRun(s *store.Schedule, now time.Time) time.Time {
	if s.Kind == store.ScheduleInterval {
		next := s.NextRunAt.Add(s.Interval)
		if !next.After(now) {
			skipped := now.Sub(next)/s.Interval + 1
			next = next.Add(skipped * s.Interval)
		}
		return next
	}
	if s.Kind == store.ScheduleRecur {
		spec, err := recur.Parse(s.Cron)
		if err != nil { // it parsed when it was made
			rt.log.Error("stored schedule no longer parses", "schedule", s.ID, "err", err)
			return now.Add(24 * time.Hour)
		}
		return spec.Next(now)
	}
	sched, err := parseCron(s.Cron)
	if err != nil { // it parsed when it was made
		rt.log.Error("stored cron expression no longer parses", "schedule", s.ID, "err", err)
		return now.Add(24 * time.Hour)
	}
	return sched.Next(now)
}

// reportTo hands err to the error hook of the agent key, activating it.
func (rt *Runtime) reportTo(ctx context.Context, key store.AgentKey, err error) {
	c, cerr := rt.class(key.Class)
	if cerr != nil {
		rt.log.Warn("agent error", "agent", key, "err", err)
		return
	}
	in, aerr := rt.acquire(ctx, c, key.Name)
	if aerr != nil {
		rt.log.Warn("agent error", "agent", key, "err", err)
		return
	}
	defer rt.release(in)
	_ = in.run(ctx, func() error { in.reportError(ctx, err); return nil })
}
