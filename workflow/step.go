package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime/debug"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/attribute"

	"agentflow/internal/telemetry"
	"agentflow/store"
)

// Attempt describes one run of a step function.
type Attempt struct {
	// Number is 1 for the first attempt, 2 for the first retry, and so on.
	// An attempt cut off by a crash is run again with the same number.
	Number int
	// IdempotencyKey is "<instance>:<step>:<occurrence>": the same for every
	// attempt of this step of this instance, across crashes and nodes, so a
	// side effect keyed by it happens once.
	IdempotencyKey string
}

// Backoff is how the delay between attempts grows.
type Backoff string

// Backoff kinds: with base delay d, attempt n waits d (constant), n·d
// (linear) or 2ⁿ⁻¹·d (exponential) before the next attempt.
const (
	BackoffConstant    Backoff = "constant"
	BackoffLinear      Backoff = "linear"
	BackoffExponential Backoff = "exponential"
)

// Retries is a step's retry policy.
type Retries struct {
	Limit   int           // retries after the first attempt
	Delay   time.Duration // base delay
	Backoff Backoff       // default exponential
}

// DefaultRetries is used when a StepConfig sets none: 5 retries (6
// attempts), 1 s base delay, exponential.
var DefaultRetries = Retries{Limit: 5, Delay: time.Second, Backoff: BackoffExponential}

// DefaultStepTimeout bounds each attempt when a StepConfig sets no Timeout.
const DefaultStepTimeout = 10 * time.Minute

// StepConfig configures Do. The zero value uses the defaults.
type StepConfig struct {
	Retries *Retries      // nil: DefaultRetries; &Retries{} retries never
	Timeout time.Duration // per attempt; 0: DefaultStepTimeout
}

func (c StepConfig) validate(step string) error {
	if c.Timeout < 0 {
		return invalid(ErrInvalidStepConfig, "timeout of step", step, "must not be negative, got %s", c.Timeout)
	}
	if r := c.Retries; r != nil {
		switch {
		case r.Limit < 0:
			return invalid(ErrInvalidStepConfig, "retry limit of step", step, "must not be negative, got %d", r.Limit)
		case r.Delay < 0:
			return invalid(ErrInvalidStepConfig, "retry delay of step", step, "must not be negative, got %s", r.Delay)
		case r.Backoff != "" && r.Backoff != BackoffConstant && r.Backoff != BackoffLinear && r.Backoff != BackoffExponential:
			return invalid(ErrInvalidStepConfig, "backoff of step", step, "must be constant, linear or exponential, got %q", r.Backoff)
		}
	}
	return nil
}

func (r Retries) delay(attempt int) time.Duration {
	d := r.Delay
	switch r.Backoff {
	case BackoffConstant:
	case BackoffLinear:
		d *= time.Duration(attempt)
	default:
		for i := 1; i < attempt && d < 365*24*time.Hour; i++ {
			d *= 2
		}
	}
	return d
}

// StepFunc is the body of a step.
type StepFunc[T any] func(ctx context.Context, a Attempt) (T, error)

// Do runs fn as the step name with the default configuration; see DoWith.
func Do[T any](step *Step, name string, fn StepFunc[T]) (T, error) {
	return DoWith(step, name, StepConfig{}, fn)
}

// DoWith runs fn at most once to success for this (name, occurrence) of the
// instance and checkpoints its result as JSON; on replay it returns the
// stored result without calling fn. A failing attempt is retried after a
// delay during which the instance is suspended. When the step fails for
// good, DoWith returns a *StepError, the same on every replay.
//
// The value returned is always the one decoded from the checkpoint, so the
// first run and every replay see the same T.
func DoWith[T any](step *Step, name string, cfg StepConfig, fn StepFunc[T]) (T, error) {
	var zero T
	raw, err := step.do(name, cfg, func(ctx context.Context, a Attempt) ([]byte, error) {
		v, err := fn(ctx, a)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, NonRetryable(fmt.Errorf("result of type %T %w: %v", v, ErrNotJSON, err))
		}
		return b, nil
	})
	if err != nil {
		return zero, err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, fmt.Errorf("step %q: decode stored result into %T: %w", name, v, err)
	}
	return v, nil
}

