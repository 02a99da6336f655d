// Package agenttest runs agents in tests: a real workflow engine and agent
// runtime on a temporary SQLite store, sharing one virtual clock, so that a
// five-minute cron runs twelve times in a virtual hour, or a three-day
// prompt timeout passes, in milliseconds. Agents, their schedules and
// fibers, the workflows they start and Think turns all run as in
// production; only time is virtual.
//
//	env := agenttest.New(t, agenttest.Options{
//		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
//			return agent.Register[Ticker](rt, "Ticker", agent.ClassOptions{})
//		},
//	})
//	agent.Call(ctx, env.Runtime(), "a", (*Ticker).Start, "*/5 * * * *")
//	env.Advance(time.Hour) // runs each due schedule, timer and turn in order
//
// A test can also crash the process — the engine and the runtime together,
// as kill -9 would — before or after a named workflow step, before or
// after a schedule's run, or after a fiber's stash, and start a new one on
// the same store and clock, which takes the crashed one's work over:
//
//	env.CrashAt(agenttest.AfterStep("charge"))
//	… // whatever reaches the step
//	env.Settle()  // returns once the crash has happened
//	env.Restart() // a new engine and runtime take over
//
// # Virtual time and quiet
//
// Nothing happens on the virtual clock by itself: Settle waits, in real
// time, until the system is quiet, and Advance moves the clock from one due
// time to the next, settling at each. The system is quiet when all of
// these hold, twice in a row a millisecond apart:
//
//   - the engine executes no instance and is claiming none;
//   - the runtime runs no background work that is busy: no schedule run
//     (its callback, its retries, its error hook), no fiber, no Think turn
//     or other agent.Agent.Go goroutine, no claim or recovery pass. Work
//     that waits for a time on the virtual clock (a schedule's retry
//     backoff, a task's retry) or for the outside world (a scripted model
//     told to stall, scripted.Stall) is parked: it is not busy, and
//     Advance moves the clock to the time it waits for;
//   - no outbox message (the end of a Think prompt's turn) is being
//     delivered to its workflow;
//   - nothing is due at the current virtual time: no workflow instance of
//     the engine's service, no schedule of the runtime's classes, no outbox
//     message, no parked work's wake-up;
//   - no agent of the runtime's classes has fibers or Think submissions
//     left by a crashed node that the runtime has yet to recover.
//
// Advance stops at each time when something becomes due: an instance's
// wake-up (a sleep, a retry, an event timeout), a schedule's next run, an
// outbox retry, parked work's wake-up. Timers that user code sets on the
// clock itself (a fiber that sleeps on it) are not among them: the clock
// passes them on its way, and they fire then.
//
// # Crashes
//
// A crash cuts the engine and the runtime off from the store at once —
// every later store call of theirs fails, whatever goroutine makes it — and
// then cancels their contexts so that their goroutines return; nothing is
// released gracefully. Code of theirs that is still running when the crash
// happens (a step function, a fiber, a tool) may go on until it sees its
// context end, but nothing it does reaches the store. Restart starts a new
// engine and runtime with a fresh node id; the crashed node stays in the
// store, as a killed process's does, and the new engine's reaper removes
// it at once because its process is gone from this host (the harness's
// store tells it so), which frees its instances, agents, schedules, fibers
// and Think submissions by the usual rules.
package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/internal/agentseam"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// TB is what New needs of a test: *testing.T and *testing.B have it.
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// Options configure New.
type Options struct {
	// Setup registers the workflow classes, agent classes, Think classes
	// and bindings on an engine and its runtime, with the usual
	// workflow.Register, agent.Register, think.Register and Runtime.Bind.
	// It is called before they start, and again for the engine and runtime
	// each Restart starts, as a process's main would be.
	Setup func(eng *workflow.Engine, rt *agent.Runtime) error
	// Start is the virtual clock's initial time; default
	// 2026-01-01T00:00:00Z.
	Start time.Time
	// Engine configures each engine. Store, Clock and NodeID are the
	// Env's (each engine has a fresh node id); Hooks, if set, are called
	// before the Env's own.
	Engine workflow.Options
	// Runtime configures each runtime; Engine is the Env's.
	Runtime agent.Options
	// Logger is the engine's and the runtime's logger unless Engine or
	// Runtime names one; default discarded.
	Logger *slog.Logger
	// Timeout bounds, in real time, each wait for the system to settle
	// and for a crashed incarnation's goroutines to return; default 30 s.
	Timeout time.Duration
}

