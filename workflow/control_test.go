package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/store"
	"agentflow/workflow"
	"agentflow/workflowtest"
)

// DESIGN §2.2: the statuses have exactly these names.
func TestStatusNames(t *testing.T) {
	t.Parallel()
	for st, want := range map[workflow.Status]string{
		workflow.StatusQueued:          "queued",
		workflow.StatusRunning:         "running",
		workflow.StatusPaused:          "paused",
		workflow.StatusErrored:         "errored",
		workflow.StatusTerminated:      "terminated",
		workflow.StatusComplete:        "complete",
		workflow.StatusWaiting:         "waiting",
		workflow.StatusWaitingForPause: "waitingForPause",
		workflow.StatusUnknown:         "unknown",
	} {
		if string(st) != want {
			t.Errorf("status %q, want %q", st, want)
		}
		if got, want := st.Finished(), want == "errored" || want == "terminated" || want == "complete"; got != want {
			t.Errorf("%s.Finished() = %v, want %v", st, got, want)
		}
	}
}

// blocker is a step function that signals when it starts and then blocks
// until released.
type blocker struct {
	started  chan struct{}
	release  chan struct{}
	runs     atomic.Int32
	released atomic.Bool
}

func newBlocker(t *testing.T) *blocker {
	b := &blocker{started: make(chan struct{}, 8), release: make(chan struct{})}
	t.Cleanup(b.unblock) // never leave an execution hanging for the env's Stop
	return b
}

func (b *blocker) unblock() {
	if b.released.CompareAndSwap(false, true) {
		close(b.release)
	}
}

func (b *blocker) fn(ctx context.Context, a workflow.Attempt) (string, error) {
	b.runs.Add(1)
	b.started <- struct{}{}
	<-b.release
	return "worked", nil
}

// blocking is a workflow: a step that blocks, then a second step.
func blocking(b *blocker, next *atomic.Int32) runFunc[int, string] {
	return func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		v, err := workflow.Do(step, "work", b.fn)
		if err != nil {
			return "", err
		}
		return workflow.Do(step, "next", func(ctx context.Context, a workflow.Attempt) (string, error) {
			next.Add(1)
			return v + "+next", nil
		})
	}
}

// DESIGN §2.2: an instance running a step is running; pausing it is
// waitingForPause until the step ends, then paused with the step's result
// kept; Resume continues after that step.
func TestPauseWhileStepRuns(t *testing.T) {
	t.Parallel()
	b := newBlocker(t)
	var next atomic.Int32
	env := newEnv(t, workflowtest.Options{}, blocking(b, &next))
	run := env.Create("w", 0)
	recv(t, b.started, "the step to start")
	wantStatus(t, status(t, run.Instance), workflow.StatusRunning)
	if err := run.Pause(bg); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, status(t, run.Instance), workflow.StatusWaitingForPause)
	if err := run.Pause(bg); err != nil { // asking again changes nothing
		t.Fatal(err)
	}
	wantStatus(t, status(t, run.Instance), workflow.StatusWaitingForPause)
	b.unblock()
	wantStatus(t, run.Settle(), workflow.StatusPaused)
	if got := stepNames(run); !reflect.DeepEqual(got, []string{"work/done"}) {
		t.Fatalf("checkpoints while paused = %v, want the finished step kept", got)
	}
	if s := run.Steps()[0]; string(s.Result) != `"worked"` {
		t.Errorf("kept result = %s", s.Result)
	}
	env.Advance(time.Hour)
	wantStatus(t, run.Settle(), workflow.StatusPaused)
	if next.Load() != 0 {
		t.Fatal("the next step ran while paused")
	}
	if err := run.Resume(bg); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, run.Wait(), "worked+next")
	if b.runs.Load() != 1 || next.Load() != 1 {
		t.Errorf("work ran %d times, next %d times; want 1 and 1", b.runs.Load(), next.Load())
	}
	wantErr(t, run.Resume(bg), workflow.ErrNotPaused, run.ID)
}

