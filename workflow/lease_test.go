package workflow_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// failingHeartbeats is a store whose heartbeats fail while down is set, as
// when the node is cut off from the database.
type failingHeartbeats struct {
	store.Store
	down atomic.Bool
}

func (f *failingHeartbeats) Heartbeat(ctx context.Context, n store.Node) error {
	if f.down.Load() {
		return errors.New("database unreachable")
	}
	return f.Store.Heartbeat(ctx, n)
}

// A node whose lease lapsed (its heartbeats failed for longer than the
// lease) must not start another step: other nodes may own the instance by
// now. It hands the instance back and resumes once a heartbeat succeeds.
func TestNoStepStartsAfterTheLeaseLapsed(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "lease.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fs := &failingHeartbeats{Store: st}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, err := workflow.NewEngine(workflow.Options{Store: fs, Clock: clock, Lease: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var second atomic.Int32
	firstDone := make(chan struct{})
	release := make(chan struct{})
	workflow.MustRegister(e, "w", workflow.Func[int, int](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
		if _, err := workflow.Do(step, "first", func(ctx context.Context, a workflow.Attempt) (int, error) {
			close(firstDone)
			<-release // the lease lapses while this step runs
			return 1, nil
		}); err != nil {
			return 0, err
		}
		return workflow.Do(step, "second", func(ctx context.Context, a workflow.Attempt) (int, error) {
			return int(second.Add(1)), nil
		})
	}))
	if err := e.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(bg)
	inst, err := e.Create(bg, "w", workflow.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	<-firstDone
	fs.down.Store(true)
	clock.Advance(11 * time.Second) // past the lease; the heartbeat in between fails
	close(release)

	waitFor(t, func() bool {
		in, err := st.GetInstance(bg, inst.ID)
		return err == nil && in.Owner == "" && !in.WakeAt.IsZero()
	}, "the instance to be handed back")
	if got := second.Load(); got != 0 {
		t.Fatalf("step second ran %d times on a node whose lease had lapsed", got)
	}

	fs.down.Store(false)
	clock.Advance(4 * time.Second) // next heartbeat succeeds
	waitFor(t, func() bool {
		s, err := inst.Status(bg)
		return err == nil && s.Status == workflow.StatusComplete
	}, "the instance to complete once the lease is renewed")
	if got := second.Load(); got != 1 {
		t.Fatalf("step second ran %d times, want 1", got)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