// Env is an engine and an agent runtime on a temporary store with a
// virtual clock. Its methods are meant for the test's goroutine.
type Env struct {
	// Clock is the virtual clock the engine and the runtime share. Move
	// it with Advance, which lets the system act at each due time;
	// Clock.Advance moves it without waiting for anything.
	Clock *clockwork.FakeClock
	// Store is the store, for reading what happened.
	Store store.Store

	t    TB
	opts Options

	mu      sync.Mutex
	inc     *incarnation   // the current engine and runtime
	incs    []*incarnation // every one started, for the cleanup
	arms    []*arm
	crashes []Crash
	dead    map[string]bool // node ids of crashed incarnations
}

// incarnation is one "process": an engine and its runtime.
type incarnation struct {
	st    *crashStore
	eng   *workflow.Engine
	rt    *agent.Runtime
	probe *agentseam.Probe

	crashOnce sync.Once
	cut       chan struct{} // closed once a crash cancelled its contexts
	gone      chan struct{} // closed once its goroutines returned after a crash, or waiting gave up
}

func (inc *incarnation) crashed() bool { return inc.st.dead.Load() }

// New returns an Env with its engine and runtime started. The store is
// closed, and the engine and runtime stopped, when the test ends.
func New(t TB, opts Options) *Env {
	t.Helper()
	if opts.Start.IsZero() {
		opts.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "agenttest.db"),
		sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	env := &Env{Clock: clockwork.NewFakeClockAt(opts.Start), Store: st, t: t, opts: opts, dead: map[string]bool{}}
	t.Cleanup(env.close)
	if err := env.start(); err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	return env
}

// start starts a new incarnation and makes it the current one.
func (env *Env) start() error {
	inc := &incarnation{cut: make(chan struct{}), gone: make(chan struct{})}
	inc.st = newCrashStore(env.Store, env)

	eo := env.opts.Engine
	eo.Store, eo.Clock, eo.NodeID = inc.st, env.Clock, ""
	if eo.Logger == nil {
		eo.Logger = env.opts.Logger
	}
	user := eo.Hooks
	eo.Hooks = workflow.Hooks{
		BeforeStep: func(ctx context.Context, s workflow.StepRef) error {
			if f := user.BeforeStep; f != nil {
				if err := f(ctx, s); err != nil {
					return err
				}
			}
			return env.hit(inc, pointBeforeStep, s.Name, describeStep(s))
		},
		AfterStep: func(ctx context.Context, s workflow.StepRef) error {
			if f := user.AfterStep; f != nil {
				if err := f(ctx, s); err != nil {
					return err
				}
			}
			return env.hit(inc, pointAfterStep, s.Name, describeStep(s))
		},
	}
	eng, err := workflow.NewEngine(eo)
	if err != nil {
		return err
	}
	ro := env.opts.Runtime
	ro.Engine = eng
	if ro.Logger == nil {
		ro.Logger = env.opts.Logger
	}
	rt, err := agent.NewRuntime(ro)
	if err != nil {
		return err
	}
	// The runtime took its probe from inc.st (crashStore.AgentProbe).
	inc.eng, inc.rt, inc.probe = eng, rt, inc.st.probe.Load()
	if inc.probe == nil {
		return errors.New("the runtime did not take its probe from the harness's store")
	}
	inc.probe.SetHooks(&agentseam.Hooks{
		BeforeSchedule: func(_ context.Context, s agentseam.ScheduleRef) error {
			return env.hit(inc, pointBeforeSchedule, s.Method, describeSchedule(s))
		},
		AfterSchedule: func(_ context.Context, s agentseam.ScheduleRef) error {
			return env.hit(inc, pointAfterSchedule, s.Method, describeSchedule(s))
		},
		AfterStash: func(_ context.Context, f agentseam.FiberRef) error {
			return env.hit(inc, pointAfterStash, f.Name, fmt.Sprintf("fiber %s (%s) of agent %s, stash %s", f.ID, f.Name, f.Agent, f.Stash))
		},
	})
	if env.opts.Setup != nil {
		if err := env.opts.Setup(eng, rt); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	// Current before it starts: the engine may reach an armed crash point
	// as soon as it runs, even before the runtime has started.
	env.mu.Lock()
	env.inc = inc
	env.incs = append(env.incs, inc)
	env.mu.Unlock()
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		env.crash(inc, Crash{Detail: "the engine failed to start"})
		return err
	}
	if err := rt.Start(ctx); err != nil && !inc.crashed() {
		env.crash(inc, Crash{Detail: "the runtime failed to start"})
		return err
	}
	return nil
}