// Resuming before the step ends cancels the pause request.
func TestResumeCancelsPauseRequest(t *testing.T) {
	t.Parallel()
	b := newBlocker(t)
	var next atomic.Int32
	env := newEnv(t, workflowtest.Options{}, blocking(b, &next))
	run := env.Create("w", 0)
	recv(t, b.started, "the step to start")
	if err := run.Pause(bg); err != nil {
		t.Fatal(err)
	}
	if err := run.Resume(bg); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, status(t, run.Instance), workflow.StatusRunning)
	b.unblock()
	wantOutput(t, run.Settle(), "worked+next")
}

// DESIGN §2.2: pausing a waiting instance pauses it at once; Resume shifts
// its pending sleep, retry and event-timeout timers by the paused time.
func TestPauseResumeShiftsTimers(t *testing.T) {
	t.Parallel()
	m := time.Minute
	for _, tc := range []struct {
		name      string
		run       func(env **workflowtest.Env) runFunc[int, string]
		pauseAt   time.Duration
		pausedFor time.Duration
		wantAt    time.Duration // when it completes
		output    string
	}{
		{"sleep", func(env **workflowtest.Env) runFunc[int, string] {
			return func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				if err := step.Sleep("nap", 10*time.Hour); err != nil {
					return "", err
				}
				return workflow.Do(step, "after", func(ctx context.Context, a workflow.Attempt) (string, error) {
					return "woke at " + elapsed(*env).String(), nil
				})
			}
		}, 3 * time.Hour, 2 * time.Hour, 12 * time.Hour, "woke at 12h0m0s"},
		{"retry delay", func(env **workflowtest.Env) runFunc[int, string] {
			return func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				return workflow.DoWith(step, "flaky", workflow.StepConfig{
					Retries: &workflow.Retries{Limit: 1, Delay: 10 * m, Backoff: workflow.BackoffConstant},
				}, func(ctx context.Context, a workflow.Attempt) (string, error) {
					if a.Number == 1 {
						return "", errors.New("try later")
					}
					return fmt.Sprintf("attempt %d at %s", a.Number, elapsed(*env)), nil
				})
			}
		}, 4 * m, 30 * m, 40 * m, "attempt 2 at 40m0s"},
		{"event timeout", func(env **workflowtest.Env) runFunc[int, string] {
			return func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				_, err := step.WaitForEvent("approval", workflow.WaitOptions{Type: "approved", Timeout: time.Hour})
				if !errors.Is(err, workflow.ErrTimeout) {
					return "", fmt.Errorf("want a timeout, got %v", err)
				}
				return "timed out", nil
			}
		}, 15 * m, 45 * m, 105 * m, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var env *workflowtest.Env
			env = newEnv(t, workflowtest.Options{}, tc.run(&env))
			run := env.Create("w", 0)
			if st := run.Settle(); st.Status != workflow.StatusWaiting && st.Status != workflow.StatusRunning {
				t.Fatalf("status = %s, want waiting or running (backing off)", st.Status)
			}
			env.Advance(tc.pauseAt)
			before := run.Settle().Status
			if err := run.Pause(bg); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, status(t, run.Instance), workflow.StatusPaused)
			env.Advance(tc.pausedFor)
			wantStatus(t, run.Settle(), workflow.StatusPaused)
			wantStatus(t, run.Wait(), workflow.StatusPaused) // Wait does not advance a paused instance
			if err := run.Resume(bg); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, status(t, run.Instance), before)
			wantOutput(t, run.Wait(), tc.output)
			if got := finishedAfter(t, env, run.ID); got != tc.wantAt {
				t.Errorf("finished at %s, want %s", got, tc.wantAt)
			}
		})
	}
}

// An event sent while an instance is paused is buffered and wakes it once
// it is resumed.
func TestEventWhilePausedWakesAfterResume(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		return workflow.WaitForEvent[string](step, "go", workflow.WaitOptions{Type: "go"})
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	if err := run.Pause(bg); err != nil {
		t.Fatal(err)
	}
	if err := run.SendEvent(bg, "go", "green"); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, run.Settle(), workflow.StatusPaused)
	env.Advance(time.Hour)
	wantStatus(t, run.Settle(), workflow.StatusPaused)
	if err := run.Resume(bg); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, run.Settle(), "green")
	if got := finishedAfter(t, env, run.ID); got != time.Hour {
		t.Errorf("finished at %s, want 1h (at the resume)", got)
	}
}

