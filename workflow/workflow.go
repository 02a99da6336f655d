// Package workflow is agentflow's durable workflow engine.
//
// A workflow class is a Go type with a Run method. An instance of it runs to
// completion across crashes, restarts and long waits: every step's result is
// checkpointed in the store, and whenever the instance resumes, Run is
// called again from the top and finished steps return their stored result
// without running again.
//
//	type Greet struct{}
//
//	func (Greet) Run(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
//		msg, err := workflow.Do(step, "compose", func(ctx context.Context, a workflow.Attempt) (string, error) {
//			return "hello " + ev.Payload, nil
//		})
//		if err != nil {
//			return "", err
//		}
//		if err := step.Sleep("pause", time.Hour); err != nil {
//			return "", err
//		}
//		return msg, nil
//	}
//
// Code outside steps runs again on every replay, so it must be
// deterministic: no clocks, random numbers or I/O outside a step. The engine
// catches the cheap violations: a step whose name or kind differs from the
// checkpoint at its position fails the instance with a NonDeterminismError.
//
// While an instance sleeps, waits for an event, backs off before a retry or
// is paused, it is only rows in the store: no goroutine and no memory.
//
// A Step is not safe for concurrent use: call its methods from Run's
// goroutine. Suspending (Sleep, WaitForEvent, a retry delay) unwinds Run
// with a panic that the engine recovers; deferred functions run, and a
// recover in workflow code that swallows it does not stop the suspension.
package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"agentflow/store"
)

// Event is what an instance was created with.
type Event[P any] struct {
	Payload    P
	InstanceID string
	Timestamp  time.Time // when the instance was created
}

// Workflow is a workflow class: P is its params type, O its output type.
type Workflow[P, O any] interface {
	Run(ctx context.Context, ev Event[P], step *Step) (O, error)
}

// Func adapts a function to a Workflow.
type Func[P, O any] func(ctx context.Context, ev Event[P], step *Step) (O, error)

// Run implements Workflow.
func (f Func[P, O]) Run(ctx context.Context, ev Event[P], step *Step) (O, error) {
	return f(ctx, ev, step)
}

// class is a registered workflow class with its types erased.
type class struct {
	name string
	// run decodes the params, calls Run and encodes the output.
	run func(ctx context.Context, inst *store.Instance, step *Step) ([]byte, error)
	// checkParams reports whether params decode into the params type.
	checkParams func(params []byte) error
}

// Register adds a workflow class under name. Register before Start; a name
// may be registered once.
func Register[P, O any](e *Engine, name string, w Workflow[P, O]) error {
	if err := checkClassName(name); err != nil {
		return err
	}
	c := &class{
		name: name,
		run: func(ctx context.Context, inst *store.Instance, step *Step) ([]byte, error) {
			var p P
			if len(inst.Params) > 0 {
				if err := json.Unmarshal(inst.Params, &p); err != nil {
					return nil, NonRetryable(fmt.Errorf("decode params of instance %q into %T: %w", inst.ID, p, err))
				}
			}
			out, err := w.Run(ctx, Event[P]{Payload: p, InstanceID: inst.ID, Timestamp: inst.CreatedAt}, step)
			if err != nil {
				return nil, err
			}
			b, err := json.Marshal(out)
			if err != nil {
				return nil, fmt.Errorf("output of type %T: %w: %v", out, ErrNotJSON, err)
			}
			return b, nil
		},
		checkParams: func(params []byte) error {
			var p P
			if err := json.Unmarshal(params, &p); err != nil {
				return invalid(ErrInvalidParams, "params", string(params), "must decode into %T: %v", p, err)
			}
			return nil
		},
	}
	return e.register(c)
}

// MustRegister is Register that panics on error, for registration at
// program start.
func MustRegister[P, O any](e *Engine, name string, w Workflow[P, O]) {
	if err := Register(e, name, w); err != nil {
		panic(err)
	}
}

func checkClassName(name string) error {
	if name == "" || len(name) > 256 {
		return invalid(ErrUnknownWorkflow, "workflow class name", name, "must be 1 to 256 characters")
	}
	return nil
}

// Limits bound what an instance may store. Zero fields take the defaults.
type Limits struct {
	MaxResultBytes int           // per step result; default 1 MiB
	MaxEventBytes  int           // per event payload; default 1 MiB
	MaxParamsBytes int           // per instance params; default 1 MiB
	MaxSteps       int           // per instance; default 10,000
	MaxStepName    int           // characters; default 256
	MaxSleep       time.Duration // longest sleep, wait or retry delay; default 365 days
	MaxBatch       int           // instances per CreateBatch; default 100
}

func (l Limits) withDefaults() Limits {
	const mib = 1 << 20
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = mib
	}
	if l.MaxEventBytes <= 0 {
		l.MaxEventBytes = mib
	}
	if l.MaxParamsBytes <= 0 {
		l.MaxParamsBytes = mib
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = 10_000
	}
	if l.MaxStepName <= 0 {
		l.MaxStepName = 256
	}
	if l.MaxSleep <= 0 {
		l.MaxSleep = 365 * 24 * time.Hour
	}
	if l.MaxBatch <= 0 {
		l.MaxBatch = 100
	}
	return l
}
