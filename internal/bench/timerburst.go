package bench

import (
	"context"
	"errors"
	"sync"
	"time"

	"agentflow/workflow"
)

// burstSleep is how long each timer-burst instance sleeps.
const burstSleep = time.Second

// burstTimes collects, per instance, the time just before its sleep and the
// time the step after it started; the first of each is kept, so a replay
// cannot move them.
type burstTimes struct {
	mu     sync.Mutex
	before map[string]time.Time
	after  map[string]time.Time
}

func (b *burstTimes) note(m map[string]time.Time, id string, t time.Time) {
	b.mu.Lock()
	if _, seen := m[id]; !seen {
		m[id] = t
	}
	b.mu.Unlock()
}

// workflow is Do → Sleep(1 s) → Do.
func (b *burstTimes) workflow(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
	if _, err := workflow.Do(step, "first", func(context.Context, workflow.Attempt) (int, error) { return 1, nil }); err != nil {
		return struct{}{}, err
	}
	b.note(b.before, ev.InstanceID, time.Now())
	if err := step.Sleep("sleep", burstSleep); err != nil {
		return struct{}{}, err
	}
	_, err := workflow.Do(step, "second", func(context.Context, workflow.Attempt) (int, error) {
		b.note(b.after, ev.InstanceID, time.Now())
		return 2, nil
	})
	return struct{}{}, err
}

// timerBurst starts --burst instances together, each Do → Sleep(1 s) → Do,
// and measures how late the step after each sleep starts.
func (r *runner) timerBurst(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()

	col := &burstTimes{before: make(map[string]time.Time, cfg.Burst), after: make(map[string]time.Time, cfg.Burst)}
	done := newCompletion(cfg.Burst)
	eng, err := r.newEngine(&finishWatcher{Store: e.st, onFinish: done.finished}, workflow.Hooks{})
	if err != nil {
		return nil, err
	}
	if err := workflow.Register(eng, "burst", workflow.Func[struct{}, struct{}](col.workflow)); err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopEngine(eng)) }()

	r.progress("starting %d instances of Do → Sleep(%s) → Do together", cfg.Burst, burstSleep)
	start := time.Now()
	if err := createMany(ctx, eng, "burst", cfg.Burst, cfg.Creators, nil); err != nil {
		return nil, err
	}
	r.progress("created after %s", time.Since(start).Round(time.Millisecond))
	if _, err := done.wait(ctx); err != nil {
		return nil, err
	}
	r.progress("all finished after %s", time.Since(start).Round(time.Millisecond))

	col.mu.Lock()
	lat := make([]float64, 0, len(col.after))
	for id, a := range col.after {
		if b, ok := col.before[id]; ok {
			lat = append(lat, ms(a.Sub(b.Add(burstSleep))))
		}
	}
	col.mu.Unlock()
	return latenessResults(lat, cfg.Burst, "a step after a sleep started %.3f ms before the sleep's end")
}
