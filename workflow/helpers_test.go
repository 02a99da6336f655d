package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/workflow"
	"agentflow/workflowtest"
)

// Helpers shared by the engine's behaviour tests. The tests drive real
// engines on temporary SQLite stores through package workflowtest, with a
// virtual clock that starts at t0.

var bg = context.Background()

// runFunc is the signature of a workflow's Run method.
type runFunc[P, O any] func(ctx context.Context, ev workflow.Event[P], step *workflow.Step) (O, error)

// newEnv returns a workflowtest environment with fn registered as class "w".
func newEnv[P, O any](t *testing.T, opts workflowtest.Options, fn runFunc[P, O]) *workflowtest.Env {
	t.Helper()
	env := workflowtest.New(t, opts)
	workflowtest.Register(env, "w", workflow.Func[P, O](fn))
	return env
}

// elapsed is how much virtual time has passed since the env's start.
func elapsed(env *workflowtest.Env) time.Duration {
	return env.Clock.Since(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// finishedAfter returns how long after the env's start the instance finished.
func finishedAfter(t *testing.T, env *workflowtest.Env, id string) time.Duration {
	t.Helper()
	in, err := env.Store.GetInstance(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	if in.FinishedAt.IsZero() {
		t.Fatalf("instance %s (%s) has not finished", id, in.Status)
	}
	return in.FinishedAt.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// list is a slice that step functions (which run on their own goroutines)
// append to and tests read.
type list[T any] struct {
	mu    sync.Mutex
	items []T
}

func (l *list[T]) add(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, v)
}

func (l *list[T]) get() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}

func (l *list[T]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}

// wantStatus fails unless st has the wanted status.
func wantStatus(t *testing.T, st workflow.InstanceStatus, want workflow.Status) {
	t.Helper()
	if st.Status != want {
		t.Fatalf("status = %s (error %+v, output %s), want %s", st.Status, st.Error, st.Output, want)
	}
}

// status returns the instance's status, failing the test on error.
func status(t *testing.T, inst *workflow.Instance) workflow.InstanceStatus {
	t.Helper()
	st, err := inst.Status(bg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wantOutput fails unless the instance completed with output equal to want
// once both are encoded as JSON.
func wantOutput(t *testing.T, st workflow.InstanceStatus, want any) {
	t.Helper()
	wantStatus(t, st, workflow.StatusComplete)
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(st.Output) != string(b) {
		t.Fatalf("output = %s, want %s", st.Output, b)
	}
}

// wantErrorInfo fails unless the instance errored with this name and a
// message containing every part.
func wantErrorInfo(t *testing.T, st workflow.InstanceStatus, name string, parts ...string) {
	t.Helper()
	wantStatus(t, st, workflow.StatusErrored)
	if st.Error == nil {
		t.Fatal("errored instance has no error")
	}
	if st.Error.Name != name {
		t.Errorf("error name = %q, want %q (message %q)", st.Error.Name, name, st.Error.Message)
	}
	for _, p := range parts {
		if !strings.Contains(st.Error.Message, p) {
			t.Errorf("error message %q does not mention %q", st.Error.Message, p)
		}
	}
}

// wantErr fails unless err matches target and its message contains every part.
func wantErr(t *testing.T, err, target error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("err = %v (%T), want one matching %v", err, err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

// recv receives from ch or fails after a real-time timeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// eventually polls cond in real time until it holds or fails the test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stepNames lists a run's checkpoints as "name/state".
func stepNames(r *workflowtest.Run) []string {
	var out []string
	for _, s := range r.Steps() {
		out = append(out, s.Name+"/"+string(s.State))
	}
	return out
}
