package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/agent"
	"agentflow/workflow"
)

// schedules creates one-shot agent schedules due over a window that starts
// after they all exist, waits for every one to run, and measures how late
// each ran against its own due time.
func (r *runner) schedules(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	// The class name is unique to this run: it is how Fire finds the run's
	// log (see firings).
	class := "BenchScheduler_" + randomSuffix()
	log := newFiringLog(cfg.Schedules)
	firings.Store(class, log)
	defer firings.Delete(class)
	rig, closeRig, err := r.openAgents(ctx, agent.Options{}, func(rt *agent.Runtime, _ *workflow.Engine) error {
		return agent.Register[scheduler](rt, class, agent.ClassOptions{})
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeRig()) }()
	rt := rig.rt

	// Due times spread uniformly over [first, first+spread), whole
	// microseconds (the store's resolution, so that no rounding can make a
	// run look early); schedule i belongs to agent i mod agents, so each
	// agent's schedules spread over the whole window.
	agents := min(cfg.ScheduleAgents, cfg.Schedules)
	start := time.Now()
	first := start.Add(cfg.Lead)
	step := cfg.Spread / time.Duration(cfg.Schedules)
	plans := make([][]int64, agents)
	for i := range cfg.Schedules {
		due := first.Add(time.Duration(i)*step).UnixMicro() * 1000
		plans[i%agents] = append(plans[i%agents], due)
	}
	last := time.Unix(0, plans[(cfg.Schedules-1)%agents][len(plans[(cfg.Schedules-1)%agents])-1])
	r.progress("creating %d schedules on %d agents from %d goroutines, due from %s to %s from now",
		cfg.Schedules, agents, cfg.Callers, cfg.Lead, cfg.Lead+cfg.Spread)

	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(cfg.Callers, agents) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= agents || ctx.Err() != nil {
					return
				}
				name := "s" + strconv.Itoa(i)
				if _, err := agent.Call(ctx, rt, name, (*scheduler).Plan, plans[i]); err != nil {
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
	if firstErr != nil {
		return nil, firstErr
	}
	created := time.Since(start)
	if time.Now().After(first) {
		return nil, fmt.Errorf("creating the %d schedules took %s, longer than --lead %s: raise --lead",
			cfg.Schedules, created.Round(time.Millisecond), cfg.Lead)
	}
	r.progress("all created after %s; waiting for them to run", created.Round(time.Millisecond))

	// Wait for every schedule to run, giving up a minute after the last is
	// due, then until every schedule row is gone (each run deletes its
	// own), and a little longer for a second run to show itself.
	wctx, wcancel := context.WithDeadline(ctx, last.Add(time.Minute))
	select {
	case <-log.done:
	case <-wctx.Done():
	}
	wcancel()
	if ctx.Err() == nil {
		wctx, wcancel = context.WithDeadline(ctx, time.Now().Add(30*time.Second))
		err = rig.e.waitCount(wctx, 20*time.Millisecond, 1,
			`SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END FROM agent_schedules`)
		wcancel()
		if err != nil && ctx.Err() == nil {
			r.progress("schedule rows are left: %v", err)
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	log.mu.Lock()
	lat := slices.Clone(log.late)
	fired, runs := log.fired, len(log.late)
	log.mu.Unlock()
	slices.Sort(lat)
	duplicates, lost := runs-fired, cfg.Schedules-fired
	rs := []Result{
		metric("lateness_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("lateness_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("lateness_max_ms", percentileSorted(lat, 100), "ms"),
		metric("fired", float64(fired), "schedules"),
		metric("duplicate_runs", float64(duplicates), "runs"),
		metric("lost", float64(lost), "schedules"),
		metric("create_s", created.Seconds(), "s"),
	}
	switch {
	case duplicates > 0 || lost > 0:
		return rs, fmt.Errorf("%d of %d schedules ran, %d of them more than once (%d extra runs)",
			fired, cfg.Schedules, countRepeated(log), duplicates)
	case len(lat) > 0 && lat[0] < 0:
		return rs, fmt.Errorf("a schedule ran %.3f ms before its time", -lat[0])
	}
	return rs, nil
}

func countRepeated(l *firingLog) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.runs {
		if c > 1 {
			n++
		}
	}
	return n
}
