package agent

import (
	"context"
	"encoding/json"

	"agentflow/internal/agentseam"
	"agentflow/store"
)

// The runtime's side of internal/agentseam.
//
// Packages of this module built on the runtime (think, the benchmarks) add
// work to it through its agentseam.Host, which Seam hands out.
//
// Package agenttest reads the runtime's probe to tell when it is quiet and
// uses it to crash it at chosen points. NewRuntime takes its probe from
// agentseam.ProbeFor: a harness hands the engine a store that is an
// agentseam.ProbeSource and so holds the probe of the runtime it creates.

// Seam is for the packages of this module built on the runtime (think):
// see internal/agentseam. Its argument's type is internal to agentflow, so
// no other module can call it.
func (rt *Runtime) Seam(agentseam.Key) *agentseam.Host { return rt.host }

// goWork runs fn as background work: Stop waits for it, and the probe
// counts it.
func (rt *Runtime) goWork(fn func()) {
	end := rt.probe.Begin()
	rt.work.Go(func() {
		defer end()
		fn()
	})
}

// scheduleHook runs the harness's hook before (or after) a schedule's
// callback; an error means the runtime was crashed there.
func (rt *Runtime) scheduleHook(ctx context.Context, s *store.Schedule, after bool) error {
	h := rt.probe.Hooks()
	if h == nil {
		return nil
	}
	f := h.BeforeSchedule
	if after {
		f = h.AfterSchedule
	}
	if f == nil {
		return nil
	}
	return f(ctx, agentseam.ScheduleRef{Agent: s.AgentKey, ID: s.ID, Method: s.Method, Due: s.NextRunAt})
}

// stashHook runs the harness's hook after a fiber's stash is durable.
func (f *Fiber) stashHook(ctx context.Context, raw json.RawMessage) error {
	h := f.in.rt.probe.Hooks()
	if h == nil || h.AfterStash == nil {
		return nil
	}
	return h.AfterStash(ctx, agentseam.FiberRef{Agent: f.in.key, ID: f.info.ID, Name: f.info.Name, Stash: raw})
}