// DESIGN §2.2 Terminate: a running, waiting or paused instance becomes
// terminated; a worker still running its step cannot commit afterwards.
func TestTerminate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run, b *blocker)
	}{
		{"running", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run, b *blocker) {
			recv(t, b.started, "the step to start")
			wantStatus(t, status(t, run.Instance), workflow.StatusRunning)
		}},
		{"waiting", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run, b *blocker) {
			b.unblock()
			wantStatus(t, run.Settle(), workflow.StatusWaiting)
		}},
		{"paused", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run, b *blocker) {
			b.unblock()
			wantStatus(t, run.Settle(), workflow.StatusWaiting)
			if err := run.Pause(bg); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBlocker(t)
			var after atomic.Int32
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				if _, err := workflow.Do(step, "work", b.fn); err != nil {
					return "", err
				}
				if err := step.Sleep("nap", time.Hour); err != nil {
					return "", err
				}
				return workflow.Do(step, "after", func(ctx context.Context, a workflow.Attempt) (string, error) {
					after.Add(1)
					return "done", nil
				})
			})
			run := env.Create("w", 0)
			tc.setup(t, env, run, b)
			stepsBefore := stepNames(run)
			if tc.name == "running" {
				stepsBefore = nil // "work" has not committed
			}
			if err := run.Terminate(bg); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, status(t, run.Instance), workflow.StatusTerminated)
			b.unblock() // a running worker now tries to commit "work"
			st := run.Wait()
			wantStatus(t, st, workflow.StatusTerminated)
			if st.Error != nil || st.Output != nil {
				t.Errorf("terminated instance has error %+v, output %s", st.Error, st.Output)
			}
			if got := stepNames(run); !reflect.DeepEqual(got, stepsBefore) {
				t.Errorf("checkpoints = %v, want %v (nothing committed after terminate)", got, stepsBefore)
			}
			env.Advance(2 * time.Hour)
			wantStatus(t, run.Settle(), workflow.StatusTerminated)
			if after.Load() != 0 {
				t.Error("a step ran after terminate")
			}
			if b.runs.Load() != 1 {
				t.Errorf("work ran %d times, want 1", b.runs.Load())
			}
			wantErr(t, run.Terminate(bg), workflow.ErrFinished, `"`+run.ID+`"`, "terminated")
			wantErr(t, run.Pause(bg), workflow.ErrFinished, `"`+run.ID+`"`, "terminated")
			wantErr(t, run.SendEvent(bg, "x", 1), workflow.ErrFinished, `"`+run.ID+`"`, "terminated")
			wantErr(t, run.Resume(bg), workflow.ErrNotPaused, `"`+run.ID+`"`)
			wantStatus(t, status(t, run.Instance), workflow.StatusTerminated)
		})
	}
}

// DESIGN §2.2: terminating, pausing or sending an event to a finished
// instance is an error naming it; nothing changes.
func TestFinishedInstanceRefusesControl(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[bool], step *workflow.Step) (string, error) {
		if ev.Payload {
			return "", errors.New("asked to fail")
		}
		return "fine", nil
	})
	for _, tc := range []struct {
		fail bool
		want workflow.Status
	}{{false, workflow.StatusComplete}, {true, workflow.StatusErrored}} {
		run := env.Create("w", tc.fail)
		before := run.Wait()
		wantStatus(t, before, tc.want)
		in, err := env.Store.GetInstance(bg, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, run.Terminate(bg), workflow.ErrFinished, `"`+run.ID+`"`, string(tc.want))
		wantErr(t, run.Pause(bg), workflow.ErrFinished, `"`+run.ID+`"`, string(tc.want))
		wantErr(t, run.SendEvent(bg, "late", "x"), workflow.ErrFinished, `"`+run.ID+`"`, string(tc.want))
		var ie *store.InstanceError
		if err := run.Terminate(bg); !errors.As(err, &ie) || ie.ID != run.ID || string(ie.Status) != string(tc.want) {
			t.Errorf("Terminate error = %#v, want an InstanceError naming %s and %s", err, run.ID, tc.want)
		}
		after, err := env.Store.GetInstance(bg, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, after) {
			t.Errorf("instance changed:\n%+v\n%+v", in, after)
		}
		if evs, _ := env.Store.ListEvents(bg, run.ID); len(evs) != 0 {
			t.Errorf("events stored for a finished instance: %+v", evs)
		}
	}
}

