package bench

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/workflow"
)

func sleeper(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
	return struct{}{}, step.Sleep("nap", time.Hour)
}

type memSample struct {
	heap       uint64 // runtime.MemStats.HeapAlloc after a GC
	goroutines int
	rss        int64 // resident set size from /proc; -1 where unknown
}

func sampleMemory() memSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{heap: m.HeapAlloc, goroutines: steadyGoroutines(), rss: residentBytes()}
}

// steadyGoroutines is the least of a few goroutine counts 10 ms apart. An
// idle engine still writes now and then (claim polls, the retention sweep,
// heartbeats), and a write in flight has goroutines of its own (database/sql
// runs one per open transaction); those come and go, so the least count is
// the steady one.
func steadyGoroutines() int {
	n := runtime.NumGoroutine()
	for range 4 {
		time.Sleep(10 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// residentBytes reads the process's resident set size, which unlike the Go
// heap includes SQLite's page cache (modernc's libc allocates with mmap,
// outside the Go heap).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

// createMany creates n instances of class with CreateBatch, batches of 100,
// from creators goroutines. params gives each instance's params by index.
func createMany(ctx context.Context, eng *workflow.Engine, class string, n, creators int, params func(i int) any) error {
	const batch = 100
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := make([]workflow.CreateOptions, 0, batch)
			for {
				lo := int(next.Add(batch)) - batch
				if lo >= n {
					return
				}
				opts = opts[:0]
				for i := lo; i < min(lo+batch, n); i++ {
					var p any
					if params != nil {
						p = params(i)
					}
					opts = append(opts, workflow.CreateOptions{Params: p})
				}
				if _, err := eng.CreateBatch(ctx, class, opts); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func (r *runner) sleepers(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()

	eng, err := r.newEngine(e.st, workflow.Hooks{})
	if err != nil {
		return nil, err
	}
	if err := workflow.Register(eng, "sleeper", workflow.Func[struct{}, struct{}](sleeper)); err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopEngine(eng)) }()
	// Warm the read path so its connection is part of the baseline.
	if _, err := e.count(ctx, `SELECT COUNT(*) FROM workflow_instances`); err != nil {
		return nil, err
	}

	base := sampleMemory()
	r.progress("baseline: heap %d B, %d goroutines; creating %d sleepers", base.heap, base.goroutines, cfg.Instances)
	start := time.Now()
	if err := createMany(ctx, eng, "sleeper", cfg.Instances, cfg.Creators, nil); err != nil {
		return nil, err
	}
	// Suspended: waiting, with no owner, and its pending sleep stored.
	if err := e.waitCount(ctx, 100*time.Millisecond, cfg.Instances,
		`SELECT COUNT(*) FROM workflow_instances WHERE status = 'waiting' AND owner IS NULL AND wake_at IS NOT NULL`); err != nil {
		return nil, err
	}
	setup := time.Since(start)
	r.progress("all %d suspended after %s", cfg.Instances, setup.Round(time.Millisecond))

	// The execution that wrote the last suspension may still be unwinding:
	// let the goroutine count settle (it never needs more than moments).
	settle := time.Now().Add(2 * time.Second)
	for prev := -1; time.Now().Before(settle); {
		n := runtime.NumGoroutine()
		if n == prev && n <= base.goroutines {
			break
		}
		prev = n
		time.Sleep(50 * time.Millisecond)
	}
	after := sampleMemory()
	r.progress("after: heap %d B, %d goroutines", after.heap, after.goroutines)

	n := float64(cfg.Instances)
	rs := []Result{
		metric("heap_bytes_per_instance", (float64(after.heap)-float64(base.heap))/n, "bytes"),
		metric("goroutines_per_instance", float64(after.goroutines-base.goroutines)/n, "goroutines"),
		metric("setup_s", setup.Seconds(), "s"),
	}
	if base.rss >= 0 && after.rss >= 0 {
		rs = append(rs, metric("rss_bytes_per_instance", float64(after.rss-base.rss)/n, "bytes"))
	}
	return rs, nil
}