// StepRef names a step for Hooks.
type StepRef struct {
	InstanceID string
	Workflow   string
	Name       string
	Occurrence int
	Kind       StepKind
	Attempt    int // for Do
}

// Hooks observe step boundaries. A hook that returns an error abandons the
// execution at that point exactly as a crash would: nothing more is written
// and the instance stays claimed by this node until the node is removed
// (Engine.Stop, or its lease running out), after which it runs again from
// its checkpoints. Package workflowtest uses them to stop a workflow before
// or after a named step.
type Hooks struct {
	// BeforeStep is called before a step executes: before each attempt of a
	// Do, and each time a sleep or wait is evaluated without a final checkpoint.
	BeforeStep func(ctx context.Context, s StepRef) error
	// AfterStep is called once a step's final checkpoint is durable, before
	// the step returns to Run.
	AfterStep func(ctx context.Context, s StepRef) error
}

// Step is the handle through which Run performs durable steps.
type Step struct {
	e       *Engine
	ctx     context.Context
	inst    *store.Instance
	lease   store.Lease
	history []store.Step
	pos     int
	counts  map[string]int
	unwound *unwind
	// delivered: the write that claimed the instance for this execution
	// also completed the wait its last checkpoint is, with the event it
	// waited for (a Think prompt's answer); the wait runs its hooks on
	// replay, as if it had taken the event itself.
	delivered bool
}

// Workflow returns the class name of the instance the step belongs to.
func (s *Step) Workflow() string { return s.inst.Workflow }

// Restarts returns how many times the instance was restarted before this
// run: 0 in its first run. It is the same on every replay of a run, across
// crashes and nodes, and changes only with Instance.Restart, so a helper
// that keys a side effect per run includes it (Attempt.IdempotencyKey does
// not: it is the same in every run).
func (s *Step) Restarts() int { return s.inst.Restarts }

// Used returns how many steps named name this run has reached so far, so
// that a helper built on steps can refuse a name used twice (a step name
// may repeat; each use is an occurrence of its own).
func (s *Step) Used(name string) int { return s.counts[name] }

// Origin returns the agent that started the instance (through the agent
// runtime's RunWorkflow), or the zero key when none did.
func (s *Step) Origin() store.AgentKey { return s.inst.Origin }

// Context returns the context of the execution: cancelled when the engine
// stops. Step functions get their own, which also ends with the attempt.
func (s *Step) Context() context.Context { return s.ctx }

type unwindKind int

const (
	unwindSuspend unwindKind = iota // the instance is suspended; its rows say when it resumes
	unwindAbandon                   // stop without writing, as a crash would
	unwindFail                      // the instance fails with err, whatever Run does
)

// unwind is panicked to leave Run when the instance suspends or stops.
type unwind struct {
	kind unwindKind
	err  error
}

func (s *Step) stop(u unwind) {
	s.unwound = &u
	panic(u)
}

// check re-raises a suspension that workflow code recovered and ignored.
func (s *Step) check() {
	if s.unwound != nil {
		panic(*s.unwound)
	}
}

// InstanceID returns the id of the instance being run.
func (s *Step) InstanceID() string { return s.inst.ID }

func (s *Step) ref(name string, occ int, kind store.StepKind, attempt int) StepRef {
	return StepRef{InstanceID: s.inst.ID, Workflow: s.inst.Workflow, Name: name, Occurrence: occ, Kind: StepKind(kind), Attempt: attempt}
}

func describe(kind store.StepKind, name string) string {
	switch kind {
	case store.KindDo:
		return fmt.Sprintf("Do(%q)", name)
	case store.KindSleep:
		return fmt.Sprintf("Sleep(%q)", name)
	case store.KindWait:
		return fmt.Sprintf("WaitForEvent(%q)", name)
	}
	return fmt.Sprintf("%s(%q)", kind, name)
}

