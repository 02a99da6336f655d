package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/internal/engineseam"
	"agentflow/store"
	"agentflow/workflow"
)

// The agent-workflows scenario: agents start workflows through a binding
// with RunWorkflow and hear of each one's completion in their
// OnWorkflowComplete hook, end to end: the instance and its tracking row are
// created, the engine claims and runs the instance (three no-op steps),
// Finish queues the agent's notice, and the runtime claims the notice,
// updates the tracking row, calls the hook and deletes the notice.

const (
	// wfBinding is the binding the agents start the workflows by.
	wfBinding = "BENCH_STEPS"
	// wfClass is the bound workflow class: threeSteps, as in steps.
	wfClass = "three-steps"
)

// starter is agent-workflows' class: it starts workflows (from the bench,
// through agent.With) and records each completion it is told of.
type starter struct {
	agent.Agent[struct{}]
}

// OnWorkflowComplete records that the workflow's completion reached its
// agent now.
func (a *starter) OnWorkflowComplete(_ context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	now := time.Now()
	if l, ok := callbacks.Load(a.Class()); ok {
		l.(*callbackLog).complete(wf.ID, now)
	}
}

// OnWorkflowError records a workflow that failed, which fails the run.
func (a *starter) OnWorkflowError(_ context.Context, wf agent.WorkflowInfo, err *workflow.ErrorInfo) {
	if l, ok := callbacks.Load(a.Class()); ok {
		l.(*callbackLog).failed(wf.ID, err)
	}
}

// callbacks maps each run's starter class name (unique per run) to the
// run's callbackLog, which the hooks cannot otherwise reach.
var callbacks sync.Map

// callbackLog collects the completion hooks' calls.
type callbackLog struct {
	mu       sync.Mutex
	hooks    map[string]int       // workflow id → hook calls
	at       map[string]time.Time // workflow id → first hook call
	last     time.Time            // latest first hook call
	want     int
	distinct int
	errored  int
	firstErr string
	progress chan struct{} // signalled (non-blocking) on each new id
	done     chan struct{} // closed when want distinct ids were hooked
}

