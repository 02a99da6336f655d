package storetest

import (
	"context"
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

// BenchmarkWrites measures durable writes made by many goroutines, each
// writing one after another as an engine's executions do, on stores open
// returns (one per sub-benchmark). One op is one write:
//
//   - insert/writers=N: Writes.Insert, the store's own limit;
//   - workflow/writers=N: the writes of workflows of three steps, in the
//     order the engine makes them: the instance's claimed insert, three
//     checkpoints (SaveStep) and its finish.
//
// Each reports writes/s; run in one invocation, the pair shows what the
// engine's writes cost beyond the store's own limit.
func BenchmarkWrites(b *testing.B, open func(b *testing.B) Writes) {
	for _, writers := range []int{64, 256} {
		b.Run("insert/writers="+strconv.Itoa(writers), func(b *testing.B) {
			w := openWrites(b, open)
			runWriters(b, writers, func(ctx context.Context) func() error {
				return func() error { return w.Insert(ctx) }
			})
		})
		b.Run("workflow/writers="+strconv.Itoa(writers), func(b *testing.B) {
			s := openWrites(b, open).Store
			result := []byte(`{"ok":true}`)
			runWriters(b, writers, func(ctx context.Context) func() error {
				var (
					l store.Lease
					n int // the next write's place in its workflow
				)
				return func() error {
					now := time.Now()
					defer func() { n = (n + 1) % 5 }()
					switch n {
					case 0: // ids that sort by time, as the engine's do
						in := &store.Instance{ID: "wf_" + idgen.Sortable(now), Workflow: "bench", Status: store.StatusRunning,
							Owner: "bench-node", CreatedAt: now}
						if err := s.CreateInstances(ctx, []*store.Instance{in}); err != nil {
							return err
						}
						l = store.Lease{InstanceID: in.ID, Owner: in.Owner, Fence: in.Fence}
						return nil
					case 4:
						return s.Finish(ctx, l, store.Outcome{Status: store.StatusComplete, Output: result}, now)
					default:
						st := store.Step{Seq: n - 1, Name: "step" + strconv.Itoa(n), Kind: store.KindDo,
							State: store.StepDone, Attempt: 1, Result: result, StartedAt: now}
						_, err := s.SaveStep(ctx, l, st, now)
						return err
					}
				}
			})
		})
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

// runWriters makes b.N writes from writers goroutines, each making its
// writes one after another with the function next returns for it, and
// reports the writes a second.
func runWriters(b *testing.B, writers int, next func(ctx context.Context) func() error) {
	b.Helper()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((writers + procs - 1) / procs)
	var g atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		id := g.Add(1)
		write := next(b.Context())
		for pb.Next() {
			if err := write(); err != nil {
				b.Error(fmt.Errorf("writer %d: %w", id, err))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
}
