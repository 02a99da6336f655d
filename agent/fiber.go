package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"agentflow/internal/ids"
	"agentflow/store"
)

// FiberFunc is a fiber's body. It runs in the background, outside the
// instance's lock, under a context that CancelFiber cancels; it should
// return soon after. It must be idempotent: after a crash the recovery
// hook may run it again, resuming from its last Stash.
type FiberFunc func(ctx context.Context, f *Fiber) error

// FiberOptions are options of StartFiber.
type FiberOptions struct {
	// ID names the fiber; default a generated "fib_…" id. Starting a fiber
	// with the ID of an existing one returns that one.
	ID string
	// IdempotencyKey, when set, makes StartFiber return the agent's
	// existing fiber with that key instead of starting another.
	IdempotencyKey string
	// Metadata is stored with the fiber as JSON.
	Metadata any
	// WaitForCompletion makes StartFiber return only when the fiber has
	// finished, with its error.
	WaitForCompletion bool
}

// FiberInfo is a fiber's ledger entry.
type FiberInfo struct {
	ID             string
	Name           string
	IdempotencyKey string
	Status         store.FiberStatus
	Metadata       json.RawMessage
	Stash          json.RawMessage
	Error          string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     time.Time
	// Created is false when StartFiber found an existing fiber with the
	// same ID or IdempotencyKey and started nothing.
	Created bool
}

func fiberInfo(f *store.Fiber) FiberInfo {
	return FiberInfo{ID: f.ID, Name: f.Name, IdempotencyKey: f.IdempotencyKey, Status: f.Status,
		Metadata: f.Metadata, Stash: f.Stash, Error: f.Error, CreatedAt: f.CreatedAt,
		UpdatedAt: f.UpdatedAt, FinishedAt: f.FinishedAt}
}

// Fiber is the handle a running fiber gets.
type Fiber struct {
	in   *instance
	info FiberInfo

	mu    sync.Mutex
	stash json.RawMessage
}

// ID returns the fiber's id.
func (f *Fiber) ID() string { return f.info.ID }

// Name returns the fiber's name.
func (f *Fiber) Name() string { return f.info.Name }

// Metadata decodes the fiber's metadata into v.
func (f *Fiber) Metadata(v any) error {
	if f.info.Metadata == nil {
		return nil
	}
	return json.Unmarshal(f.info.Metadata, v)
}

// Stash stores a checkpoint (v as JSON) in the ledger, so that a fiber
// resumed after a crash can continue from it.
func (f *Fiber) Stash(ctx context.Context, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("stash of fiber %s: %w", f.info.ID, err)
	}
	rt := f.in.rt
	if err := rt.store.StashFiber(ctx, f.in.key, f.info.ID, rt.node, raw, rt.clock.Now()); err != nil {
		return fmt.Errorf("stash of fiber %s: %w", f.info.ID, err)
	}
	f.mu.Lock()
	f.stash = raw
	f.mu.Unlock()
	if err := f.stashHook(ctx, raw); err != nil {
		return fmt.Errorf("stash of fiber %s: %w", f.info.ID, err)
	}
	return nil
}

// Stashed decodes the last checkpoint into v and reports whether there was
// one.
func (f *Fiber) Stashed(v any) (bool, error) {
	f.mu.Lock()
	raw := f.stash
	f.mu.Unlock()
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("stash of fiber %s: %w", f.info.ID, err)
	}
	return true, nil
}

// runningFiber is a fiber running on this node.
type runningFiber struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // fn's error, set before done closes
}

// errFiberCancelled is the cause CancelFiber cancels a fiber with.
var errFiberCancelled = errors.New("fiber cancelled")

