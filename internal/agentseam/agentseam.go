// Package agentseam holds the seams of the agent runtime for the packages
// of this module built on it, none of which is public API.
//
// Host (host.go) is what think, and the benchmarks, add to a runtime and
// read of it: notice and call handlers of the runtime's own methods,
// background loops, finders of agents to activate, per-runtime values, the
// whole store. agent.Runtime.Seam hands it out for a Key, which only
// packages of this module can make.
//
// Probe is the seam between the runtime and package agenttest, the test
// harness: what a harness needs to know about a runtime's background work
// to tell when the system is quiet, and the points where it may crash the
// runtime. A runtime always keeps a Probe;
// nothing here changes what the runtime does unless a harness sets Hooks.
// A harness gets hold of a runtime's probe by giving the engine a store
// that is a ProbeSource; there is no global registry.
//
// Work is counted from the moment it is started until it returns:
// schedule runs (including their retries and error hooks), fibers, an
// agent's background goroutines (agent.Agent.Go, which runs Think turns),
// the runtime's claim and recovery passes. Work that waits for something
// only time or the outside world will bring — a retry's backoff on the
// runtime's clock, a scripted model told to stall — parks itself while it
// waits (Park, Sleep): it is still running, but not busy.
package agentseam

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/store"
)

// Probe counts one runtime's background work. The zero value is not
// usable; a nil *Probe counts nothing and parks nothing.
type Probe struct {
	active  atomic.Int64 // work running and not parked
	running atomic.Int64 // work running, parked or not
	classes func() []string
	hooks   atomic.Pointer[Hooks]

	mu     sync.Mutex
	next   uint64
	parked map[uint64]time.Time // wake-up times of parked work; zero when none is known
}

// NewProbe returns a probe; classes lists the runtime's registered classes.
func NewProbe(classes func() []string) *Probe {
	return &Probe{classes: classes, parked: map[uint64]time.Time{}}
}

// ProbeSource is implemented by a store that a harness gives an engine
// (package agenttest's crash wrapper): a runtime over that engine takes its
// probe from the store, which is how the harness gets to watch and hook the
// runtime it creates without the runtime exporting its probe. A runtime
// whose engine's store is no ProbeSource, or whose source returns nil,
// makes its own probe with NewProbe.
type ProbeSource interface {
	// AgentProbe returns the probe for a runtime being created over the
	// store; classes lists the runtime's registered classes.
	AgentProbe(classes func() []string) *Probe
}

// ProbeFor returns the probe for a runtime over st: st's, when st is a
// ProbeSource that gives one, else a new one.
func ProbeFor(st any, classes func() []string) *Probe {
	if src, ok := st.(ProbeSource); ok {
		if p := src.AgentProbe(classes); p != nil {
			return p
		}
	}
	return NewProbe(classes)
}

// Begin counts a piece of work as running and busy until end is called.
func (p *Probe) Begin() (end func()) {
	if p == nil {
		return func() {}
	}
	p.running.Add(1)
	p.active.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			p.active.Add(-1)
			p.running.Add(-1)
		})
	}
}

// Active returns how many pieces of work are running and not parked.
func (p *Probe) Active() int64 { return p.active.Load() }

// Running returns how many pieces of work are running, parked or not.
func (p *Probe) Running() int64 { return p.running.Load() }

// Classes returns the runtime's registered classes.
func (p *Probe) Classes() []string { return p.classes() }

// NextWake returns the earliest time parked work waits for on the clock.
func (p *Probe) NextWake() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, t := range p.parked {
		if !t.IsZero() && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return first, !first.IsZero()
}

// park marks the calling work as waiting, until until on the clock or,
// when until is zero, for something outside the system.
func (p *Probe) park(until time.Time) (unpark func()) {
	if p == nil {
		return func() {}
	}
	p.mu.Lock()
	p.next++
	id := p.next
	p.parked[id] = until
	p.mu.Unlock()
	p.active.Add(-1)
	var once sync.Once
	return func() {
		once.Do(func() {
			// Busy again before the wake-up time is forgotten, so that a
			// harness never sees the work neither busy nor due.
			p.active.Add(1)
			p.mu.Lock()
			delete(p.parked, id)
			p.mu.Unlock()
		})
	}
}

// Sleep waits for d on clock, or until ctx ends, parked meanwhile. It
// returns ctx's error if ctx ended first.
func (p *Probe) Sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) error {
	until := clock.Now().Add(d)
	t := clock.NewTimer(d) // before parking: a harness may move the clock as soon as it is parked
	defer t.Stop()
	defer p.park(until)()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// SetHooks sets the crash points a harness injects; nil removes them.
func (p *Probe) SetHooks(h *Hooks) { p.hooks.Store(h) }

// Hooks returns the hooks set, or nil.
func (p *Probe) Hooks() *Hooks {
	if p == nil {
		return nil
	}
	return p.hooks.Load()
}

type probeKey struct{}

// WithProbe returns ctx carrying p; the runtime's background work runs
// under such a context.
func WithProbe(ctx context.Context, p *Probe) context.Context {
	return context.WithValue(ctx, probeKey{}, p)
}

// FromContext returns the probe ctx carries, or nil.
func FromContext(ctx context.Context) *Probe {
	p, _ := ctx.Value(probeKey{}).(*Probe)
	return p
}

// Park marks the work running under ctx as waiting for something outside
// the system (a model that does not answer) until unpark is called. It
// does nothing when ctx carries no probe.
func Park(ctx context.Context) (unpark func()) {
	return FromContext(ctx).park(time.Time{})
}

// Sleep is Probe.Sleep with the probe ctx carries, if any.
func Sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) error {
	return FromContext(ctx).Sleep(ctx, clock, d)
}

// Hooks are crash points. A hook that returns an error stops the work at
// that point: the runtime writes nothing more for it and returns, as if
// the process had died there. A harness returns an error only after it
// has cut the runtime off from its store and cancelled its context.
type Hooks struct {
	// BeforeSchedule is called when a claimed schedule is about to run its
	// callback (after the claim is durable).
	BeforeSchedule func(ctx context.Context, s ScheduleRef) error
	// AfterSchedule is called when the callback has returned, before the
	// schedule is moved to its next run or deleted.
	AfterSchedule func(ctx context.Context, s ScheduleRef) error
	// AfterStash is called when a fiber's checkpoint is durable, before
	// Stash returns; its error is Stash's.
	AfterStash func(ctx context.Context, f FiberRef) error
}

// ScheduleRef names a schedule run for Hooks.
type ScheduleRef struct {
	Agent  store.AgentKey
	ID     string
	Method string
	Due    time.Time
}

// FiberRef names a fiber's stash for Hooks.
type FiberRef struct {
	Agent store.AgentKey
	ID    string
	Name  string
	Stash json.RawMessage
}
