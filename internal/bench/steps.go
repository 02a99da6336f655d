package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/workflow"
)

// writesPerWorkflow is how many durable writes a steps workflow needs at the
// least: its creation, one checkpoint per step (three), and its completion.
const writesPerWorkflow = 5

// threeSteps is the steps scenario's workflow: three no-op steps.
func threeSteps(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
	for _, name := range [...]string{"one", "two", "three"} {
		if _, err := workflow.Do(step, name, func(context.Context, workflow.Attempt) (struct{}, error) {
			return struct{}{}, nil
		}); err != nil {
			return struct{}{}, err
		}
	}
	return struct{}{}, nil
}

// stepTimer measures each step from BeforeStep to AfterStep: the step
// function plus its durable checkpoint.
type stepTimer struct {
	mu      sync.Mutex
	started map[string]time.Time // by instance: an instance runs one step at a time
	lat     []float64            // ms
}

func newStepTimer(n int) *stepTimer {
	return &stepTimer{started: make(map[string]time.Time, 1024), lat: make([]float64, 0, n)}
}

func (t *stepTimer) hooks() workflow.Hooks {
	return workflow.Hooks{
		BeforeStep: func(_ context.Context, s workflow.StepRef) error {
			now := time.Now()
			t.mu.Lock()
			t.started[s.InstanceID] = now
			t.mu.Unlock()
			return nil
		},
		AfterStep: func(_ context.Context, s workflow.StepRef) error {
			now := time.Now()
			t.mu.Lock()
			if start, ok := t.started[s.InstanceID]; ok {
				delete(t.started, s.InstanceID)
				t.lat = append(t.lat, ms(now.Sub(start)))
			}
			t.mu.Unlock()
			return nil
		},
	}
}

func (r *runner) steps(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()

	rawInsert, err := e.sq.RawInsert(ctx)
	if err != nil {
		return nil, err
	}

	done := newCompletion(cfg.Workflows)
	timer := newStepTimer(3 * cfg.Workflows)
	eng, err := r.newEngine(&finishWatcher{Store: e.st, onFinish: done.finished}, timer.hooks())
	if err != nil {
		return nil, err
	}
	if err := workflow.Register(eng, "three-steps", workflow.Func[struct{}, struct{}](threeSteps)); err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopEngine(eng)) }()

	// The disk's fsync speed drifts over minutes, so the limit is measured
	// right before and right after the workflows, and their mean is used.
	// First, unmeasured, the writes a new store's first second needs: on
	// SQLite they grow the WAL file, and an fsync that must also record a
	// file's new size took ~195 µs on the benchmark machine's disk against
	// ~110 µs once the WAL is reused, which made the limit before read
	// lower than the one after in most runs.
	r.progress("warming the store up: %d writers for %s", cfg.Writers, min(cfg.RawDuration, time.Second))
	if _, err := measureRaw(ctx, rawInsert, cfg.Writers, min(cfg.RawDuration, time.Second)); err != nil {
		return nil, err
	}
	r.progress("raw limit: %d writers for %s", cfg.Writers, cfg.RawDuration)
	raw1, err := measureRaw(ctx, rawInsert, cfg.Writers, cfg.RawDuration)
	if err != nil {
		return nil, err
	}
	r.progress("raw limit before: %.0f rows/s; running %d workflows from %d callers", raw1, cfg.Workflows, cfg.Callers)

	start := time.Now()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range cfg.Callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(cfg.Workflows) {
				if _, err := eng.Create(ctx, "three-steps", workflow.CreateOptions{}); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	end, err := done.wait(ctx)
	if err != nil {
		return nil, err
	}
	elapsed := end.Sub(start)
	r.progress("%d workflows in %s (all created after %s)", cfg.Workflows, elapsed.Round(time.Millisecond), created.Round(time.Millisecond))

	raw2, err := measureRaw(ctx, rawInsert, cfg.Writers, cfg.RawDuration)
	if err != nil {
		return nil, err
	}
	r.progress("raw limit after: %.0f rows/s", raw2)

	// The instance rows are the ground truth.
	if n, err := e.count(ctx, `SELECT COUNT(*) FROM workflow_instances WHERE status = 'complete'`); err != nil {
		return nil, err
	} else if n != cfg.Workflows {
		return nil, fmt.Errorf("%d instances complete in the store, want %d", n, cfg.Workflows)
	}
	if n, err := e.count(ctx, `SELECT COUNT(*) FROM workflow_steps WHERE state = 'done'`); err != nil {
		return nil, err
	} else if n != 3*cfg.Workflows {
		return nil, fmt.Errorf("%d steps done in the store, want %d", n, 3*cfg.Workflows)
	}

	timer.mu.Lock()
	lat := slices.Clone(timer.lat)
	timer.mu.Unlock()
	if len(lat) != 3*cfg.Workflows {
		return nil, fmt.Errorf("timed %d steps, want %d", len(lat), 3*cfg.Workflows)
	}
	slices.Sort(lat)

	wps := float64(cfg.Workflows) / elapsed.Seconds()
	raw := (raw1 + raw2) / 2
	return []Result{
		metric("workflows_per_s", wps, "workflows/s"),
		metric("step_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("step_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("raw_rows_per_s", raw, "rows/s"),
		metric("ratio_to_limit", wps/(raw/writesPerWorkflow), "ratio"),
		metric("raw_rows_per_s_before", raw1, "rows/s"),
		metric("raw_rows_per_s_after", raw2, "rows/s"),
	}, nil
}

// measureRaw makes the store's own writes (sqlstore's RawInsert), one
// after another from writers goroutines, and returns committed rows per
// second.
func measureRaw(ctx context.Context, raw func(context.Context) error, writers int, d time.Duration) (float64, error) {
	var (
		rows     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := raw(ctx); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("raw insert: %w", err) })
					return
				}
				rows.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(rows.Load()) / elapsed.Seconds(), nil
}
