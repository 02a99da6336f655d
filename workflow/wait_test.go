package workflow_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// startEngine starts a real engine on st, with gate's workflow "w": it
// waits for an event "go" whose payload says how to end.
func startEngine(t *testing.T, st *sqlite.Store, service string, poll time.Duration) *workflow.Engine {
	t.Helper()
	e, err := workflow.NewEngine(workflow.Options{Store: st, Service: service, PollInterval: poll})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(e, "w", workflow.Func[string, string](func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
		how, err := workflow.WaitForEvent[string](step, "go", workflow.WaitOptions{Type: "go"})
		if err != nil {
			return "", err
		}
		if how == "fail" {
			return "", workflow.NonRetryable(errors.New("told to fail"))
		}
		return ev.Payload + " " + how, nil
	}))
	if err := e.Start(bg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(bg) })
	return e
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "wait.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// Result returns an instance's output, error or termination once it
// finishes. With an hour between looks at the store, only the engine's own
// wake-up can end these waits within the test's deadline.
func TestResult(t *testing.T) {
	t.Parallel()
	e := startEngine(t, openStore(t), "", time.Hour)
	cases := []struct {
		name    string
		end     func(*workflow.Instance) error
		want    string
		wantErr func(error) bool
	}{
		{"complete", func(i *workflow.Instance) error { return i.SendEvent(bg, "go", "done") }, "hi done", nil},
		{"errored", func(i *workflow.Instance) error { return i.SendEvent(bg, "go", "fail") }, "", func(err error) bool {
			var ie *workflow.InstanceError
			return errors.As(err, &ie) && ie.Message == "told to fail"
		}},
		{"terminated", func(i *workflow.Instance) error { return i.Terminate(bg) }, "", func(err error) bool {
			return errors.Is(err, workflow.ErrTerminated)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst, err := e.Create(bg, "w", workflow.CreateOptions{Params: "hi"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(bg, 20*time.Second)
			defer cancel()
			type result struct {
				out string
				err error
			}
			got := make(chan result, 1)
			go func() {
				out, err := workflow.Result[string](ctx, inst)
				got <- result{out, err}
			}()
			eventually(t, "the instance waits", func() bool { return status(t, inst).Status == workflow.StatusWaiting })
			if err := tc.end(inst); err != nil {
				t.Fatal(err)
			}
			r := <-got
			switch {
			case tc.wantErr == nil && (r.err != nil || r.out != tc.want):
				t.Fatalf("Result = %q, %v; want %q", r.out, r.err, tc.want)
			case tc.wantErr != nil && !tc.wantErr(r.err):
				t.Fatalf("Result = %q, %v; not the error wanted", r.out, r.err)
			}
		})
	}
}

// An instance that finishes on another engine of the store (as in another
// process) is seen by looking at the store.
func TestWaitAcrossEngines(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	worker := startEngine(t, st, "workers", time.Hour)
	watcher, err := workflow.NewEngine(workflow.Options{Store: st, Service: "watchers", PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := worker.Create(bg, "w", workflow.CreateOptions{Params: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	seen, err := watcher.Get(bg, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the instance waits", func() bool { return status(t, inst).Status == workflow.StatusWaiting })
	if err := inst.SendEvent(bg, "go", "there"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	s, err := seen.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, s, "hi there")
}

// Wait gives up when its context ends, saying which instance it waited for.
func TestWaitContextEnds(t *testing.T) {
	t.Parallel()
	e := startEngine(t, openStore(t), "", 10*time.Millisecond)
	inst, err := e.Create(bg, "w", workflow.CreateOptions{Params: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	s, err := inst.Wait(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %+v, %v; want context.DeadlineExceeded", s, err)
	}
	if s.Status.Finished() {
		t.Fatalf("Wait returned finished status %s for an unfinished instance", s.Status)
	}
}
