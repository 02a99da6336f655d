package agent_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// env is a runtime on a fresh SQLite store.
type env struct {
	t     *testing.T
	store store.Store
	eng   *workflow.Engine
	rt    *agent.Runtime
	clock clockwork.Clock
}

type envOptions struct {
	clock clockwork.Clock // default real
	store store.Store     // default a new SQLite file
	rt    agent.Options   // Engine is filled in
	setup func(rt *agent.Runtime)
	// workflows registers workflow classes, which may call rt's agents.
	workflows func(eng *workflow.Engine, rt *agent.Runtime)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	ctx := t.Context()
	st := o.store
	if st == nil {
		var err error
		st, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "agents.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	if o.clock == nil {
		o.clock = clockwork.NewRealClock()
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Clock: o.clock, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	o.rt.Engine = eng
	if o.rt.Logger == nil {
		o.rt.Logger = logger
	}
	rt, err := agent.NewRuntime(o.rt)
	if err != nil {
		t.Fatal(err)
	}
	if o.setup != nil {
		o.setup(rt)
	}
	if o.workflows != nil {
		o.workflows(eng, rt)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Stop(sctx); err != nil {
			t.Errorf("stop runtime: %v", err)
		}
		if err := eng.Stop(sctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
	return &env{t: t, store: st, eng: eng, rt: rt, clock: o.clock}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
