// Package workflowtest runs workflows in tests: a real engine on a temporary
// SQLite store, driven by a virtual clock, so that a three-day sleep or a
// 24-hour event timeout passes at once.
//
//	env := workflowtest.New(t, workflowtest.Options{})
//	workflowtest.Register(env, "Signup", Signup{})
//	run := env.Create("Signup", params)
//	status := run.Wait() // advances the clock past every sleep until Run returns
//
// A test can also stop a workflow before or after a named step, as a crash
// there would, and then replay it from its checkpoints:
//
//	env.StopAfter("charge")
//	run := env.Create("Order", order)
//	run.Wait()      // returns with the instance stopped after "charge" committed
//	env.Restart()   // a new engine takes the instance over, as after a crash
//	run.Wait()      // "charge" is not run again
package workflowtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// ErrStopped is what the engine is told when a test stops a workflow at a
// step; the execution is abandoned there as if the process had died.
var ErrStopped = errors.New("workflowtest: stopped at a step")

// Options configure New.
type Options struct {
	// Start is the virtual clock's initial time; default 2026-01-01T00:00:00Z.
	Start time.Time
	// Limits are passed to the engine.
	Limits workflow.Limits
	// Retention is how long finished instances are kept before the engine
	// removes them, in virtual time; default the engine's (30 days).
	Retention time.Duration
	// Logger receives the engine's logs; default discarded.
	Logger *slog.Logger
	// Timeout bounds each Wait and Settle in real time; default 30 s.
	Timeout time.Duration
	// TracerProvider and MeterProvider are passed to the engine (and
	// MeterProvider to the store), so a test can check its workflow's spans
	// and metrics with the SDK's in-memory exporters; nil turns them off.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Env is an engine on a temporary store with a virtual clock.
type Env struct {
	t     testing.TB
	opts  Options
	Clock *clockwork.FakeClock
	Store store.Store

	mu      sync.Mutex
	engine  *workflow.Engine
	regs    []func(*workflow.Engine) error
	started bool
	arms    map[arm]bool
	stops   []Stop
}

type arm struct {
	after bool
	step  string
}

// Stop records where a test stopped a workflow.
type Stop struct {
	Step  workflow.StepRef
	After bool // after the step's checkpoint was durable, else before the step ran
}

// New returns an Env whose store and engine are closed when the test ends.
func New(t testing.TB, opts Options) *Env {
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
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "workflowtest.db"),
		sqlite.Options{Synchronous: sqlite.SynchronousOff, MeterProvider: opts.MeterProvider})
	if err != nil {
		t.Fatalf("workflowtest: %v", err)
	}
	env := &Env{t: t, opts: opts, Clock: clockwork.NewFakeClockAt(opts.Start), Store: st, arms: make(map[arm]bool)}
	env.engine = env.newEngine()
	t.Cleanup(func() {
		env.mu.Lock()
		e := env.engine
		env.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Stop(ctx)
		_ = st.Close()
	})
	return env
}

func (env *Env) newEngine() *workflow.Engine {
	e, err := workflow.NewEngine(workflow.Options{
		Store:          env.Store,
		Clock:          env.Clock,
		Logger:         env.opts.Logger,
		Limits:         env.opts.Limits,
		Retention:      env.opts.Retention,
		TracerProvider: env.opts.TracerProvider,
		MeterProvider:  env.opts.MeterProvider,
		Hooks: workflow.Hooks{
			BeforeStep: func(_ context.Context, s workflow.StepRef) error { return env.hit(s, false) },
			AfterStep:  func(_ context.Context, s workflow.StepRef) error { return env.hit(s, true) },
		},
	})
	if err != nil {
		env.t.Fatalf("workflowtest: %v", err)
	}
	return e
}

// Register registers a workflow class with the Env's engine.
func Register[P, O any](env *Env, name string, w workflow.Workflow[P, O]) {
	env.t.Helper()
	reg := func(e *workflow.Engine) error { return workflow.Register(e, name, w) }
	env.mu.Lock()
	defer env.mu.Unlock()
	if err := reg(env.engine); err != nil {
		env.t.Fatalf("workflowtest: %v", err)
	}
	env.regs = append(env.regs, reg)
}

// Engine returns the current engine, started.
func (env *Env) Engine() *workflow.Engine {
	env.mu.Lock()
	defer env.mu.Unlock()
	if !env.started {
		if err := env.engine.Start(context.Background()); err != nil {
			env.t.Fatalf("workflowtest: start engine: %v", err)
		}
		env.started = true
	}
	return env.engine
}

// StopBefore arms a one-shot stop: the next execution that reaches a step
// with this name is abandoned before the step runs.
func (env *Env) StopBefore(step string) { env.arm(arm{step: step}) }

// StopAfter arms a one-shot stop: the next execution that completes a step
// with this name is abandoned right after its checkpoint is durable, before
// the step returns to Run.
func (env *Env) StopAfter(step string) { env.arm(arm{step: step, after: true}) }

func (env *Env) arm(a arm) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.arms[a] = true
}

func (env *Env) hit(s workflow.StepRef, after bool) error {
	env.mu.Lock()
	defer env.mu.Unlock()
	a := arm{step: s.Name, after: after}
	if !env.arms[a] {
		return nil
	}
	delete(env.arms, a)
	env.stops = append(env.stops, Stop{Step: s, After: after})
	return fmt.Errorf("%w %q (after=%v)", ErrStopped, s.Name, after)
}

