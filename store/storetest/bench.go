package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	idgen "agentflow/internal/ids"
	"agentflow/store"
)

// Writes is what BenchmarkWrites runs on: a fresh, empty store, and a
// function making one write of the store's own simplest kind, a one-row
// insert through the same writer (the direct path, against which the
// store's writes are compared). The benchmark closes Store.
type Writes struct {
	Store  store.Store
	Insert func(ctx context.Context) error
}

// noticeBatch is how many finish notices a tracked writer claims at once,
// as an agent runtime under load claims the due notices of its agents in
// batches of tens.
const noticeBatch = 32

// noticeOwner is the node that claims the finish notices.
const noticeOwner = "bench-runtime"

// BenchmarkWrites measures durable writes made by many goroutines, each
// writing one after another as an engine's executions do, on stores open
// returns (one per sub-benchmark):
//
//   - insert/writers=N: one op is one Writes.Insert, the store's own limit
//     (writes/s);
//   - workflow/writers=N: one op is the writes of a workflow of three steps
//     in the order the engine makes them: the instance's claimed insert,
//     three checkpoints (SaveStep) and its finish (workflows/s);
//   - tracked/writers=N: the same workflow started by an agent, with what
//     its agent must store and read to hear of its end: the instance with
//     the agent's tracking row, the finish with its notice, the notice's
//     claim (one claim for up to 32 notices), the outcome's read and the
//     acknowledgement (workflows/s). Each writer is an agent of one class.
//
// workflow and tracked are the store's part of agentflow bench's steps and
// agent-workflows scenarios, without the engine and the agent runtime: the
// ratio of their workflows/s is the most the tracked path can reach
// against a plain workflow's with what it stores today.
func BenchmarkWrites(b *testing.B, open func(b *testing.B) Writes) {
	for _, writers := range []int{64, 256} {
		n := strconv.Itoa(writers)
		b.Run("insert/writers="+n, func(b *testing.B) {
			w := openWrites(b, open)
			runWriters(b, writers, "writes/s", func(ctx context.Context, _ int) func() error {
				return func() error { return w.Insert(ctx) }
			})
		})
		b.Run("workflow/writers="+n, func(b *testing.B) {
			s := openWrites(b, open).Store
			runWriters(b, writers, "workflows/s", func(ctx context.Context, _ int) func() error {
				return func() error {
					_, err := benchWorkflow(ctx, s, store.AgentKey{})
					return err
				}
			})
		})
		b.Run("tracked/writers="+n, func(b *testing.B) {
			s := openWrites(b, open).Store
			registerClaimant(b, s)
			runWriters(b, writers, "workflows/s", func(ctx context.Context, g int) func() error {
				// Agents of one class, as an application's are; each writer
				// hears of the finishes due so far every noticeBatch
				// workflows, whichever agents' they are.
				key := store.AgentKey{Class: "Bench", Name: "a" + strconv.Itoa(g)}
				pending := 0
				return func() error {
					if _, err := benchWorkflow(ctx, s, key); err != nil {
						return err
					}
					if pending++; pending == noticeBatch {
						pending = 0
						return hearFinishes(ctx, s, key.Class)
					}
					return nil
				}
			})
		})
	}
}

// benchWorkflow writes a workflow of three steps from its insert to its
// finish, started by origin unless that is zero, and returns its id.
func benchWorkflow(ctx context.Context, s store.Store, origin store.AgentKey) (string, error) {
	now := time.Now()
	// Ids that sort by time, as the engine's do: the rows being written
	// share the pages at the end of their indexes.
	in := &store.Instance{ID: "wf_" + idgen.Sortable(now), Workflow: "bench", Status: store.StatusRunning,
		Owner: "bench-node", CreatedAt: now, Origin: origin}
	if origin == (store.AgentKey{}) {
		if err := s.CreateInstances(ctx, []*store.Instance{in}); err != nil {
			return "", err
		}
	} else if err := s.CreateTrackedInstance(ctx, in, &store.AgentWorkflow{AgentKey: origin, WorkflowID: in.ID,
		Binding: "BENCH"}); err != nil {
		return "", err
	}
	l := store.Lease{InstanceID: in.ID, Owner: in.Owner, Fence: in.Fence}
	result := []byte(`{"ok":true}`)
	for i := range 3 {
		st := store.Step{Seq: i, Name: "step" + strconv.Itoa(i), Kind: store.KindDo, State: store.StepDone,
			Attempt: 1, Result: result, StartedAt: now}
		if _, err := s.SaveStep(ctx, l, st, time.Now()); err != nil {
			return "", err
		}
	}
	return in.ID, s.Finish(ctx, l, store.Outcome{Status: store.StatusComplete, Output: result}, time.Now())
}