// StartFiber records a fiber in the ledger and runs fn in the background.
// With an ID or IdempotencyKey that the agent already has a fiber for, it
// returns that fiber (Created false) and runs nothing.
func (a *Agent[S]) StartFiber(ctx context.Context, name string, fn FiberFunc, o FiberOptions) (FiberInfo, error) {
	in := a.in
	rt := in.rt
	if name == "" {
		return FiberInfo{}, errors.New("start fiber: name is empty")
	}
	if fn == nil {
		return FiberInfo{}, fmt.Errorf("start fiber %q: fn is nil", name)
	}
	var meta []byte
	if o.Metadata != nil {
		var err error
		if meta, err = json.Marshal(o.Metadata); err != nil {
			return FiberInfo{}, fmt.Errorf("start fiber %q: metadata: %w", name, err)
		}
	}
	id := o.ID
	if id == "" {
		id = "fib_" + ids.Random()
	}
	now := rt.clock.Now()
	row := &store.Fiber{ID: id, AgentKey: in.key, Name: name, IdempotencyKey: o.IdempotencyKey,
		Metadata: meta, Status: store.FiberRunning, Owner: rt.node, CreatedAt: now, UpdatedAt: now}
	existing, created, err := rt.store.CreateFiber(ctx, row)
	if err != nil {
		return FiberInfo{}, fmt.Errorf("start fiber %q of agent %s: %w", name, in.key, err)
	}
	if !created {
		return fiberInfo(existing), nil
	}
	info := fiberInfo(row)
	info.Created = true
	return in.runFiber(ctx, info, fn, o.WaitForCompletion)
}

// ResumeFiber runs fn again for a fiber that is not running, typically from
// the OnFiberRecovered hook after a crash; f.Stashed gives its last
// checkpoint. It fails with store.ErrFinished for a finished fiber.
func (a *Agent[S]) ResumeFiber(ctx context.Context, id string, fn FiberFunc, wait bool) (FiberInfo, error) {
	in := a.in
	rt := in.rt
	in.fibMu.Lock()
	_, running := in.fibers[id]
	in.fibMu.Unlock()
	if running {
		return FiberInfo{}, fmt.Errorf("resume fiber %s of agent %s: it is running", id, in.key)
	}
	row, err := rt.store.ClaimFiber(ctx, in.key, id, rt.node, rt.clock.Now())
	if err != nil {
		return FiberInfo{}, fmt.Errorf("resume fiber %s of agent %s: %w", id, in.key, err)
	}
	return in.runFiber(ctx, fiberInfo(row), fn, wait)
}

func (in *instance) runFiber(ctx context.Context, info FiberInfo, fn FiberFunc, wait bool) (FiberInfo, error) {
	rt := in.rt
	fctx, cancel := context.WithCancelCause(rt.ctx)
	rf := &runningFiber{cancel: cancel, done: make(chan struct{})}
	in.fibMu.Lock()
	if in.fibers == nil {
		in.fibers = map[string]*runningFiber{}
	}
	in.fibers[info.ID] = rf
	in.fibMu.Unlock()
	rt.mu.Lock()
	in.refs++ // a running fiber keeps the instance live
	rt.mu.Unlock()

	f := &Fiber{in: in, info: info, stash: info.Stash}
	rt.goWork(func() {
		defer rt.release(in)
		defer close(rf.done)
		err := in.guard(func() error { return fn(fctx, f) })
		rf.err = err
		in.fibMu.Lock()
		delete(in.fibers, info.ID)
		in.fibMu.Unlock()
		cause := context.Cause(fctx)
		status, msg := store.FiberCompleted, ""
		switch {
		case errors.Is(cause, errFiberCancelled):
			status = store.FiberAborted
		case rt.ctx.Err() != nil:
			// The runtime is stopping: the fiber was cut off, as by a
			// crash, and its next activation hands it to the hook.
			status, msg = store.FiberInterrupted, "the runtime stopped while the fiber ran"
		case err != nil:
			status, msg = store.FiberError, err.Error()
		}
		cancel(nil)
		bg := context.WithoutCancel(fctx)
		if uerr := rt.store.UpdateFiber(bg, in.key, info.ID, rt.node, status, msg, rt.clock.Now()); uerr != nil && !errors.Is(uerr, store.ErrLeaseLost) {
			in.log.Warn("recording fiber's end failed", "fiber", info.ID, "err", uerr)
		}
		if status == store.FiberError {
			in.reportError(bg, fmt.Errorf("fiber %s (%s) of agent %s: %w", info.ID, info.Name, in.key, err))
		}
	})
	if !wait {
		return info, nil
	}
	select {
	case <-rf.done:
	case <-ctx.Done():
		return info, ctx.Err()
	}
	final, err := in.rt.store.GetFiber(ctx, in.key, info.ID)
	if err != nil {
		return info, err
	}
	out := fiberInfo(final)
	out.Created = info.Created
	return out, rf.err
}

// GetFiber returns a fiber's ledger entry, or an error matching
// store.ErrNotFound.
func (a *Agent[S]) GetFiber(ctx context.Context, id string) (FiberInfo, error) {
	f, err := a.in.rt.store.GetFiber(ctx, a.in.key, id)
	if err != nil {
		return FiberInfo{}, err
	}
	return fiberInfo(f), nil
}