// Stops returns the stops that have happened, oldest first.
func (env *Env) Stops() []Stop {
	env.mu.Lock()
	defer env.mu.Unlock()
	return append([]Stop(nil), env.stops...)
}

// Restart replaces the engine with a new one on the same store and clock,
// as a process restart would: instances the old engine had stopped at a
// step are taken over and replayed from their checkpoints.
func (env *Env) Restart() {
	env.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), env.opts.Timeout)
	defer cancel()
	env.mu.Lock()
	old, regs := env.engine, env.regs
	env.mu.Unlock()
	if err := old.Stop(ctx); err != nil {
		env.t.Fatalf("workflowtest: stop engine: %v", err)
	}
	e := env.newEngine()
	for _, reg := range regs {
		if err := reg(e); err != nil {
			env.t.Fatalf("workflowtest: %v", err)
		}
	}
	env.mu.Lock()
	env.engine, env.started = e, false
	env.mu.Unlock()
	env.Engine()
}

// Advance moves the virtual clock forward and lets the engine act on it.
func (env *Env) Advance(d time.Duration) {
	env.Clock.Advance(d)
	env.Engine().Wake()
}

// Run is one instance created through the Env.
type Run struct {
	*workflow.Instance
	env *Env
}

// Create creates an instance of a registered class and starts it.
func (env *Env) Create(workflowName string, params any) *Run {
	env.t.Helper()
	return env.CreateWith(workflowName, workflow.CreateOptions{Params: params})
}

// CreateWith is Create with full options.
func (env *Env) CreateWith(workflowName string, opts workflow.CreateOptions) *Run {
	env.t.Helper()
	return env.CreateContext(context.Background(), workflowName, opts)
}

// CreateContext is CreateWith under ctx, whose span (if any) the instance's
// spans descend from.
func (env *Env) CreateContext(ctx context.Context, workflowName string, opts workflow.CreateOptions) *Run {
	env.t.Helper()
	inst, err := env.Engine().Create(ctx, workflowName, opts)
	if err != nil {
		env.t.Fatalf("workflowtest: create %s: %v", workflowName, err)
	}
	return &Run{Instance: inst, env: env}
}

// Settle waits, without moving the clock, until the engine executes nothing
// and nothing is due, and returns the instance's status.
func (r *Run) Settle() workflow.InstanceStatus {
	r.env.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), r.env.opts.Timeout)
	defer cancel()
	if err := r.env.settle(ctx); err != nil {
		r.env.t.Fatalf("workflowtest: settle %s: %v", r.ID, err)
	}
	return r.status()
}

// Wait drives the instance until it finishes, stops at an armed step, is
// paused, or can make no more progress, advancing the virtual clock to each
// next timer (sleeps, retry delays, event timeouts) whenever everything is
// idle. It returns the instance's status.
func (r *Run) Wait() workflow.InstanceStatus {
	r.env.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), r.env.opts.Timeout)
	defer cancel()
	for {
		if err := r.env.settle(ctx); err != nil {
			r.env.t.Fatalf("workflowtest: wait for %s: %v (status %s)", r.ID, err, r.status().Status)
		}
		st := r.status()
		if st.Status.Finished() || st.Status == workflow.StatusPaused {
			return st
		}
		next, ok, err := r.env.nextWake(ctx)
		if err != nil {
			r.env.t.Fatalf("workflowtest: %v", err)
		}
		if !ok { // stopped at a step, or nothing scheduled
			return st
		}
		r.env.Advance(next.Sub(r.env.Clock.Now()))
	}
}

// Output decodes the output of a complete instance into out.
func (r *Run) Output(out any) error {
	st := r.status()
	if st.Status != workflow.StatusComplete {
		return fmt.Errorf("workflowtest: instance %s is %s, not complete", r.ID, st.Status)
	}
	return json.Unmarshal(st.Output, out)
}

// Steps returns the instance's checkpoints in order.
func (r *Run) Steps() []workflow.StepInfo {
	r.env.t.Helper()
	steps, err := r.Instance.Steps(context.Background())
	if err != nil {
		r.env.t.Fatalf("workflowtest: %v", err)
	}
	return steps
}

func (r *Run) status() workflow.InstanceStatus {
	r.env.t.Helper()
	st, err := r.Instance.Status(context.Background())
	if err != nil {
		r.env.t.Fatalf("workflowtest: %v", err)
	}
	return st
}

// settle waits until nothing executes and nothing is due.
func (env *Env) settle(ctx context.Context) error {
	e := env.Engine()
	quiet := 0
	for {
		if e.Executing() == 0 {
			next, ok, err := env.nextWake(ctx)
			if err != nil {
				return err
			}
			if !ok || next.After(env.Clock.Now()) {
				quiet++
				if quiet >= 2 { // seen idle twice in a row: not between a claim and its launch
					return nil
				}
			} else {
				quiet = 0
				e.Wake()
			}
		} else {
			quiet = 0
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("engine did not settle: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// nextWake returns the earliest time any instance needs a worker.
func (env *Env) nextWake(ctx context.Context) (time.Time, bool, error) {
	ts, err := env.Store.NextWakeTimes(ctx, "", env.Clock.Now().AddDate(1000, 0, 0), 1)
	if err != nil || len(ts) == 0 {
		return time.Time{}, false, err
	}
	return ts[0], true, nil
}
