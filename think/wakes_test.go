package think_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/pgtest"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// TestWakesOutbox: the outbox message of a turn that ended in one process
// (an agent's runner) reaches a workflow waiting for it in a third one,
// through the outbox loop of a second, within milliseconds, although the
// outbox loop and the engine poll every minute: the store's wakes tell
// the second process's outbox loop of the message and the third one's
// engine of the event.
func TestWakesOutbox(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var open func() store.Store
			switch backend {
			case "SQLite":
				path := filepath.Join(t.TempDir(), "think.db")
				open = func() store.Store {
					st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { st.Close() })
					return st
				}
			case "Postgres":
				dsn, schema := pgtest.Schema(t)
				open = func() store.Store {
					st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 4})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { st.Close() })
					return st
				}
			}
			ctx := t.Context()
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			engine := func(st store.Store, service string, register func(*workflow.Engine)) *workflow.Engine {
				eng, err := workflow.NewEngine(workflow.Options{Store: st, Service: service, PollInterval: time.Minute, Logger: logger})
				if err != nil {
					t.Fatal(err)
				}
				if register != nil {
					register(eng)
				}
				if err := eng.Start(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { eng.Stop(context.Background()) })
				return eng
			}
			runner := open()

			// The outbox loop's process: a runtime with a Think class.
			eng2 := engine(open(), "agents", nil)
			rt, err := agent.NewRuntime(agent.Options{Engine: eng2, PollInterval: time.Minute, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			think.MustRegister[Helper](rt, "Helper", think.Options{Model: scripted.New(), System: "You help."})
			if err := rt.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Stop(context.Background()) })

			// The workflow's process.
			woke := make(chan time.Time, 16)
			eng3 := engine(open(), "workflows", func(eng *workflow.Engine) {
				workflow.MustRegister(eng, "waiter", workflow.Func[struct{}, struct{}](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
					if _, err := workflow.WaitForEvent[json.RawMessage](step, "answer", workflow.WaitOptions{Type: "answer", Timeout: time.Hour}); err != nil {
						return struct{}{}, err
					}
					woke <- time.Now()
					return struct{}{}, nil
				}))
			})

			key := store.AgentKey{Class: "Helper", Name: "h"}
			var lat []time.Duration
			for i := range 5 {
				inst, err := eng3.Create(ctx, "waiter", workflow.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				eventually(t, 10*time.Second, "the workflow to wait", func() bool {
					s, err := inst.Status(ctx)
					return err == nil && s.Status == workflow.StatusWaiting
				})
				id := "sub" + string(rune('a'+i))
				now := time.Now()
				if _, _, err := runner.CreateSubmission(ctx, &store.Submission{ID: id, AgentKey: key, Messages: []byte(`[]`),
					Status: store.SubmissionPending, NotifyInstance: inst.ID, NotifyEvent: "answer", CreatedAt: now}); err != nil {
					t.Fatal(err)
				}
				if _, err := runner.StartSubmission(ctx, key, "runner-node", now); err != nil {
					t.Fatal(err)
				}
				began := time.Now()
				if err := runner.FinishSubmission(ctx, key, id, "runner-node", store.SubmissionCompleted, "", []byte(`{"ok":true}`), store.Usage{}, began); err != nil {
					t.Fatal(err)
				}
				// Typically milliseconds (logged below); the bound leaves
				// room for a loaded machine.
				select {
				case at := <-woke:
					lat = append(lat, at.Sub(began))
				case <-time.After(15 * time.Second):
					t.Fatalf("the workflow did not get the outcome of %s within 15 s", id)
				}
			}
			slices.Sort(lat)
			t.Logf("turn finished → its workflow woke: %v", lat)
		})
	}
}
