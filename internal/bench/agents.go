package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/workflow"
)

// This file is what the agent scenarios (agent-rpc, agent-activate,
// schedules, agent-workflows) share: a workflow engine and an agent runtime on the
// scenario's fresh store, and the bench's own agent classes.

// agentRig is a started engine and agent runtime on a fresh store.
type agentRig struct {
	e   *env
	eng *workflow.Engine
	rt  *agent.Runtime
}

// openAgents opens a fresh store, starts an engine and a runtime with opts
// (Engine and Logger are filled in) after register has registered the
// classes (and any workflow classes and bindings on the engine), and returns
// the rig and a function that stops and removes it all.
func (r *runner) openAgents(ctx context.Context, opts agent.Options, register func(*agent.Runtime, *workflow.Engine) error) (_ *agentRig, closeRig func() error, err error) {
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	var undo []func() error // in reverse order
	closeRig = func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	undo = append(undo, e.cleanup)
	defer func() {
		if err != nil {
			err = errors.Join(err, closeRig())
		}
	}()
	eng, err := r.newEngine(e.st, workflow.Hooks{})
	if err != nil {
		return nil, nil, err
	}
	opts.Engine, opts.Logger = eng, r.log
	rt, err := agent.NewRuntime(opts)
	if err != nil {
		return nil, nil, err
	}
	if err := register(rt, eng); err != nil {
		return nil, nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() error { return stopEngine(eng) })
	if err := rt.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return rt.Stop(sctx)
	})
	return &agentRig{e: e, eng: eng, rt: rt}, closeRig, nil
}

// pinger is agent-rpc's class: Ping neither reads nor writes the store, so
// a call on a live instance measures the runtime's own call path.
type pinger struct {
	agent.Agent[pingerState]
}

type pingerState struct {
	N int `json:"n"`
}

const pingerClass = "BenchPinger" // URL form bench-pinger

// Ping returns n.
func (p *pinger) Ping(_ context.Context, n int) (int, error) { return n, nil }

// idler is agent-activate's class: Get reads nothing but the state the
// activation loaded.
type idler struct {
	agent.Agent[idlerState]
}

type idlerState struct {
	N int `json:"n"`
}

const idlerClass = "BenchIdler"

// Get returns the state's number.
func (a *idler) Get(context.Context) (int, error) { return a.State().N, nil }

// scheduler is the schedules scenario's class: Plan schedules Fire at each
// of the given times (Unix nanoseconds, whole microseconds) with the time
// as the payload; Fire records how late it ran.
type scheduler struct {
	agent.Agent[struct{}]
}

// Plan schedules one Fire per due time and returns how many it created.
func (a *scheduler) Plan(ctx context.Context, due []int64) (int, error) {
	for i, t := range due {
		if _, err := a.Schedule(ctx, agent.At(time.Unix(0, t)), "Fire", t); err != nil {
			return i, err
		}
	}
	return len(due), nil
}

// Fire records that the schedule due at the time in its payload ran now.
func (a *scheduler) Fire(_ context.Context, due int64) error {
	now := time.Now()
	col, ok := firings.Load(a.Class())
	if !ok {
		return fmt.Errorf("no collector for class %s", a.Class())
	}
	col.(*firingLog).record(due, now)
	return nil
}

// firings maps each run's scheduler class name (unique per run) to the
// run's firingLog, which Fire cannot otherwise reach.
var firings sync.Map

// firingLog collects the schedules' runs.
type firingLog struct {
	mu    sync.Mutex
	runs  map[int64]int // due time → runs
	late  []float64     // ms, one per run
	want  int
	fired int // distinct due times run
	done  chan struct{}
}

func newFiringLog(want int) *firingLog {
	return &firingLog{runs: make(map[int64]int, want), late: make([]float64, 0, want), want: want, done: make(chan struct{})}
}

func (l *firingLog) record(due int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.late = append(l.late, ms(now.Sub(time.Unix(0, due))))
	l.runs[due]++
	if l.runs[due] == 1 {
		l.fired++
		if l.fired == l.want {
			close(l.done)
		}
	}
}