// next assigns the step its position and occurrence and returns its
// checkpoint, if any, failing the instance on non-determinism.
func (s *Step) next(name string, kind store.StepKind) (pos, occ int, h *store.Step) {
	s.check()
	lim := s.e.limits
	if name == "" || utf8.RuneCountInString(name) > lim.MaxStepName {
		s.stop(unwind{kind: unwindFail, err: invalid(ErrInvalidName, "step name", name, "must be 1 to %d characters", lim.MaxStepName)})
	}
	pos = s.pos
	if pos >= lim.MaxSteps {
		s.stop(unwind{kind: unwindFail, err: fmt.Errorf("step %q would be step %d: %w: the limit is %d steps per instance", name, pos+1, ErrTooManySteps, lim.MaxSteps)})
	}
	s.pos++
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	occ = s.counts[name]
	s.counts[name]++
	if pos < len(s.history) {
		h = &s.history[pos]
		if h.Name != name || h.Kind != kind {
			s.stop(unwind{kind: unwindFail, err: &NonDeterminismError{Position: pos, Want: describe(kind, name), Stored: describe(h.Kind, h.Name)}})
		}
	}
	return pos, occ, h
}

// before runs the BeforeStep hook and abandons when the engine is stopping.
func (s *Step) before(ref StepRef) {
	if s.e.stopping.Load() {
		s.stop(unwind{kind: unwindAbandon})
	}
	if now := s.e.clock.Now(); !s.e.leaseValid(now) {
		// Other nodes may have taken this instance over already: starting
		// the step could run it twice. Hand it back instead; the write is
		// fenced, so it fails harmlessly if it was taken.
		s.suspend(store.Suspension{Status: store.StatusRunning, WakeAt: now})
	}
	if f := s.e.hooks.BeforeStep; f != nil {
		if err := f(s.ctx, ref); err != nil {
			s.stop(unwind{kind: unwindAbandon, err: err})
		}
	}
}

func (s *Step) after(ref StepRef) {
	if f := s.e.hooks.AfterStep; f != nil {
		if err := f(s.ctx, ref); err != nil {
			s.stop(unwind{kind: unwindAbandon, err: err})
		}
	}
}

// save stores a final checkpoint, runs AfterStep, and pauses the instance
// here if a pause was requested while the step ran.
func (s *Step) save(st store.Step, ref StepRef) {
	var status store.Status
	s.write(func(ctx context.Context) (err error) {
		status, err = s.e.store.SaveStep(ctx, s.lease, st, s.e.clock.Now())
		return err
	})
	s.after(ref)
	if status == store.StatusWaitingForPause {
		s.suspend(store.Suspension{Status: store.StatusPaused, WakeAt: s.e.clock.Now()})
	}
}

// suspend stores the suspension, hands the wake-up time to the scheduler
// and leaves Run.
func (s *Step) suspend(sus store.Suspension) {
	if s.e.tel.Tracing() {
		s.e.tel.Event(s.ctx, "suspend", attribute.String("agentflow.status", string(sus.Status)),
			attribute.String("agentflow.wake_at", sus.WakeAt.Format(time.RFC3339Nano)))
	}
	s.write(func(ctx context.Context) error {
		return s.e.store.Suspend(ctx, s.lease, sus, s.e.clock.Now())
	})
	if sus.Status != store.StatusPaused {
		s.e.sched.add(sus.WakeAt)
	}
	s.stop(unwind{kind: unwindSuspend})
}

// notBefore returns at t. An instance claimed ahead of its wake-up time
// (Options.ClaimAhead) waits for it in memory; one woken earlier than that,
// e.g. after a crash, suspends again with sus.
func (s *Step) notBefore(t time.Time, sus store.Suspension) {
	d := t.Sub(s.e.clock.Now())
	if d <= 0 {
		return
	}
	if d > s.e.opts.ClaimAhead {
		s.suspend(sus)
	}
	timer := s.e.clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.Chan():
	case <-s.e.quit: // Stop releases the instance; whoever claims it next waits again
		s.stop(unwind{kind: unwindAbandon})
	case <-s.ctx.Done():
		s.stop(unwind{kind: unwindAbandon, err: s.ctx.Err()})
	}
}

// write runs a fenced store write, retrying while the store fails, and
// abandons the execution once the lease is lost or the engine stops.
func (s *Step) write(fn func(ctx context.Context) error) {
	if err := s.e.retryWrite(s.ctx, s.inst.ID, fn); err != nil {
		s.stop(unwind{kind: unwindAbandon, err: err})
	}
}

