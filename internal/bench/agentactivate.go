package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/agent"
	"agentflow/workflow"
)

// activateAll makes one call on each of the agents prefix0 … prefix(n-1)
// from callers goroutines, which activates each; lat, when not nil, gets
// each call's latency in µs by index.
func activateAll(ctx context.Context, rt *agent.Runtime, prefix string, n, callers int, lat []float64) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				name := prefix + strconv.Itoa(i)
				start := time.Now()
				_, err := agent.Call0(ctx, rt, name, (*idler).Get)
				if lat != nil {
					lat[i] = us(time.Since(start))
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("agent %s: %w", name, err) })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// waitEvicted waits until the runtime has no live instance.
func waitEvicted(ctx context.Context, rt *agent.Runtime) error {
	for rt.Live() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d agents still live: %w", rt.Live(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// agentActivate activates many distinct agents, lets the runtime evict
// them all, and measures what an evicted agent still costs in memory.
func (r *runner) agentActivate(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	rig, closeRig, err := r.openAgents(ctx, agent.Options{IdleTimeout: cfg.IdleTimeout}, func(rt *agent.Runtime, _ *workflow.Engine) error {
		return agent.Register[idler](rt, idlerClass, agent.ClassOptions{})
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeRig()) }()
	rt := rig.rt

	// Warm up: activate and evict a few agents, so that connection pools,
	// the writer and the runtime's maps are part of the baseline.
	warm := min(cfg.Agents, 1000)
	if err := activateAll(ctx, rt, "w", warm, cfg.Callers, nil); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := waitEvicted(ctx, rt); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	lat := make([]float64, cfg.Agents) // allocated before the baseline
	settleGoroutines(-1)
	base := sampleReleased()
	r.progress("baseline: heap %d B, %d goroutines; activating %d agents from %d goroutines (IdleTimeout %s)",
		base.heap, base.goroutines, cfg.Agents, cfg.Callers, cfg.IdleTimeout)

	start := time.Now()
	if err := activateAll(ctx, rt, "a", cfg.Agents, cfg.Callers, lat); err != nil {
		return nil, err
	}
	activated := time.Since(start)
	peak := rt.Live()
	r.progress("activated %d in %s (%d still live); waiting for eviction", cfg.Agents, activated.Round(time.Millisecond), peak)
	if err := waitEvicted(ctx, rt); err != nil {
		return nil, err
	}
	evicted := time.Since(start) - activated
	// Every agent is released: no row has an owner (an agent that stored
	// nothing, as these, leaves no row at all).
	if err := rig.e.waitCount(ctx, 10*time.Millisecond, 1,
		`SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END FROM agent_instances WHERE owner IS NOT NULL`); err != nil {
		return nil, err
	}
	settleGoroutines(base.goroutines)
	after := sampleReleased()
	runtime.KeepAlive(lat)
	r.progress("after eviction: heap %d B, %d goroutines", after.heap, after.goroutines)

	slices.Sort(lat)
	n := float64(cfg.Agents)
	rs := []Result{
		metric("activate_p50_us", percentileSorted(lat, 50), "us"),
		metric("activate_p99_us", percentileSorted(lat, 99), "us"),
		metric("activations_per_s", n/activated.Seconds(), "agents/s"),
		metric("evict_s", evicted.Seconds(), "s"),
		metric("live_after_activation", float64(peak), "agents"),
		metric("goroutines_per_idle_agent", float64(after.goroutines-base.goroutines)/n, "goroutines"),
		metric("heap_bytes_per_idle_agent", (float64(after.heap)-float64(base.heap))/n, "bytes"),
	}
	if base.rss >= 0 && after.rss >= 0 {
		rs = append(rs, metric("rss_bytes_per_idle_agent", float64(after.rss-base.rss)/n, "bytes"))
	}
	return rs, nil
}

// sampleReleased is sampleMemory after handing freed memory back to the
// OS, so that the resident set does not count heap the instances used
// while they were live and the GC has freed since.
func sampleReleased() memSample {
	debug.FreeOSMemory()
	return sampleMemory()
}

// settleGoroutines waits up to 2 s for the goroutine count to stop changing
// and, when target ≥ 0, to come down to target: goroutines that just
// finished their work may still be unwinding.
func settleGoroutines(target int) {
	settle := time.Now().Add(2 * time.Second)
	for prev := -1; time.Now().Before(settle); {
		n := runtime.NumGoroutine()
		if n == prev && (target < 0 || n <= target) {
			return
		}
		prev = n
		time.Sleep(50 * time.Millisecond)
	}
}