// DESIGN §2.2 Restart: a complete, errored or terminated instance runs again
// from the start; consumed events are gone, so a wait needs a new event;
// Step.Restarts counts the run.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		end   func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run)
		first workflow.Status
	}{
		{"complete", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run) {
			if err := run.SendEvent(bg, "go", 1); err != nil {
				t.Fatal(err)
			}
		}, workflow.StatusComplete},
		{"errored", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run) {
			if err := run.SendEvent(bg, "go", -1); err != nil {
				t.Fatal(err)
			}
		}, workflow.StatusErrored},
		{"terminated", func(t *testing.T, env *workflowtest.Env, run *workflowtest.Run) {
			if err := run.Terminate(bg); err != nil {
				t.Fatal(err)
			}
		}, workflow.StatusTerminated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var starts atomic.Int32
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
				n, err := workflow.Do(step, "start", func(ctx context.Context, a workflow.Attempt) (int32, error) {
					return starts.Add(1), nil
				})
				if err != nil {
					return 0, err
				}
				v, err := workflow.WaitForEvent[int](step, "go", workflow.WaitOptions{Type: "go"})
				if err != nil {
					return 0, err
				}
				if v < 0 {
					return 0, workflow.NonRetryable(errors.New("negative"))
				}
				// Restarts names the run: 0, then 1, on every replay.
				return step.Restarts()*1000 + int(n)*100 + v, nil
			})
			run := env.Create("w", 0)
			wantStatus(t, run.Settle(), workflow.StatusWaiting)
			tc.end(t, env, run)
			wantStatus(t, run.Settle(), tc.first)

			env.Advance(time.Minute)
			if err := run.Restart(bg); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, run.Settle(), workflow.StatusWaiting)
			if got := stepNames(run); !reflect.DeepEqual(got, []string{"start/done", "go/pending"}) {
				t.Errorf("checkpoints after restart = %v", got)
			}
			if starts.Load() != 2 {
				t.Errorf("first step ran %d times, want 2", starts.Load())
			}
			st := status(t, run.Instance)
			if st.Error != nil || st.Output != nil {
				t.Errorf("restarted instance kept error %+v, output %s", st.Error, st.Output)
			}
			if err := run.SendEvent(bg, "go", 7); err != nil {
				t.Fatal(err)
			}
			wantOutput(t, run.Settle(), 1207)
			if got := finishedAfter(t, env, run.ID); got != time.Minute {
				t.Errorf("finished at %s, want 1m", got)
			}
		})
	}
}

// Every control operation on a missing instance fails with ErrNotFound
// naming it.
func TestControlMissingInstance(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) { return 0, nil })
	e := env.Engine()
	_, err := e.Get(bg, "ghost")
	wantErr(t, err, workflow.ErrNotFound, `"ghost"`)
	// A handle on this engine for an id that does not exist.
	missing := *run0(t, env).Instance
	missing.ID = "ghost"
	st, err := missing.Status(bg)
	wantErr(t, err, workflow.ErrNotFound, `"ghost"`)
	if st.Status != workflow.StatusUnknown {
		t.Errorf("status of a missing instance = %s, want unknown", st.Status)
	}
	for name, op := range map[string]func() error{
		"pause":      func() error { return missing.Pause(bg) },
		"resume":     func() error { return missing.Resume(bg) },
		"terminate":  func() error { return missing.Terminate(bg) },
		"restart":    func() error { return missing.Restart(bg) },
		"send event": func() error { return missing.SendEvent(bg, "x", 1) },
	} {
		t.Run(name, func(t *testing.T) { wantErr(t, op(), workflow.ErrNotFound, `"ghost"`) })
	}
}

func run0(t *testing.T, env *workflowtest.Env) *workflowtest.Run {
	t.Helper()
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusComplete)
	return run
}
