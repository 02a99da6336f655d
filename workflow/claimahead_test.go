package workflow_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// TestClaimAhead checks the real clock's claim ahead of a timer: the
// instance is claimed and replayed before its sleep ends, yet the step
// after the sleep never starts before the sleep's end; an engine stopped
// while an instance waits in memory hands it over, and the next engine
// finishes it, still not early.
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
	eventually(t, "the instance is claimed ahead of its sleep's end", func() bool {
		in, err := st.GetInstance(bg, stopped.ID)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		since := time.Since(before[stopped.ID])
		mu.Unlock()
		return in.Owner != "" && in.WakeAt.IsZero() && since > nap/2 && since < nap
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