func newCallbackLog(want int) *callbackLog {
	return &callbackLog{hooks: make(map[string]int, want), at: make(map[string]time.Time, want), want: want,
		progress: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *callbackLog) complete(id string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hooks[id]++
	if l.hooks[id] > 1 {
		return
	}
	l.at[id] = now
	if now.After(l.last) {
		l.last = now
	}
	l.distinct++
	if l.distinct == l.want {
		close(l.done)
	}
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

func (l *callbackLog) failed(id string, err *workflow.ErrorInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errored++
	if l.errored == 1 {
		l.firstErr = fmt.Sprintf("workflow %s: %s: %s", id, err.Name, err.Message)
	}
}

// stallTimeout is how long the bench waits for another completion hook
// before it gives up on the ones still missing.
const stallTimeout = 30 * time.Second

// agentWorkflows has WorkflowAgents agents each start WorkflowsPerAgent
// workflows, concurrently across agents and one after another per agent,
// and measures from each RunWorkflow call to its completion hook.
func (r *runner) agentWorkflows(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	class := "BenchStarter_" + randomSuffix()
	total := cfg.WorkflowAgents * cfg.WorkflowsPerAgent
	log := newCallbackLog(total)
	callbacks.Store(class, log)
	defer callbacks.Delete(class)
	var finishes sync.Map // workflow id → time.Time its Finish returned
	rig, closeRig, err := r.openAgents(ctx, agent.Options{}, func(rt *agent.Runtime, eng *workflow.Engine) error {
		// Called after each Finish of an instance with an origin returned,
		// as the runtime's own callback is; it splits the latency in two.
		eng.Seam(engineseam.Key{}).OnFinished(func(id string, _ store.AgentKey) { finishes.Store(id, time.Now()) })
		if err := workflow.Register(eng, wfClass, workflow.Func[struct{}, struct{}](threeSteps)); err != nil {
			return err
		}
		if err := rt.Bind(wfBinding, agent.Binding{Workflow: wfClass}); err != nil {
			return err
		}
		return agent.Register[starter](rt, class, agent.ClassOptions{})
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeRig()) }()
	rt := rig.rt
	name := func(i int) string { return "w" + strconv.Itoa(i) }

	// Activate the agents first (an activation is a durable write of its
	// own), so that the figures are about the workflows.
	r.progress("activating %d agents", cfg.WorkflowAgents)
	if err := forEachAgent(cfg.WorkflowAgents, func(i int) error {
		_, err := agent.With(ctx, rt, name(i), func(context.Context, *starter) (struct{}, error) { return struct{}{}, nil })
		return err
	}); err != nil {
		return nil, fmt.Errorf("activation: %w", err)
	}

	// Each agent's goroutine starts its workflows one after another, each
	// in its own call, so that the agent's completion hooks (which take
	// the same lock) run between them. A start is timed from just before
	// RunWorkflow, inside the call; the id is recorded before the call
	// releases the agent, so before its hook can run.
	r.progress("%d agents each starting %d workflows of %s through binding %s", cfg.WorkflowAgents, cfg.WorkflowsPerAgent, wfClass, wfBinding)
	var starts sync.Map // workflow id → time.Time RunWorkflow was called
	runLat := make([][]float64, cfg.WorkflowAgents)
	begin := time.Now()
	err = forEachAgent(cfg.WorkflowAgents, func(i int) error {
		runLat[i] = make([]float64, 0, cfg.WorkflowsPerAgent)
		for range cfg.WorkflowsPerAgent {
			if _, err := agent.With(ctx, rt, name(i), func(ctx context.Context, a *starter) (struct{}, error) {
				t := time.Now()
				id, err := a.RunWorkflow(ctx, wfBinding, struct{}{})
				if err != nil {
					return struct{}{}, err
				}
				runLat[i] = append(runLat[i], ms(time.Since(t)))
				starts.Store(id, t)
				return struct{}{}, nil
			}); err != nil {
				return fmt.Errorf("agent %s: %w", name(i), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	started := time.Since(begin)
	r.progress("all %d started after %s; waiting for their completion hooks", total, started.Round(time.Millisecond))

	// Wait for every hook, giving up once none has come for stallTimeout;
	// then until every notice is gone (each delivery deletes its own), and
	// a little longer for a second delivery to show itself.
	stall := time.NewTimer(stallTimeout)
wait:
	for {
		select {
		case <-log.done:
			break wait
		case <-log.progress:
			stall.Reset(stallTimeout)
		case <-stall.C:
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	stall.Stop()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = rig.e.waitCount(wctx, 20*time.Millisecond, 1,
		`SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END FROM agent_schedules`)
	wcancel()
	if err != nil && ctx.Err() == nil {
		r.progress("notices are left: %v", err)
	}
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// Match the hooks to the starts.
	log.mu.Lock()
	defer log.mu.Unlock()
	var (
		lat                  = make([]float64, 0, total)
		toFinish, toHook     = make([]float64, 0, total), make([]float64, 0, total)
		first                time.Time
		nStarted, lost, dups int
	)
	starts.Range(func(k, v any) bool {
		id, t := k.(string), v.(time.Time)
		nStarted++
		if first.IsZero() || t.Before(first) {
			first = t
		}
		switch n := log.hooks[id]; {
		case n == 0:
			lost++
		default:
			dups += n - 1
			lat = append(lat, ms(log.at[id].Sub(t)))
			if f, ok := finishes.Load(id); ok {
				toFinish = append(toFinish, ms(f.(time.Time).Sub(t)))
				toHook = append(toHook, ms(log.at[id].Sub(f.(time.Time))))
			}
		}
		return true
	})
	unknown := 0
	for id := range log.hooks {
		if _, ok := starts.Load(id); !ok {
			unknown++
		}
	}
	slices.Sort(lat)
	rl := slices.Concat(runLat...)
	slices.Sort(rl)
	slices.Sort(toFinish)
	slices.Sort(toHook)
	wall := log.last.Sub(first)
	rs := []Result{
		metric("workflows_per_s", float64(len(lat))/wall.Seconds(), "workflows/s"),
		metric("callback_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("callback_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("callback_max_ms", percentileSorted(lat, 100), "ms"),
		metric("finish_p50_ms", percentileSorted(toFinish, 50), "ms"),
		metric("finish_p99_ms", percentileSorted(toFinish, 99), "ms"),
		metric("notice_p50_ms", percentileSorted(toHook, 50), "ms"),
		metric("notice_p99_ms", percentileSorted(toHook, 99), "ms"),
		metric("run_workflow_p50_ms", percentileSorted(rl, 50), "ms"),
		metric("run_workflow_p99_ms", percentileSorted(rl, 99), "ms"),
		metric("start_s", started.Seconds(), "s"),
		metric("lost", float64(lost), "workflows"),
		metric("duplicate_callbacks", float64(dups), "callbacks"),
	}
	switch {
	case nStarted != total:
		return rs, fmt.Errorf("%d workflows started, want %d", nStarted, total)
	case log.errored > 0:
		return rs, fmt.Errorf("%d workflows failed; first: %s", log.errored, log.firstErr)
	case lost > 0 || dups > 0 || unknown > 0:
		return rs, fmt.Errorf("of %d workflows, %d were never told complete and %d were told more than once in all (%d extra calls); %d hook calls for workflows the bench did not start",
			total, lost, countOver(log.hooks, 1), dups, unknown)
	case len(lat) > 0 && lat[0] < 0:
		return rs, fmt.Errorf("a completion hook ran %.3f ms before its RunWorkflow call", -lat[0])
	}

	// The store agrees: every instance and every tracking row complete.
	for _, q := range []string{
		`SELECT COUNT(*) FROM workflow_instances WHERE status = 'complete'`,
		`SELECT COUNT(*) FROM agent_workflows WHERE status = 'complete'`,
	} {
		if n, err := rig.e.count(ctx, q); err != nil {
			return rs, err
		} else if n != total {
			return rs, fmt.Errorf("%s: %d, want %d", q, n, total)
		}
	}
	return rs, nil
}

// forEachAgent runs fn(0) … fn(n-1), each in its own goroutine, and returns
// the first error.
func forEachAgent(n int, fn func(i int) error) error {
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for i := range n {
		wg.Go(func() {
			if err := fn(i); err != nil {
				errOnce.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	return firstErr
}

// countOver counts the values above n.
func countOver(m map[string]int, n int) int {
	c := 0
	for _, v := range m {
		if v > n {
			c++
		}
	}
	return c
}
