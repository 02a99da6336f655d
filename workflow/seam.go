package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"agentflow/internal/engineseam"
	"agentflow/internal/telemetry"
	"agentflow/store"
)

// Seam is for the agent runtime that shares the engine (package agent):
// see internal/engineseam. Its argument's type is internal to agentflow, so
// no other module can call it.
func (e *Engine) Seam(engineseam.Key) engineseam.Engine { return seam{e} }

// seam is the engine's side of internal/engineseam.
type seam struct{ e *Engine }

var _ engineseam.Engine = seam{}

func (s seam) Store() store.Store { return s.e.shared }

func (s seam) Prepare(workflowName, service, id string, params json.RawMessage, origin store.AgentKey) (*store.Instance, error) {
	e := s.e
	if service == "" {
		service = e.service
	}
	var c *class
	if service == e.service {
		var ok bool
		if c, ok = e.class(workflowName); !ok {
			return nil, invalid(ErrUnknownWorkflow, "workflow", workflowName, "is not registered")
		}
	} else if err := checkClassName(workflowName); err != nil {
		return nil, err
	}
	in, err := e.newRow(c, CreateOptions{ID: id, Params: params}, origin, e.clock.Now())
	if err != nil {
		return nil, err
	}
	in.Workflow, in.Service = workflowName, service
	return in, nil
}

func (s seam) Claim(in *store.Instance) (bool, func(bool)) {
	e := s.e
	if in.Service != e.service || in.Owner != "" || !e.running.Load() || e.stopping.Load() || !e.tryAcquire() {
		return false, func(bool) {}
	}
	in.Owner, in.WakeAt, in.Status = e.nodeID, time.Time{}, store.StatusRunning
	return true, func(created bool) {
		if created {
			e.launch(in, true)
			return
		}
		<-e.slots
	}
}

func (s seam) OnFinished(fn func(instanceID string, origin store.AgentKey)) {
	e := s.e
	e.finishedMu.Lock()
	e.finished = append(slices.Clone(e.finished), fn)
	e.finishedMu.Unlock()
}

// ReapIfGone: the engine reaps such nodes when it starts and at every
// heartbeat; a process killed just before this one started may still have
// been exiting when the engine started.
func (s seam) ReapIfGone(ctx context.Context, n store.Node) (bool, error) {
	e := s.e
	if !e.running.Load() || n.ID == e.nodeID || !processGone(n, e.node) {
		return false, nil
	}
	if err := e.removeDead(ctx, n, e.clock.Now(), false); err != nil {
		return false, fmt.Errorf("workflow: reap node %s: %w", n.ID, err)
	}
	return true, nil
}

func (s seam) Telemetry() *telemetry.T { return s.e.tel }

func (s seam) MaxEventBytes() int { return s.e.limits.MaxEventBytes }

// Reserve takes a slot on the terms the scheduler claims on.
func (s seam) Reserve() (string, string, bool) {
	e := s.e
	if !e.running.Load() || e.stopping.Load() || !e.leaseValid(e.clock.Now()) || !e.tryAcquire() {
		return "", "", false
	}
	return e.nodeID, e.service, true
}

// Launch: an instance claimed by an event has checkpoints to read (fence >
// 1), and the claiming write completed its current wait.
func (s seam) Launch(inst *store.Instance) { s.e.launchWith(inst, nil, inst.Fence != 1, true) }

func (s seam) Release() {
	<-s.e.slots
	s.e.sched.slotFreed()
}

func (s seam) LeaseLapsed() bool {
	e := s.e
	return e.running.Load() && !e.stopping.Load() && !e.leaseValid(e.clock.Now())
}
