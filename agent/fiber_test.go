package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
)

// Worker runs fibers.
type Worker struct{ agent.Agent[struct{}] }

func (w *Worker) OnError(ctx context.Context, err error) {
	sched.mu.Lock()
	sched.errs[w.Name()] = append(sched.errs[w.Name()], err)
	sched.mu.Unlock()
}

func workerEnv(t *testing.T) *env {
	return newEnv(t, envOptions{rt: agent.Options{IdleTimeout: time.Nanosecond}, setup: func(rt *agent.Runtime) {
		agent.MustRegister[Worker](rt, "Worker", agent.ClassOptions{})
	}})
}

func onWorker[R any](t *testing.T, e *env, name string, fn func(ctx context.Context, w *Worker) (R, error)) (R, error) {
	t.Helper()
	return agent.With(t.Context(), e.rt, name, fn)
}

func TestFiberLedger(t *testing.T) {
	t.Parallel()
	e := workerEnv(t)
	ctx := t.Context()
	w := uniq("w")

	// A fiber that stashes and completes, waited for.
	done, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (agent.FiberInfo, error) {
		return w.StartFiber(ctx, "count", func(ctx context.Context, f *agent.Fiber) error {
			for i := 1; i <= 3; i++ {
				if err := f.Stash(ctx, i); err != nil {
					return err
				}
			}
			var meta map[string]string
			if err := f.Metadata(&meta); err != nil || meta["by"] != "test" {
				return errors.New("metadata lost")
			}
			return nil
		}, agent.FiberOptions{IdempotencyKey: "k1", Metadata: map[string]string{"by": "test"}, WaitForCompletion: true})
	})
	if err != nil || done.Status != store.FiberCompleted || string(done.Stash) != "3" || !done.Created {
		t.Fatalf("completed fiber = %+v, %v", done, err)
	}
	// The same key returns it and runs nothing.
	again, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (agent.FiberInfo, error) {
		return w.StartFiber(ctx, "count", func(ctx context.Context, f *agent.Fiber) error {
			return errors.New("must not run")
		}, agent.FiberOptions{IdempotencyKey: "k1", WaitForCompletion: true})
	})
	if err != nil || again.ID != done.ID || again.Created {
		t.Fatalf("same key again = %+v, %v; want %s, not created", again, err, done.ID)
	}

	// A failing fiber ends in error and is reported.
	failed, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (agent.FiberInfo, error) {
		return w.StartFiber(ctx, "fail", func(ctx context.Context, f *agent.Fiber) error {
			return errors.New("disk full")
		}, agent.FiberOptions{ID: "my-id", WaitForCompletion: true})
	})
	if err == nil || failed.Status != store.FiberError || failed.Error != "disk full" || failed.ID != "my-id" {
		t.Fatalf("failed fiber = %+v, %v", failed, err)
	}
	eventually(t, 5*time.Second, "the error report", func() bool { return len(sched.errors(w)) == 1 })

	// A running fiber is cancelled cooperatively and ends aborted; it
	// cannot be deleted while it runs.
	started := make(chan struct{})
	running, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (agent.FiberInfo, error) {
		return w.StartFiber(ctx, "wait", func(ctx context.Context, f *agent.Fiber) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}, agent.FiberOptions{})
	})
	if err != nil || running.Status != store.FiberRunning {
		t.Fatalf("running fiber = %+v, %v", running, err)
	}
	<-started
	if e.rt.EvictIdle(ctx) != 0 {
		t.Fatal("an agent with a running fiber was evicted")
	}
	if _, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (bool, error) { return w.DeleteFiber(ctx, running.ID) }); err == nil {
		t.Fatal("deleted a running fiber")
	}
	if ok, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (bool, error) { return w.CancelFiber(ctx, running.ID) }); !ok || err != nil {
		t.Fatalf("cancel = %v, %v", ok, err)
	}
	eventually(t, 5*time.Second, "the aborted status", func() bool {
		f, _ := onWorker(t, e, w, func(ctx context.Context, w *Worker) (agent.FiberInfo, error) { return w.GetFiber(ctx, running.ID) })
		return f.Status == store.FiberAborted
	})

	list, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) ([]agent.FiberInfo, error) {
		return w.ListFibers(ctx, store.FiberFilter{})
	})
	if err != nil || len(list) != 3 {
		t.Fatalf("ledger = %d fibers, %v; want 3", len(list), err)
	}
	errs, _ := onWorker(t, e, w, func(ctx context.Context, w *Worker) ([]agent.FiberInfo, error) {
		return w.ListFibers(ctx, store.FiberFilter{Status: store.FiberError})
	})
	if len(errs) != 1 || errs[0].ID != "my-id" {
		t.Fatalf("fibers in error = %+v", errs)
	}
	for _, want := range []bool{true, false} {
		ok, err := onWorker(t, e, w, func(ctx context.Context, w *Worker) (bool, error) { return w.DeleteFiber(ctx, "my-id") })
		if err != nil || ok != want {
			t.Fatalf("delete = %v, %v; want %v", ok, err, want)
		}
	}
	// With its fibers done the agent is evicted again.
	eventually(t, 5*time.Second, "eviction", func() bool { return e.rt.EvictIdle(ctx) > 0 || e.rt.Live() == 0 })
}
