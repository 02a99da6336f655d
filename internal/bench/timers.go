package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"agentflow/workflow"
)

// lateness collects, per instance, how late its sleep returned.
type lateness struct {
	mu   sync.Mutex
	late map[string]float64 // ms, by instance
}

// timerWorkflow sleeps until the time in its params (Unix nanoseconds) and
// then records how late the sleep returned. The code after the sleep runs
// once per instance when nothing crashes; a repeat would keep the first.
func (l *lateness) timerWorkflow(ctx context.Context, ev workflow.Event[int64], step *workflow.Step) (struct{}, error) {
	target := time.Unix(0, ev.Payload)
	if err := step.SleepUntil("until", target); err != nil {
		return struct{}{}, err
	}
	late := ms(time.Since(target))
	l.mu.Lock()
	if _, seen := l.late[ev.InstanceID]; !seen {
		l.late[ev.InstanceID] = late
	}
	l.mu.Unlock()
	return struct{}{}, nil
}

func (r *runner) timers(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()

	col := &lateness{late: make(map[string]float64, cfg.Timers)}
	done := newCompletion(cfg.Timers)
	eng, err := r.newEngine(&finishWatcher{Store: e.st, onFinish: done.finished}, workflow.Hooks{})
	if err != nil {
		return nil, err
	}
	if err := workflow.Register(eng, "timer", workflow.Func[int64, struct{}](col.timerWorkflow)); err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopEngine(eng)) }()

	// Wake-up times spread uniformly over [first, first+spread).
	start := time.Now()
	first := start.Add(cfg.Lead)
	step := cfg.Spread / time.Duration(cfg.Timers)
	r.progress("creating %d timers due from %s to %s from now", cfg.Timers, cfg.Lead, cfg.Lead+cfg.Spread)
	if err := createMany(ctx, eng, "timer", cfg.Timers, cfg.Creators, func(i int) any {
		// Whole microseconds, the store's resolution, so that no rounding
		// can make a sleep look early.
		return first.Add(time.Duration(i)*step).UnixMicro() * 1000
	}); err != nil {
		return nil, err
	}
	created := time.Since(start)
	// Every instance must have suspended in its sleep before the first is
	// due, or the figure would mix timer lateness with creation backlog.
	// The sleep's step row is written when the instance suspends.
	wctx, wcancel := context.WithDeadline(ctx, first)
	err = e.waitCount(wctx, 20*time.Millisecond, cfg.Timers, `SELECT COUNT(*) FROM workflow_steps WHERE kind = 'sleep'`)
	wcancel()
	suspended := time.Since(start)
	if err != nil {
		if ctx.Err() == nil && wctx.Err() != nil {
			return nil, fmt.Errorf("the %d timers were not all created and suspended within --lead %s: raise --lead", cfg.Timers, cfg.Lead)
		}
		return nil, err
	}
	r.progress("all created after %s and suspended after %s; waiting for them to fire", created.Round(time.Millisecond), suspended.Round(time.Millisecond))

	if _, err := done.wait(ctx); err != nil {
		return nil, err
	}
	col.mu.Lock()
	lat := make([]float64, 0, len(col.late))
	for _, v := range col.late {
		lat = append(lat, v)
	}
	col.mu.Unlock()
	return latenessResults(lat, cfg.Timers, "a sleep returned %.3f ms before its time")
}

// latenessResults checks that every one of want timers recorded its
// lateness and none fired early (early formats how early, in ms), and
// returns their percentiles.
func latenessResults(lat []float64, want int, early string) ([]Result, error) {
	if len(lat) != want {
		return nil, fmt.Errorf("recorded lateness for %d instances, want %d", len(lat), want)
	}
	slices.Sort(lat)
	if lat[0] < 0 {
		return nil, fmt.Errorf(early, -lat[0])
	}
	return []Result{
		metric("lateness_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("lateness_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("lateness_max_ms", lat[len(lat)-1], "ms"),
	}, nil
}