func describeStep(s workflow.StepRef) string {
	return fmt.Sprintf("step %q (occurrence %d, %s, attempt %d) of %s instance %s", s.Name, s.Occurrence, s.Kind, s.Attempt, s.Workflow, s.InstanceID)
}

func describeSchedule(s agentseam.ScheduleRef) string {
	return fmt.Sprintf("schedule %s (%s) of agent %s, due %s", s.ID, s.Method, s.Agent, s.Due.Format(time.RFC3339Nano))
}

func (env *Env) current() *incarnation {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.inc
}

// Engine returns the current engine (a new one after each Restart).
func (env *Env) Engine() *workflow.Engine { return env.current().eng }

// Runtime returns the current runtime (a new one after each Restart).
func (env *Env) Runtime() *agent.Runtime { return env.current().rt }

// Settle waits, without moving the clock, until the system is quiet (see
// the package documentation) or a crash has happened. It fails the test if
// the system is not quiet within Options.Timeout, saying what is busy.
func (env *Env) Settle() {
	env.t.Helper()
	if err := env.settle(env.current()); err != nil {
		env.t.Fatalf("agenttest: %v", err)
	}
}

// Advance moves the virtual clock forward by d, stopping at every time
// something becomes due to let the system act on it and settle, and
// settles at the end. When a crash happens on the way, it returns at once,
// with the clock at the crash. When the Env is crashed already, the clock
// just moves: the process is down, and nothing runs.
func (env *Env) Advance(d time.Duration) {
	env.t.Helper()
	env.AdvanceTo(env.Clock.Now().Add(d))
}

// AdvanceTo is Advance up to the time t.
func (env *Env) AdvanceTo(t time.Time) {
	env.t.Helper()
	inc := env.current()
	if inc.crashed() {
		env.moveClock(inc, t)
		return
	}
	for {
		if err := env.settle(inc); err != nil {
			env.t.Fatalf("agenttest: %v", err)
		}
		if inc.crashed() {
			return
		}
		next, ok, err := env.nextDue(inc, t)
		if err != nil {
			env.t.Fatalf("agenttest: %v", err)
		}
		if !ok {
			break
		}
		env.moveClock(inc, next)
	}
	if env.Clock.Now().Before(t) {
		env.moveClock(inc, t)
		if err := env.settle(inc); err != nil {
			env.t.Fatalf("agenttest: %v", err)
		}
	}
}

