package workflowtest_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/workflow"
	"agentflow/workflowtest"
)

// order charges once, sleeps three days, then ships.
type order struct{ charges, ships *atomic.Int32 }

func (o order) Run(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
	if _, err := workflow.Do(step, "charge", func(ctx context.Context, a workflow.Attempt) (int, error) {
		return int(o.charges.Add(1)), nil
	}); err != nil {
		return "", err
	}
	if err := step.Sleep("cool-off", 72*time.Hour); err != nil {
		return "", err
	}
	return workflow.Do(step, "ship", func(ctx context.Context, a workflow.Attempt) (string, error) {
		o.ships.Add(1)
		return "shipped " + ev.Payload, nil
	})
}

func TestThreeDaySleepPassesAtOnce(t *testing.T) {
	t.Parallel()
	env := workflowtest.New(t, workflowtest.Options{})
	o := order{new(atomic.Int32), new(atomic.Int32)}
	workflowtest.Register(env, "order", workflow.Workflow[string, string](o))
	start := env.Clock.Now()
	begun := time.Now()
	run := env.Create("order", "book")
	st := run.Wait()
	if st.Status != workflow.StatusComplete || string(st.Output) != `"shipped book"` {
		t.Fatalf("status = %+v, output %s", st, st.Output)
	}
	if got := env.Clock.Since(start); got < 72*time.Hour {
		t.Errorf("virtual time passed = %s, want at least 72h", got)
	}
	if real := time.Since(begun); real > 5*time.Second {
		t.Errorf("a 3-day sleep took %s of real time", real)
	}
}

func TestStopAfterAndReplay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		stop        func(env *workflowtest.Env)
		wantCharges int32
	}{
		{"after charge committed", func(env *workflowtest.Env) { env.StopAfter("charge") }, 1},
		{"before charge ran", func(env *workflowtest.Env) { env.StopBefore("charge") }, 1},
		{"before ship", func(env *workflowtest.Env) { env.StopBefore("ship") }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := workflowtest.New(t, workflowtest.Options{})
			o := order{new(atomic.Int32), new(atomic.Int32)}
			workflowtest.Register(env, "order", workflow.Workflow[string, string](o))
			tc.stop(env)
			run := env.Create("order", "lamp")
			if st := run.Wait(); st.Status.Finished() {
				t.Fatalf("instance finished (%s) instead of stopping", st.Status)
			}
			if len(env.Stops()) != 1 {
				t.Fatalf("stops = %v, want 1", env.Stops())
			}
			env.Restart()
			if st := run.Wait(); st.Status != workflow.StatusComplete {
				t.Fatalf("after restart status = %+v", st)
			}
			if got := o.charges.Load(); got != tc.wantCharges {
				t.Errorf("charge ran %d times, want %d", got, tc.wantCharges)
			}
			if got := o.ships.Load(); got != 1 {
				t.Errorf("ship ran %d times, want 1", got)
			}
		})
	}
}