// ListFibers returns the agent's fibers, oldest first.
func (a *Agent[S]) ListFibers(ctx context.Context, f store.FiberFilter) ([]FiberInfo, error) {
	fs, err := a.in.rt.store.ListFibers(ctx, a.in.key, f)
	if err != nil {
		return nil, err
	}
	out := make([]FiberInfo, len(fs))
	for i := range fs {
		out[i] = fiberInfo(&fs[i])
	}
	return out, nil
}

// CancelFiber asks a fiber to stop: a running one has its context
// cancelled and is recorded as aborted when it returns; a pending or
// interrupted one is aborted at once. It reports whether the fiber was
// unfinished.
func (a *Agent[S]) CancelFiber(ctx context.Context, id string) (bool, error) {
	in := a.in
	in.fibMu.Lock()
	rf := in.fibers[id]
	in.fibMu.Unlock()
	if rf != nil {
		rf.cancel(errFiberCancelled)
		return true, nil
	}
	prev, err := in.rt.store.AbortFiber(ctx, in.key, id, in.rt.clock.Now())
	if err != nil {
		return false, err
	}
	return !prev.Finished(), nil
}

// DeleteFiber removes a fiber from the ledger and reports whether it
// existed. A running fiber must be cancelled first.
func (a *Agent[S]) DeleteFiber(ctx context.Context, id string) (bool, error) {
	in := a.in
	in.fibMu.Lock()
	_, running := in.fibers[id]
	in.fibMu.Unlock()
	if running {
		return false, fmt.Errorf("delete fiber %s of agent %s: it is running; cancel it first", id, in.key)
	}
	return in.rt.store.DeleteFiber(ctx, in.key, id)
}

// recoverFibers marks the fibers a crashed node was running as interrupted
// and hands every interrupted fiber to the OnFiberRecovered hook. A fiber
// the hook leaves interrupted is offered again on the next activation, so
// a crash between the two steps loses no fiber.
func (in *instance) recoverFibers(ctx context.Context) error {
	if _, err := in.rt.store.InterruptFibers(ctx, in.key, in.rt.node, in.rt.clock.Now()); err != nil {
		return fmt.Errorf("recover fibers: %w", err)
	}
	fs, err := in.rt.store.ListFibers(ctx, in.key, store.FiberFilter{Status: store.FiberInterrupted})
	if err != nil {
		return fmt.Errorf("recover fibers: %w", err)
	}
	h, ok := in.obj.(FiberRecoverer)
	for i := range fs {
		if !ok {
			in.log.Warn("fiber interrupted by a crash; the class has no OnFiberRecovered hook", "fiber", fs[i].ID)
			continue
		}
		if err := in.guard(func() error { return h.OnFiberRecovered(ctx, fiberInfo(&fs[i])) }); err != nil {
			in.reportError(ctx, fmt.Errorf("OnFiberRecovered for fiber %s: %w", fs[i].ID, err))
		}
	}
	return nil
}

// recoverLoop activates agents whose fibers were cut off by a crash of the
// node they ran on, which hands those fibers to the recovery hook.
func (rt *Runtime) recoverLoop(ctx context.Context) {
	t := rt.clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		rt.recoverPass(ctx)
		t.Reset(rt.opts.PollInterval)
	}
}

// recoverPass activates the agents that have work to recover.
func (rt *Runtime) recoverPass(ctx context.Context) {
	defer rt.probe.Begin()()
	keys, err := rt.store.OrphanedFiberAgents(ctx, rt.classNames(), 100)
	if err != nil && ctx.Err() == nil {
		rt.log.Warn("looking for fibers to recover failed", "err", err)
	}
	for _, f := range rt.host.Finders() {
		more, err := f(ctx, rt.classNames())
		if err != nil && ctx.Err() == nil {
			rt.log.Warn("looking for agents to activate failed", "err", err)
		}
		keys = append(keys, more...)
	}
	for _, k := range keys {
		c, err := rt.class(k.Class)
		if err != nil {
			continue // another service's class
		}
		in, err := rt.acquire(ctx, c, k.Name)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, ErrAgentElsewhere) {
				rt.log.Warn("activating agent to recover its fibers failed", "agent", k, "err", err)
			}
			continue
		}
		rt.release(in)
	}
}