// moveClock moves the clock to t and tells the engine and the runtime.
func (env *Env) moveClock(inc *incarnation, t time.Time) {
	if d := t.Sub(env.Clock.Now()); d > 0 {
		env.Clock.Advance(d)
	}
	if !inc.crashed() {
		inc.eng.Wake()
		inc.rt.WakeSchedules()
	}
}

// settle waits until inc is quiet or crashed.
func (env *Env) settle(inc *incarnation) error {
	ctx, cancel := context.WithTimeout(context.Background(), env.opts.Timeout)
	defer cancel()
	quiet := 0
	for {
		if inc.crashed() {
			return nil
		}
		why, err := env.busy(ctx, inc)
		if err != nil && !inc.crashed() {
			return err
		}
		if why == "" {
			quiet++
			if quiet >= 2 { // seen quiet twice in a row: not between two steps of a hand-over
				return nil
			}
		} else {
			quiet = 0
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the system did not settle within %s at %s: %s", env.opts.Timeout, env.Clock.Now().Format(time.RFC3339), why)
		case <-time.After(time.Millisecond):
		}
	}
}

// busy says what keeps inc from being quiet, or "" when nothing does.
func (env *Env) busy(ctx context.Context, inc *incarnation) (string, error) {
	now := env.Clock.Now()
	if n := inc.eng.Executing(); n > 0 {
		return fmt.Sprintf("the engine is executing %d workflow instance(s)", n), nil
	}
	if n := inc.probe.Active(); n > 0 {
		return fmt.Sprintf("the runtime has %d piece(s) of busy background work (schedule runs, fibers, Think turns, claims)", n), nil
	}
	if n := inc.st.delivering(); n > 0 {
		return fmt.Sprintf("%d Think outbox message(s) are being delivered", n), nil
	}
	if t, ok := inc.probe.NextWake(); ok && !t.After(now) {
		return fmt.Sprintf("parked runtime work is due at %s", t.Format(time.RFC3339Nano)), nil
	}
	st := env.Store
	if ts, err := st.NextWakeTimes(ctx, env.opts.Engine.Service, now, 1); err != nil {
		return "reading due instances failed", err
	} else if len(ts) > 0 {
		inc.eng.Wake()
		return fmt.Sprintf("a workflow instance is due at %s", ts[0].Format(time.RFC3339Nano)), nil
	}
	classes := inc.probe.Classes()
	if ts, err := st.NextScheduleTimes(ctx, classes, now, 1); err != nil {
		return "reading due schedules failed", err
	} else if len(ts) > 0 {
		inc.rt.WakeSchedules()
		return fmt.Sprintf("a schedule is due at %s", ts[0].Format(time.RFC3339Nano)), nil
	}
	if ts, err := st.NextOutboxTimes(ctx, now, 1); err != nil {
		return "reading the Think outbox failed", err
	} else if len(ts) > 0 {
		return fmt.Sprintf("a Think outbox message is due at %s", ts[0].Format(time.RFC3339Nano)), nil
	}
	if len(classes) == 0 {
		return "", nil
	}
	if keys, err := st.OrphanedFiberAgents(ctx, classes, 1); err != nil {
		return "reading fibers to recover failed", err
	} else if len(keys) > 0 {
		return fmt.Sprintf("agent %s has fibers of a crashed node to recover", keys[0]), nil
	}
	if keys, err := st.PendingSubmissionAgents(ctx, classes, 1); err != nil {
		return "reading Think submissions to run failed", err
	} else if len(keys) > 0 {
		return fmt.Sprintf("agent %s has Think submissions that no runner runs", keys[0]), nil
	}
	return "", nil
}

