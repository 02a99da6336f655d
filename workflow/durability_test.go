package workflow_test

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/workflow"
	"agentflow/workflowtest"
)

// DESIGN §2.3: a step that was running when its process died runs again, with
// the same attempt number and idempotency key.
func TestStepCutOffByCrashRunsAgain(t *testing.T) {
	t.Parallel()
	type call struct {
		Key    string
		Number int
	}
	var calls list[call]
	started := make(chan struct{}, 2)
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		return workflow.Do(step, "send-mail", func(ctx context.Context, a workflow.Attempt) (string, error) {
			calls.add(call{a.IdempotencyKey, a.Number})
			if calls.len() == 1 { // the process dies while this runs
				started <- struct{}{}
				<-ctx.Done()
				return "", ctx.Err()
			}
			return "sent", nil
		})
	})
	run := env.CreateWith("w", workflow.CreateOptions{ID: "mail-1"})
	recv(t, started, "the step to start")
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	if err := env.Engine().Stop(ctx); err != nil { // cuts the step off
		t.Fatal(err)
	}
	if got := run.Steps(); len(got) != 0 {
		t.Fatalf("checkpoints after the crash = %+v, want none", got)
	}
	env.Restart()
	wantOutput(t, run.Wait(), "sent")
	want := []call{{"mail-1:send-mail:0", 1}, {"mail-1:send-mail:0", 1}}
	if got := calls.get(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
}

// DESIGN §2.3: timers survive a restart, and one that fell due while no
// engine ran fires as soon as an engine starts.
func TestOverdueTimerFiresOnStart(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		if err := step.Sleep("nap", time.Hour); err != nil {
			return "", err
		}
		return "rested", nil
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	if err := env.Engine().Stop(bg); err != nil {
		t.Fatal(err)
	}
	env.Clock.Advance(3 * time.Hour) // while no engine runs
	env.Restart()
	wantOutput(t, run.Settle(), "rested") // no further clock advance needed
	if got := finishedAfter(t, env, run.ID); got != 3*time.Hour {
		t.Errorf("finished at %s, want 3h", got)
	}
}

// DESIGN §2.3: a worker whose claim was taken away (here by Restart while its
// step ran) cannot commit the step's result.
func TestFencedWorkerCannotCommit(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int32, error) {
		return workflow.Do(step, "count", func(ctx context.Context, a workflow.Attempt) (int32, error) {
			n := calls.Add(1)
			if n == 1 {
				started <- struct{}{}
				<-release
			}
			return n, nil
		})
	})
	run := env.Create("w", 0)
	recv(t, started, "the first execution's step to start")
	if err := run.Restart(bg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the second execution completes", func() bool { return status(t, run.Instance).Status == workflow.StatusComplete })
	close(release) // the first execution now tries to commit 1
	wantOutput(t, run.Settle(), 2)
	steps := run.Steps()
	if len(steps) != 1 || string(steps[0].Result) != "2" {
		t.Errorf("checkpoints = %+v, want one with result 2", steps)
	}
}
