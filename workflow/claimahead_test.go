package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// TestClaimAhead checks the claim ahead of a timer: the instance is claimed
// and replayed, and its sleep's checkpoint written, before the sleep ends,
// yet the step after the sleep never starts before the end; an engine
// stopped while an instance waits in memory hands it over, and the next
// engine replays the completed sleep and still waits for its end.
func TestClaimAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	st, err := sqlite.Open(bg, path, sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	var (
		mu     sync.Mutex
		before = map[string]time.Time{}
		after  = map[string]time.Time{}
	)
	const nap = 600 * time.Millisecond
	newEngine := func() *workflow.Engine {
		e, err := workflow.NewEngine(workflow.Options{Store: st, ClaimAhead: 400 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		workflow.MustRegister(e, "w", workflow.Func[struct{}, struct{}](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
			mu.Lock()
			if _, ok := before[ev.InstanceID]; !ok {
				before[ev.InstanceID] = time.Now()
			}
			mu.Unlock()
			if err := step.Sleep("nap", nap); err != nil {
				return struct{}{}, err
			}
			_, err := workflow.Do(step, "next", func(context.Context, workflow.Attempt) (int, error) {
				mu.Lock()
				if _, ok := after[ev.InstanceID]; !ok {
					after[ev.InstanceID] = time.Now()
				}
				mu.Unlock()
				return 1, nil
			})
			return struct{}{}, err
		}))
		if err := e.Start(bg); err != nil {
			t.Fatal(err)
		}
		return e
	}

	// One instance runs through; another is stopped while it waits.
	e := newEngine()
	done, err := e.Create(bg, "w", workflow.CreateOptions{ID: "done"})
	if err != nil {
		t.Fatal(err)
	}
	st1, err := done.Wait(bg)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, st1, workflow.StatusComplete)

	stopped, err := e.Create(bg, "w", workflow.CreateOptions{ID: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	// Claimed ahead, the sleep's checkpoint is written before its end.
	eventually(t, "the sleep completed ahead of its end", func() bool {
		in, err := st.GetInstance(bg, stopped.ID)
		if err != nil {
			t.Fatal(err)
		}
		steps, err := st.ListSteps(bg, stopped.ID)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		began, ok := before[stopped.ID]
		mu.Unlock()
		if !ok {
			return false
		}
		if since := time.Since(began); since >= nap {
			t.Fatalf("the sleep ended (%s after it began) before it was seen completed ahead", since)
		}
		return in.Owner != "" && len(steps) == 1 && steps[0].State == store.StepDone
	})
	stopAt := time.Now()
	if err := e.Stop(bg); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(stopAt); d > 200*time.Millisecond {
		t.Errorf("Stop took %s with an instance waiting in memory", d)
	}
	e2 := newEngine()
	defer e2.Stop(bg)
	in2, err := e2.Get(bg, stopped.ID)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := in2.Wait(bg)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, st2, workflow.StatusComplete)

	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"done", "stopped"} {
		if late := after[id].Sub(before[id].Add(nap)); late < 0 {
			t.Errorf("instance %s: the step after the sleep started %s before the sleep's end", id, -late)
		}
	}
}

// TestClaimAheadWait checks a wait claimed ahead of its timeout: an event
// sent while it waits in memory is still delivered, and without one the
// timeout comes no earlier than its time.
func TestClaimAheadWait(t *testing.T) {
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := workflow.NewEngine(workflow.Options{Store: st, ClaimAhead: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	var (
		mu      sync.Mutex
		started = map[string]time.Time{}
	)
	workflow.MustRegister(e, "w", workflow.Func[struct{}, string](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (string, error) {
		mu.Lock()
		if _, ok := started[ev.InstanceID]; !ok {
			started[ev.InstanceID] = time.Now()
		}
		mu.Unlock()
		v, err := workflow.WaitForEvent[string](step, "go", workflow.WaitOptions{Type: "go", Timeout: timeout})
		if errors.Is(err, workflow.ErrTimeout) {
			mu.Lock()
			defer mu.Unlock()
			if early := started[ev.InstanceID].Add(timeout).Sub(time.Now()); early > 0 {
				return "", fmt.Errorf("timed out %s early", early)
			}
			return "timeout", nil
		}
		return v, err
	}))
	if err := e.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(bg)

	sent, err := e.Create(bg, "w", workflow.CreateOptions{ID: "sent"})
	if err != nil {
		t.Fatal(err)
	}
	quiet, err := e.Create(bg, "w", workflow.CreateOptions{ID: "quiet"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(timeout / 3)
	if err := sent.SendEvent(bg, "go", "hello"); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[*workflow.Instance]string{sent: `"hello"`, quiet: `"timeout"`} {
		s, err := in.Wait(bg)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, s, workflow.StatusComplete)
		if string(s.Output) != want {
			t.Errorf("instance %s output %s, want %s", in.ID, s.Output, want)
		}
	}
}

// TestClaimedTogetherReplay checks instances woken together, whose
// checkpoints the engine reads for the whole claim in one query: each
// replays its own steps (the step before the sleep is not run again and its
// result is the instance's own), also when that query fails and each
// instance reads its own.
func TestClaimedTogetherReplay(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail bool
	}{
		{"one read", false},
		{"the read fails, each reads its own", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "t.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
			if err != nil {
				t.Fatal(err)
			}
			defer base.Close()
			st := &stepsOfStore{Store: base, fail: tc.fail}
			e, err := workflow.NewEngine(workflow.Options{Store: st, ClaimAhead: 250 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			var runs list[string]
			workflow.MustRegister(e, "w", workflow.Func[int, int](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
				first, err := workflow.Do(step, "first", func(context.Context, workflow.Attempt) (int, error) {
					runs.add(ev.InstanceID)
					return ev.Payload * 10, nil
				})
				if err != nil {
					return 0, err
				}
				if err := step.Sleep("nap", 400*time.Millisecond); err != nil {
					return 0, err
				}
				return workflow.Do(step, "second", func(context.Context, workflow.Attempt) (int, error) { return first + 1, nil })
			}))
			if err := e.Start(bg); err != nil {
				t.Fatal(err)
			}
			defer e.Stop(bg)
			const n = 20
			insts := make([]*workflow.Instance, n)
			for i := range insts {
				if insts[i], err = e.Create(bg, "w", workflow.CreateOptions{Params: i}); err != nil {
					t.Fatal(err)
				}
			}
			for i, in := range insts {
				got, err := in.Wait(bg)
				if err != nil {
					t.Fatal(err)
				}
				wantOutput(t, got, i*10+1)
			}
			if got := runs.len(); got != n {
				t.Errorf("step first ran %d times for %d instances, want once each", got, n)
			}
			if st.calls.Load() == 0 {
				t.Errorf("no claim read the checkpoints of several instances at once")
			}
		})
	}
}

// stepsOfStore counts ListStepsOf's calls and, with fail, fails them.
type stepsOfStore struct {
	store.Store
	fail  bool
	calls atomic.Int64
}

func (s *stepsOfStore) ListStepsOf(ctx context.Context, ids []string) (map[string][]store.Step, error) {
	s.calls.Add(1)
	if s.fail {
		return nil, errors.New("injected failure")
	}
	return s.Store.ListStepsOf(ctx, ids)
}