func (s *Step) do(name string, cfg StepConfig, fn func(ctx context.Context, a Attempt) ([]byte, error)) ([]byte, error) {
	pos, occ, h := s.next(name, store.KindDo)
	if err := cfg.validate(name); err != nil {
		s.stop(unwind{kind: unwindFail, err: err})
	}
	attempt := 1
	if h != nil {
		switch h.State {
		case store.StepDone:
			return h.Result, nil
		case store.StepFailed:
			return nil, &StepError{Step: name, Attempts: h.Attempt, Name: h.ErrorName, Message: h.ErrorMessage}
		}
		attempt = h.Attempt
		// Claimed ahead of the retry, or woken early, e.g. after a crash.
		s.notBefore(h.WakeAt, store.Suspension{Status: store.StatusRunning, WakeAt: h.WakeAt})
		if !h.WakeAt.IsZero() {
			s.e.tel.TimerFired(s.ctx, "retry", s.e.clock.Now().Sub(h.WakeAt))
		}
	}
	ref := s.ref(name, occ, store.KindDo, attempt)
	s.before(ref)
	key := fmt.Sprintf("%s:%s:%d", s.inst.ID, name, occ)
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultStepTimeout
	}
	started := s.e.clock.Now()
	tel := s.e.tel
	actx, span := tel.StartStep(s.ctx, telemetry.StepAttempt{Workflow: s.inst.Workflow, InstanceID: s.inst.ID,
		Step: name, Occurrence: occ, Attempt: attempt})
	if span != nil {
		// An attempt cut off by the engine stopping unwinds past EndStep.
		defer telemetry.EndSegment(span, "abandoned", nil, "") // a no-op on an ended span
	}
	result, err := s.runAttempt(actx, name, timeout, Attempt{Number: attempt, IdempotencyKey: key}, fn)
	if err == nil && len(result) > s.e.limits.MaxResultBytes {
		err = NonRetryable(fmt.Errorf("result is %d bytes: %w: the limit is %d bytes", len(result), ErrTooLarge, s.e.limits.MaxResultBytes))
	}
	st := store.Step{Seq: pos, Name: name, Occurrence: occ, Kind: store.KindDo, Attempt: attempt, StartedAt: started}
	if err == nil {
		tel.EndStep(actx, span, s.inst.Workflow, telemetry.OutcomeSucceeded, nil, "", s.e.clock.Since(started))
		st.State, st.Result = store.StepDone, result
		s.save(st, ref)
		return result, nil
	}
	retries := DefaultRetries
	if cfg.Retries != nil {
		retries = *cfg.Retries
	}
	st.ErrorName, st.ErrorMessage = ErrorName(err), err.Error()
	if IsNonRetryable(err) || attempt > retries.Limit {
		tel.EndStep(actx, span, s.inst.Workflow, telemetry.OutcomeFailed, err, st.ErrorName, s.e.clock.Since(started))
		st.State = store.StepFailed
		s.save(st, ref)
		return nil, &StepError{Step: name, Attempts: attempt, Name: st.ErrorName, Message: st.ErrorMessage}
	}
	tel.EndStep(actx, span, s.inst.Workflow, telemetry.OutcomeRetrying, err, st.ErrorName, s.e.clock.Since(started))
	wake := s.e.clock.Now().Add(min(retries.delay(attempt), s.e.limits.MaxSleep))
	st.State, st.Attempt, st.WakeAt = store.StepPending, attempt+1, wake
	s.e.log.Debug("step attempt failed; retrying", "instance", s.inst.ID, "step", name, "attempt", attempt, "retry_at", wake, "err", err)
	s.suspend(store.Suspension{Step: &st, Status: store.StatusRunning, WakeAt: wake})
	panic("unreachable")
}

