package workflow_test

import (
	"context"
	"path/filepath"
	"sync"
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