// hearFinishes does what an agent runtime does to tell the agents of class
// of their finished workflows: claims up to noticeBatch due notices, reads
// each one's outcome and acknowledges it.
func hearFinishes(ctx context.Context, s store.Store, class string) error {
	notices, err := s.ClaimDueSchedules(ctx, noticeOwner, []string{class}, time.Now(), noticeBatch)
	if err != nil {
		return err
	}
	for _, n := range notices {
		var p struct {
			InstanceID string `json:"instanceId"`
		}
		if err := json.Unmarshal(n.Payload, &p); err != nil {
			return fmt.Errorf("notice %s: payload %q: %w", n.ID, n.Payload, err)
		}
		o, err := s.GetWorkflowOutcome(ctx, n.AgentKey, p.InstanceID)
		if err != nil {
			return err
		}
		u := store.TrackingUpdate{Rule: store.TrackFinish, Status: o.Status}
		if err := s.AckWorkflowNotice(ctx, store.NoticeAck{AgentKey: n.AgentKey, NoticeID: n.ID, Owner: noticeOwner,
			WorkflowID: p.InstanceID, Update: u}, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// registerClaimant gives noticeOwner a node row: a claim by a node without
// one is taken as a dead node's, so what it claimed could be claimed again
// before its acknowledgement.
func registerClaimant(b *testing.B, s store.Store) {
	b.Helper()
	now := time.Now()
	if err := s.Heartbeat(b.Context(), store.Node{ID: noticeOwner, Service: "bench", StartedAt: now,
		ExpiresAt: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
}

func openWrites(b *testing.B, open func(b *testing.B) Writes) Writes {
	b.Helper()
	w := open(b)
	b.Cleanup(func() {
		if err := w.Store.Close(); err != nil {
			b.Error(err)
		}
	})
	return w
}

// runWriters runs b.N ops from writers goroutines, numbered from 0, each
// running its ops one after another with the function next returns for
// it, and reports the ops a second under the name unit.
func runWriters(b *testing.B, writers int, unit string, next func(ctx context.Context, g int) func() error) {
	b.Helper()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((writers + procs - 1) / procs)
	var goroutines atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		g := int(goroutines.Add(1) - 1)
		op := next(b.Context(), g)
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(fmt.Errorf("writer %d: %w", g, err))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
}

// BenchmarkDueSchedules measures a runtime's look for due schedules, on
// stores open returns: one op is a NextScheduleTimes and a
// ClaimDueSchedules of class Bench when none of its schedules is due, with
// future=N schedules of that class (one an agent) due tomorrow, or
// elsewhere=N schedules of another class (one a runtime of this service does
// not run) due now. What a look costs should grow with neither: a runtime
// looks every poll interval and after every wake-up.
func BenchmarkDueSchedules(b *testing.B, open func(b *testing.B) Writes) {
	for _, c := range []struct {
		name  string
		n     int
		class string
		in    time.Duration
	}{
		{"future=0", 0, "Bench", 0},
		{"future=10000", 10_000, "Bench", 24 * time.Hour},
		{"future=100000", 100_000, "Bench", 24 * time.Hour},
		{"elsewhere=100000", 100_000, "Other", 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := openWrites(b, open).Store
			ctx := b.Context()
			now := time.Now()
			registerClaimant(b, s)
			if err := createSchedules(ctx, s, c.n, c.class, now.Add(c.in)); err != nil {
				b.Fatal(err)
			}
			classes := []string{"Bench"}
			b.ResetTimer()
			for b.Loop() {
				if ts, err := s.NextScheduleTimes(ctx, classes, now, 10_000); err != nil || len(ts) != 0 {
					b.Fatalf("NextScheduleTimes: %d times, %v; want none due", len(ts), err)
				}
				if got, err := s.ClaimDueSchedules(ctx, noticeOwner, classes, now, 256); err != nil || len(got) != 0 {
					b.Fatalf("ClaimDueSchedules: %d claimed, %v; want none due", len(got), err)
				}
			}
		})
	}
}

// createSchedules creates n schedules of class due at due, one an agent,
// from 64 goroutines so that a store committing in groups does it in few
// commits.
func createSchedules(ctx context.Context, s store.Store, n int, class string, due time.Time) error {
	const workers = 64
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < n; i += workers {
				sc := &store.Schedule{ID: "sch_" + strconv.Itoa(i), AgentKey: store.AgentKey{Class: class, Name: "a" + strconv.Itoa(i)},
					Method: "Tick", Kind: store.ScheduleDelayed, NextRunAt: due, CreatedAt: due.Add(-24 * time.Hour)}
				if _, _, err := s.CreateSchedule(ctx, sc); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