// runAttempt runs fn under the attempt timeout, with a context derived from
// actx (the execution's, with the attempt's span). A function that ignores
// its context is left behind when the timeout passes.
func (s *Step) runAttempt(actx context.Context, name string, timeout time.Duration, a Attempt, fn func(context.Context, Attempt) ([]byte, error)) ([]byte, error) {
	tctx, cancel := clockwork.WithTimeout(actx, s.e.clock, timeout)
	defer cancel()
	ctx := nonBlockingErr{tctx}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: &PanicError{Value: r, Stack: string(debug.Stack())}}
			}
		}()
		b, err := fn(ctx, a)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && s.ctx.Err() != nil {
			s.stop(unwind{kind: unwindAbandon, err: s.ctx.Err()}) // the engine stopped under the step
		}
		if r.err != nil && ctx.Err() != nil {
			// fn gave up because its deadline passed and returned before
			// this select saw ctx.Done: it is the same timeout.
			return nil, &attemptTimeoutError{step: name, timeout: timeout}
		}
		return r.b, r.err
	case <-ctx.Done():
		if s.ctx.Err() != nil {
			s.stop(unwind{kind: unwindAbandon, err: s.ctx.Err()})
		}
		return nil, &attemptTimeoutError{step: name, timeout: timeout}
	}
}

// nonBlockingErr makes Err return nil until Done is closed, as the
// context.Context contract requires. clockwork's virtual-clock context
// blocks in Err until its deadline, which would hang a step function that
// checks ctx.Err() under workflowtest.
type nonBlockingErr struct{ context.Context }

func (c nonBlockingErr) Err() error {
	select {
	case <-c.Done():
		return c.Context.Err()
	default:
		return nil
	}
}

// Sleep suspends the instance for d (at most Limits.MaxSleep).
func (s *Step) Sleep(name string, d time.Duration) error {
	if d > s.e.limits.MaxSleep {
		return invalid(ErrInvalidDuration, "sleep", d.String(), "must be at most %s", s.e.limits.MaxSleep)
	}
	return s.sleep(name, func(now time.Time) time.Time { return now.Add(d) })
}

// SleepUntil suspends the instance until t (at most Limits.MaxSleep ahead).
func (s *Step) SleepUntil(name string, t time.Time) error {
	// Checked before the step takes a position: a refused sleep stores no
	// checkpoint, so it must not shift the positions of the steps after it.
	// Later replays see a later clock, so an accepted t stays accepted.
	if t.Sub(s.e.clock.Now()) > s.e.limits.MaxSleep {
		return invalid(ErrInvalidDuration, "sleep until", t.Format(time.RFC3339), "must be at most %s ahead", s.e.limits.MaxSleep)
	}
	return s.sleep(name, func(time.Time) time.Time { return t })
}

func (s *Step) sleep(name string, target func(now time.Time) time.Time) error {
	pos, occ, h := s.next(name, store.KindSleep)
	now := s.e.clock.Now()
	ref := s.ref(name, occ, store.KindSleep, 0)
	if h != nil {
		wait := store.Suspension{Status: store.StatusWaiting, WakeAt: h.WakeAt}
		if last := pos+1 == len(s.history); h.State == store.StepDone || !last {
			if last {
				s.notBefore(h.WakeAt, wait) // completed ahead of its end, below
			}
			return nil
		}
		if h.WakeAt.Sub(now) > s.e.opts.ClaimAhead { // woken early, e.g. after a crash
			s.suspend(wait)
		}
		// Claimed ahead of the sleep's end (Options.ClaimAhead): its
		// completing checkpoint is written while the end is awaited, not
		// after it. A replay of it waits for the end too (above), so no
		// step after the sleep ever starts before the end.
		s.before(ref)
		done := *h
		done.State = store.StepDone
		s.save(done, ref)
		s.notBefore(h.WakeAt, wait)
		s.e.tel.TimerFired(s.ctx, "sleep", s.e.clock.Now().Sub(h.WakeAt))
		return nil
	}
	t := target(now)
	s.before(ref)
	st := store.Step{Seq: pos, Name: name, Occurrence: occ, Kind: store.KindSleep, State: store.StepPending, WakeAt: t, StartedAt: now}
	if !t.After(now) {
		st.State = store.StepDone
		s.save(st, ref)
		return nil
	}
	s.suspend(store.Suspension{Step: &st, Status: store.StatusWaiting, WakeAt: t})
	return nil
}