// nextDue returns the earliest time after now and at or before until when
// something becomes due.
func (env *Env) nextDue(inc *incarnation, until time.Time) (time.Time, bool, error) {
	ctx := context.Background()
	now := env.Clock.Now()
	var next time.Time
	consider := func(ts []time.Time, err error) error {
		if err != nil {
			return err
		}
		for _, t := range ts {
			if t.After(now) && !t.After(until) && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
		return nil
	}
	st := env.Store
	if err := consider(st.NextWakeTimes(ctx, env.opts.Engine.Service, until, 1)); err != nil {
		return next, false, err
	}
	if err := consider(st.NextScheduleTimes(ctx, inc.probe.Classes(), until, 1)); err != nil {
		return next, false, err
	}
	if err := consider(st.NextOutboxTimes(ctx, until, 1)); err != nil {
		return next, false, err
	}
	if t, ok := inc.probe.NextWake(); ok {
		_ = consider([]time.Time{t}, nil)
	}
	return next, !next.IsZero(), nil
}

// Crash crashes the engine and the runtime now, as kill -9 would, and
// returns once their goroutines have returned (or Options.Timeout has
// passed). Restart starts new ones.
func (env *Env) Crash() {
	env.t.Helper()
	inc := env.current()
	env.crash(inc, Crash{Detail: "Env.Crash"})
	<-inc.gone
}

// Crashed reports whether the current engine and runtime have crashed.
func (env *Env) Crashed() bool { return env.current().crashed() }

// Crashes returns the crashes that have happened, oldest first.
func (env *Env) Crashes() []Crash {
	env.mu.Lock()
	defer env.mu.Unlock()
	return slices.Clone(env.crashes)
}

// Restart starts a new engine and runtime on the same store and clock,
// with a fresh node id and Options.Setup run again, and settles: they take
// over the work of the crashed ones (instances, agents, schedules,
// fibers, Think submissions). If the current ones have not crashed, they
// are crashed first, as by Crash.
func (env *Env) Restart() {
	env.t.Helper()
	inc := env.current()
	env.crash(inc, Crash{Detail: "Env.Restart"})
	<-inc.gone
	if err := env.start(); err != nil {
		env.t.Fatalf("agenttest: restart: %v", err)
	}
	env.Settle()
}

// crash cuts inc off from the store, records the crash and tears inc down
// in the background; it does nothing if inc has crashed already.
func (env *Env) crash(inc *incarnation, c Crash) {
	first := false
	inc.crashOnce.Do(func() { first = true })
	if !first {
		return
	}
	inc.st.dead.Store(true) // before anything else: nothing more is durable
	c.Node, c.At = inc.eng.NodeID(), env.Clock.Now()
	env.mu.Lock()
	env.crashes = append(env.crashes, c)
	env.dead[c.Node] = true
	env.mu.Unlock()
	go env.teardown(inc)
}

// teardown cancels a crashed incarnation's contexts and waits for its
// goroutines. Its store calls fail, so Stop releases and removes nothing.
func (env *Env) teardown(inc *incarnation) {
	defer close(inc.gone)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stop without waiting: the goroutines are waited for below, in bounded time
	_ = inc.rt.Stop(ctx)
	_ = inc.eng.Stop(ctx)
	close(inc.cut)
	deadline := time.Now().Add(env.opts.Timeout)
	for inc.eng.Executing() > 0 || inc.probe.Running() > 0 {
		if time.Now().After(deadline) {
			env.opts.Logger.Warn("agenttest: goroutines of a crashed engine or runtime are still running; they cannot write to the store",
				"node", inc.eng.NodeID(), "executing", inc.eng.Executing(), "runtime_work", inc.probe.Running())
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (env *Env) isCrashed(node string) bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.dead[node]
}

// close stops the current engine and runtime gracefully and closes the
// store, when the test ends.
func (env *Env) close() {
	env.mu.Lock()
	inc, incs := env.inc, env.incs
	env.mu.Unlock()
	if inc != nil && !inc.crashed() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = inc.rt.Stop(ctx)
		_ = inc.eng.Stop(ctx)
		cancel()
	}
	for _, i := range incs {
		if i.crashed() {
			<-i.gone
		}
	}
	_ = env.Store.Close()
}

// CrashAt arms a one-shot crash at p: the process crashes, as by Crash,
// the first time (or, with Point.Nth, the nth time) from now that the engine or the runtime reaches p.
func (env *Env) CrashAt(p Point) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.arms = append(env.arms, &arm{p: p})
}

type arm struct {
	p    Point
	seen int
}

// hit is called at every crash point reached; it crashes inc when an armed
// crash is due there, and then returns an error that stops the work.
func (env *Env) hit(inc *incarnation, kind pointKind, name, detail string) error {
	if inc.crashed() {
		return ErrCrashed // a goroutine of a crashed incarnation: stop it here
	}
	env.mu.Lock()
	var fired *arm
	for i, a := range env.arms {
		if a.p.kind != kind || a.p.name != name {
			continue
		}
		a.seen++
		if fired == nil && a.seen >= a.p.count() {
			fired = a
			env.arms = slices.Delete(env.arms, i, i+1)
			break
		}
	}
	env.mu.Unlock()
	if fired == nil {
		return nil
	}
	env.crash(inc, Crash{Point: fired.p, Detail: detail})
	<-inc.cut // the contexts are cancelled: the work sees the crash when it returns
	return fmt.Errorf("%w (at %s)", ErrCrashed, fired.p)
}

// Crash records a crash.
type Crash struct {
	// Point is where it happened; zero for Crash and Restart.
	Point Point
	// Node is the crashed engine's and runtime's node id.
	Node string
	// At is the virtual time of the crash.
	At time.Time
	// Detail names what was at the point: the step and instance, the
	// schedule and agent, the fiber and its stash.
	Detail string
}

// Point is a place to crash at; make one with BeforeStep, AfterStep,
// BeforeSchedule, AfterSchedule or AfterStash.
type Point struct {
	kind pointKind
	name string
	nth  int
}

type pointKind int

const (
	pointBeforeStep pointKind = iota + 1
	pointAfterStep
	pointBeforeSchedule
	pointAfterSchedule
	pointAfterStash
)

// BeforeStep is the point before a workflow step named name runs: before
// an attempt of a Do, or when a sleep or wait is reached.
func BeforeStep(name string) Point { return Point{kind: pointBeforeStep, name: name} }

// AfterStep is the point right after a workflow step named name has its
// final checkpoint durable, before it returns to Run.
func AfterStep(name string) Point { return Point{kind: pointAfterStep, name: name} }

// BeforeSchedule is the point where a schedule of method method has been
// claimed and its callback is about to run.
func BeforeSchedule(method string) Point { return Point{kind: pointBeforeSchedule, name: method} }

// AfterSchedule is the point where a schedule's callback of method method
// has returned, before the schedule is moved to its next run or deleted:
// after a restart the run happens again (schedules run at least once).
func AfterSchedule(method string) Point { return Point{kind: pointAfterSchedule, name: method} }

// AfterStash is the point right after a stash of a fiber named name is
// durable, before Stash returns.
func AfterStash(fiber string) Point { return Point{kind: pointAfterStash, name: fiber} }

// Nth returns p armed for the nth time it is reached instead of the first.
func (p Point) Nth(n int) Point {
	p.nth = n
	return p
}

// count is at which time p is reached the crash happens, from 1.
func (p Point) count() int { return max(p.nth, 1) }

// String describes p.
func (p Point) String() string {
	var s string
	switch p.kind {
	case pointBeforeStep:
		s = "before step %q"
	case pointAfterStep:
		s = "after step %q"
	case pointBeforeSchedule:
		s = "before a run of schedule method %q"
	case pointAfterSchedule:
		s = "after a run of schedule method %q"
	case pointAfterStash:
		s = "after a stash of fiber %q"
	default:
		return "no point"
	}
	s = fmt.Sprintf(s, p.name)
	if p.count() > 1 {
		s += fmt.Sprintf(" (time %d)", p.count())
	}
	return s
}
