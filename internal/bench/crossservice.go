package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/internal/engineseam"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// The cross-service scenario: an agent in one "process" starts workflows of
// a service that another "process" runs, and hears of each one's
// completion — the two being an engine and a runtime on one store handle,
// and an engine of the other service on a second handle of the same store,
// as two processes have them. Rounds run one at a time, so the figures are
// latencies, not queueing: how long the work one process makes for another
// waits before the other takes it up. Every engine and runtime keeps its
// default PollInterval (1 s), which bounds those waits when the store's
// wakes are off (--no-wakes) or lost.
//
//   - cross_service_start: RunWorkflow returned (the instance and its
//     tracking row are durable, queued for the other service) → the
//     workflow's Run begins in the other process;
//   - cross_service_notice: the other process's Finish returned (the
//     instance is complete and the agent's finish notice durable) → the
//     agent's OnWorkflowComplete hook begins in the first;
//   - cross_service_roundtrip: RunWorkflow called → the hook.

const (
	xsService = "bench-cross-b" // the workflows' service
	xsBinding = "BENCH_CROSS"
	xsClass   = "bench-cross-job"
)

// xsTracker is the scenario's agent class.
type xsTracker struct {
	agent.Agent[struct{}]
}

// xsHooks maps each run's tracker class (unique per run) to its hook
// channel.
var xsHooks sync.Map

func (a *xsTracker) OnWorkflowComplete(_ context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	at := time.Now()
	if ch, ok := xsHooks.Load(a.Class()); ok {
		ch.(chan xsEvent) <- xsEvent{id: wf.ID, at: at}
	}
}

func (a *xsTracker) OnWorkflowError(_ context.Context, wf agent.WorkflowInfo, _ *workflow.ErrorInfo) {
	if ch, ok := xsHooks.Load(a.Class()); ok {
		ch.(chan xsEvent) <- xsEvent{id: wf.ID, failed: true}
	}
}

type xsEvent struct {
	id     string
	at     time.Time
	failed bool
}

// openAnother opens a second handle on e's store, as another process would.
func (r *runner) openAnother(ctx context.Context, e *env) (store.Store, error) {
	switch e.backend {
	case "sqlite":
		return sqlite.Open(ctx, e.path, sqlite.Options{Synchronous: sqlite.Synchronous(r.cfg.Synchronous), DisableWakes: r.cfg.NoWakes})
	case "postgres":
		var schema string
		if err := e.read.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return nil, fmt.Errorf("the store's schema: %w", err)
		}
		return postgres.Open(ctx, r.cfg.DSN, postgres.Options{Schema: schema, DisableWakes: r.cfg.NoWakes})
	}
	return nil, fmt.Errorf("unknown backend %q", e.backend)
}

func (r *runner) crossService(ctx context.Context) (_ []Result, err error) {
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()
	other, err := r.openAnother(ctx, e)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, other.Close()) }()
	r.progress("%d rounds, one at a time (wakes off: %v)", r.cfg.CrossServiceRounds, r.cfg.NoWakes)
	return measureCrossService(ctx, e.st, other, r.cfg.CrossServiceRounds, r.log)
}

// measureCrossService runs rounds rounds of the cross-service scenario: an
// agent runtime and an engine on store handle a, an engine of another
// service on handle b (handles on one store), and returns its figures. The
// engines and the runtime are stopped before it returns.
func measureCrossService(ctx context.Context, a, b store.Store, rounds int, log *slog.Logger) (_ []Result, err error) {
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i](sctx))
		}
	}()

	// The workers, on b.
	var (
		mu       sync.Mutex
		started  = make(map[string]time.Time, rounds)
		finished = make(map[string]time.Time, rounds)
	)
	engB, err := workflow.NewEngine(workflow.Options{Store: b, Logger: log, Service: xsService})
	if err != nil {
		return nil, err
	}
	if err := workflow.Register(engB, xsClass, workflow.Func[struct{}, struct{}](func(_ context.Context, ev workflow.Event[struct{}], _ *workflow.Step) (struct{}, error) {
		now := time.Now()
		mu.Lock()
		if _, ok := started[ev.InstanceID]; !ok {
			started[ev.InstanceID] = now
		}
		mu.Unlock()
		return struct{}{}, nil
	})); err != nil {
		return nil, err
	}
	engB.Seam(engineseam.Key{}).OnFinished(func(id string, _ store.AgentKey) {
		now := time.Now()
		mu.Lock()
		finished[id] = now
		mu.Unlock()
	})
	if err := engB.Start(ctx); err != nil {
		return nil, err
	}
	stops = append(stops, engB.Stop)

	// The agent, on a.
	engA, err := workflow.NewEngine(workflow.Options{Store: a, Logger: log})
	if err != nil {
		return nil, err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: engA, Logger: log})
	if err != nil {
		return nil, err
	}
	class := "BenchCrossTracker_" + randomSuffix()
	hooks := make(chan xsEvent, 1)
	xsHooks.Store(class, hooks)
	defer xsHooks.Delete(class)
	if err := agent.Register[xsTracker](rt, class, agent.ClassOptions{}); err != nil {
		return nil, err
	}
	if err := rt.Bind(xsBinding, agent.Binding{Workflow: xsClass, Service: xsService}); err != nil {
		return nil, err
	}
	if err := engA.Start(ctx); err != nil {
		return nil, err
	}
	stops = append(stops, engA.Stop)
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	stops = append(stops, rt.Stop)

	var toStart, toHook, round []float64
	for i := range rounds + 1 { // round 0 warms up (activation, statements)
		var called, returned time.Time
		id, err := agent.With(ctx, rt, "a", func(ctx context.Context, t *xsTracker) (string, error) {
			called = time.Now()
			id, err := t.RunWorkflow(ctx, xsBinding, struct{}{})
			returned = time.Now()
			return id, err
		})
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		var ev xsEvent
		select {
		case ev = <-hooks:
		case <-time.After(stallTimeout):
			return nil, fmt.Errorf("round %d: no completion hook for %s within %s", i, id, stallTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if ev.id != id || ev.failed {
			return nil, fmt.Errorf("round %d: hook for %s (failed %v), want the completion of %s", i, ev.id, ev.failed, id)
		}
		if i == 0 {
			continue
		}
		mu.Lock()
		s, f := started[id], finished[id]
		mu.Unlock()
		if s.IsZero() || f.IsZero() {
			return nil, fmt.Errorf("round %d: instance %s has no start or finish time", i, id)
		}
		toStart = append(toStart, ms(s.Sub(returned)))
		toHook = append(toHook, ms(ev.at.Sub(f)))
		round = append(round, ms(ev.at.Sub(called)))
	}
	for _, l := range [][]float64{toStart, toHook, round} {
		slices.Sort(l)
	}
	return []Result{
		metric("cross_service_start_p50_ms", percentileSorted(toStart, 50), "ms"),
		metric("cross_service_start_p99_ms", percentileSorted(toStart, 99), "ms"),
		metric("cross_service_notice_p50_ms", percentileSorted(toHook, 50), "ms"),
		metric("cross_service_notice_p99_ms", percentileSorted(toHook, 99), "ms"),
		metric("cross_service_roundtrip_p50_ms", percentileSorted(round, 50), "ms"),
		metric("cross_service_roundtrip_p99_ms", percentileSorted(round, 99), "ms"),
	}, nil
}