// WaitOptions configure WaitForEvent.
type WaitOptions struct {
	Type    string        // the event type to wait for; required
	Timeout time.Duration // default 24 h, at most Limits.MaxSleep
}

// DefaultWaitTimeout is WaitForEvent's timeout when none is given.
const DefaultWaitTimeout = 24 * time.Hour

// EventMessage is an event as a waiting step receives it.
type EventMessage struct {
	Type    string
	Payload json.RawMessage
}

var eventType = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$`)

func checkEventType(t string) error {
	if !eventType.MatchString(t) {
		return invalid(ErrInvalidEvent, "event type", t, "must match %s", eventType)
	}
	return nil
}

// WaitForEvent suspends the instance until an event of opts.Type arrives or
// opts.Timeout passes, which returns a *WaitTimeoutError (matching
// ErrTimeout) that Run may handle. Events sent before the wait are buffered
// per type and consumed first in, first out, one per wait.
func (s *Step) WaitForEvent(name string, opts WaitOptions) (EventMessage, error) {
	if err := checkEventType(opts.Type); err != nil {
		return EventMessage{}, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultWaitTimeout
	}
	if opts.Timeout > s.e.limits.MaxSleep {
		return EventMessage{}, invalid(ErrInvalidDuration, "wait timeout", opts.Timeout.String(), "must be at most %s", s.e.limits.MaxSleep)
	}
	pos, occ, h := s.next(name, store.KindWait)
	timeoutErr := &WaitTimeoutError{Step: name, Type: opts.Type, Timeout: opts.Timeout}
	now := s.e.clock.Now()
	deadline := now.Add(opts.Timeout)
	if h != nil {
		switch h.State {
		case store.StepDone:
			if s.delivered && pos == len(s.history)-1 {
				s.delivered = false
				ref := s.ref(name, occ, store.KindWait, 0)
				s.before(ref)
				s.after(ref)
			}
			return EventMessage{Type: opts.Type, Payload: h.Result}, nil
		case store.StepFailed:
			return EventMessage{}, timeoutErr
		}
		deadline = h.WakeAt
	}
	ref := s.ref(name, occ, store.KindWait, 0)
	s.before(ref)
	st := store.Step{Seq: pos, Name: name, Occurrence: occ, Kind: store.KindWait, State: store.StepPending, WakeAt: deadline, StartedAt: now}
	var ev *store.Event
	take := func() {
		s.write(func(ctx context.Context) (err error) {
			ev, err = s.e.store.TakeEvent(ctx, s.lease, opts.Type, st, s.e.clock.Now())
			return err
		})
	}
	take()
	if d := deadline.Sub(now); ev == nil && h != nil && d > 0 && d <= s.e.opts.ClaimAhead {
		// Claimed ahead of the timeout (Options.ClaimAhead): wait for it
		// here. The instance stays claimed, so an event sent meanwhile is
		// buffered, and taken at the timeout instead of the timeout error.
		s.notBefore(deadline, store.Suspension{})
		now = s.e.clock.Now()
		take()
	}
	if ev != nil {
		s.after(ref)
		return EventMessage{Type: ev.Type, Payload: ev.Payload}, nil
	}
	if !now.Before(deadline) {
		st.State, st.ErrorName, st.ErrorMessage = store.StepFailed, timeoutErr.ErrorName(), timeoutErr.Error()
		s.save(st, ref)
		return EventMessage{}, timeoutErr
	}
	sus := store.Suspension{Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: opts.Type}
	if h == nil {
		sus.Step = &st
	}
	s.suspend(sus)
	return EventMessage{}, nil
}

// WaitForEvent is Step.WaitForEvent with the payload decoded into T.
func WaitForEvent[T any](step *Step, name string, opts WaitOptions) (T, error) {
	var v T
	msg, err := step.WaitForEvent(name, opts)
	if err != nil {
		return v, err
	}
	if len(msg.Payload) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(msg.Payload, &v); err != nil {
		return v, fmt.Errorf("step %q: decode %q event payload into %T: %w", name, opts.Type, v, err)
	}
	return v, nil
}
