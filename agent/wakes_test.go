package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/engineseam"
	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// wakeTracker starts jobs of another service and notes when it hears of
// each one's completion.
type wakeTracker struct {
	agent.Agent[struct{}]
}

// wakeHooks maps a test's tracker name to where its hook reports.
var wakeHooks sync.Map // name → chan string

func (a *wakeTracker) OnWorkflowComplete(_ context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	if ch, ok := wakeHooks.Load(a.Name()); ok {
		ch.(chan string) <- wf.ID
	}
}

// TestWakesCrossServiceNotice: an agent of one process starts a workflow
// of a service that another process runs (each with its own store handle),
// and hears of its completion within milliseconds, although every engine
// and runtime polls only every minute: the store's wakes carry the queued
// instance to the other process and the finish notice back.
func TestWakesCrossServiceNotice(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var open func() store.Store
			switch backend {
			case "sqlite":
				path := filepath.Join(t.TempDir(), "wakes.db")
				open = func() store.Store {
					st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
					if err != nil {
						t.Fatal(err)
					}
					return st
				}
			case "postgres":
				dsn, schema := pgtest.Schema(t)
				open = func() store.Store {
					st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 4})
					if err != nil {
						t.Fatal(err)
					}
					return st
				}
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			stop := func(f func(context.Context) error) {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					f(ctx)
				})
			}

			// Process 1: the agents, of service "agents".
			st1 := open()
			t.Cleanup(func() { st1.Close() })
			eng1, err := workflow.NewEngine(workflow.Options{Store: st1, Service: "agents", PollInterval: time.Minute, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			rt, err := agent.NewRuntime(agent.Options{Engine: eng1, PollInterval: time.Minute, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			agent.MustRegister[wakeTracker](rt, "WakeTracker", agent.ClassOptions{})
			if err := rt.Bind("JOB", agent.Binding{Workflow: "job", Service: "jobs"}); err != nil {
				t.Fatal(err)
			}
			if err := eng1.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			stop(eng1.Stop)
			if err := rt.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			stop(rt.Stop)

			// Process 2: the workers of service "jobs".
			st2 := open()
			t.Cleanup(func() { st2.Close() })
			eng2, err := workflow.NewEngine(workflow.Options{Store: st2, Service: "jobs", PollInterval: time.Minute, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			startedAt, finishedAt := map[string]time.Time{}, map[string]time.Time{}
			workflow.MustRegister(eng2, "job", workflow.Func[struct{}, struct{}](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
				mu.Lock()
				startedAt[ev.InstanceID] = time.Now()
				mu.Unlock()
				return struct{}{}, nil
			}))
			eng2.Seam(engineseam.Key{}).OnFinished(func(id string, _ store.AgentKey) {
				mu.Lock()
				finishedAt[id] = time.Now()
				mu.Unlock()
			})
			if err := eng2.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			stop(eng2.Stop)

			name := "t-" + backend
			hooked := make(chan string, 16)
			wakeHooks.Store(name, hooked)
			defer wakeHooks.Delete(name)
			var toStart, toHook []time.Duration
			for range 5 {
				var began time.Time
				id, err := agent.With(t.Context(), rt, name, func(ctx context.Context, a *wakeTracker) (string, error) {
					began = time.Now()
					return a.RunWorkflow(ctx, "JOB", struct{}{})
				})
				if err != nil {
					t.Fatal(err)
				}
				// Typically milliseconds (logged below); the bound leaves
				// room for a loaded machine, and only wakes can meet it
				// while everything polls every minute.
				select {
				case got := <-hooked:
					if got != id {
						t.Fatalf("hook for %s, want %s", got, id)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("no completion hook for %s within 15 s", id)
				}
				hookAt := time.Now()
				mu.Lock()
				toStart = append(toStart, startedAt[id].Sub(began))
				toHook = append(toHook, hookAt.Sub(finishedAt[id]))
				mu.Unlock()
			}
			slices.Sort(toStart)
			slices.Sort(toHook)
			t.Logf("RunWorkflow → started in the other process: %v", toStart)
			t.Logf("finished there → the agent's hook here: %v", toHook)
		})
	}
}
