package agentseam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"agentflow/internal/telemetry"
	"agentflow/store"
)

// Key is the argument of agent.Runtime.Seam. Its zero value is the only
// one; it has a field so that no type outside this package is assignable
// to it. Other modules cannot import this package, so they can neither
// call Seam nor name what it returns.
type Key struct{ _ struct{} }

// MethodPrefix starts the method of every schedule and call of the
// runtime's own, as opposed to the exported methods of a class.
const MethodPrefix = "agentflow:"

// NoticeHandler handles a schedule of the runtime's own kind (its method
// starts with MethodPrefix), holding the agent's lock; self is the class's
// *T and s the schedule's row. A base like think.Agent registers one for
// the schedules it makes.
type NoticeHandler func(ctx context.Context, self any, s store.Schedule) error

// CallHandler is a method of the runtime's own (its name starts with
// MethodPrefix), called by name like a class's method: it runs holding the
// instance's lock, with self the class value (its *T), on whichever node
// the agent is live. arg is its one argument as JSON (nil without one);
// the result is encoded as JSON.
type CallHandler func(ctx context.Context, self any, arg json.RawMessage) (any, error)

// Finder returns agents of the given classes that need activating, e.g.
// because durable work of theirs has no live runner.
type Finder func(ctx context.Context, classes []string) ([]store.AgentKey, error)

// Host is the part of an agent runtime that the packages of this module
// built on it (think, the benchmarks) use and users do not: the whole
// store, the runtime's logger and poll interval, and the registrations
// that add work to the runtime (notice and call handlers, loops, finders,
// per-runtime values). The runtime makes one with NewHost and reads the
// registrations back; agent.Runtime.Seam hands it out.
//
// Register before the runtime's Start: loops added later do not run.
type Host struct {
	store        store.Store
	log          *slog.Logger
	pollInterval time.Duration

	mu      sync.RWMutex
	notices map[string]NoticeHandler
	calls   map[string]CallHandler
	loops   map[string]func(context.Context)
	finders []Finder // replaced, never changed in place
	exts    map[string]any
	tel     *telemetry.T
}

// NewHost returns the host of a runtime over st, logging to log and
// polling every pollInterval.
func NewHost(st store.Store, log *slog.Logger, pollInterval time.Duration) *Host {
	return &Host{
		store: st, log: log, pollInterval: pollInterval,
		notices: map[string]NoticeHandler{},
		calls:   map[string]CallHandler{},
		loops:   map[string]func(context.Context){},
		exts:    map[string]any{},
	}
}

// SetTelemetry sets what Telemetry returns; the runtime calls it once,
// before any package built on it can ask.
func (h *Host) SetTelemetry(t *telemetry.T) { h.tel = t }

// Telemetry returns the runtime's tracer and instruments (never nil; off
// when the runtime has no providers).
func (h *Host) Telemetry() *telemetry.T {
	if h.tel == nil {
		return &telemetry.T{}
	}
	return h.tel
}

// Store returns the whole store the runtime's agents live in.
func (h *Host) Store() store.Store { return h.store }

// Logger returns the runtime's logger, for loops added with AddLoop.
func (h *Host) Logger() *slog.Logger { return h.log }

// PollInterval returns how often the runtime, and the loops added to it
// (think's outbox), ask the store for work when no wake (store.Waker)
// says it is due.
func (h *Host) PollInterval() time.Duration { return h.pollInterval }

// HandleNotice registers fn for schedules whose method is method, which
// must start with MethodPrefix.
func (h *Host) HandleNotice(method string, fn NoticeHandler) error {
	if err := checkOwn("notice", method); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.notices[method]; dup {
		return fmt.Errorf("agent: notice method %q has a handler already", method)
	}
	h.notices[method] = fn
	return nil
}

// Notice returns the handler of notices of method, or nil.
func (h *Host) Notice(method string) NoticeHandler {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.notices[method]
}

// HandleCall registers fn as the method named method, which must start
// with MethodPrefix, for every class. It is how a base like think.Agent
// gives workflows of any service a way in. Every node that hosts the
// classes must register it.
func (h *Host) HandleCall(method string, fn CallHandler) error {
	if err := checkOwn("call", method); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.calls[method]; dup {
		return fmt.Errorf("agent: call method %q is already handled", method)
	}
	h.calls[method] = fn
	return nil
}

// Call returns the handler of the runtime's own method, or nil.
func (h *Host) Call(method string) CallHandler {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.calls[method]
}

// AddLoop registers background work that runs from the runtime's Start
// until its Stop, once per runtime whatever the number of calls with the
// same name: think.Agent delivers its outbox this way.
func (h *Host) AddLoop(name string, loop func(ctx context.Context)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.loops[name]; !ok {
		h.loops[name] = loop
	}
}

// Loops returns the loops added.
func (h *Host) Loops() []func(context.Context) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]func(context.Context), 0, len(h.loops))
	for _, l := range h.loops {
		out = append(out, l)
	}
	return out
}

// AddFinder registers a finder that the runtime calls every poll interval;
// it activates the agents found (which runs their OnActivate hooks). It is
// how think.Agent resumes work after a crash.
func (h *Host) AddFinder(f Finder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.finders = append(slices.Clone(h.finders), f)
}

// Finders returns the finders added.
func (h *Host) Finders() []Finder {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.finders
}

// Extension returns the runtime's value named name, making it with make
// the first time: per-runtime state of a package built on agents (think's
// outbox), without globals.
func (h *Host) Extension(name string, make func() any) any {
	h.mu.RLock()
	v, ok := h.exts[name]
	h.mu.RUnlock()
	if ok {
		return v
	}
	v = make() // outside the lock: make may call AddLoop
	h.mu.Lock()
	defer h.mu.Unlock()
	if prev, ok := h.exts[name]; ok {
		return prev
	}
	h.exts[name] = v
	return v
}

func checkOwn(what, method string) error {
	if !strings.HasPrefix(method, MethodPrefix) {
		return fmt.Errorf("agent: %s method %q must start with %q", what, method, MethodPrefix)
	}
	return nil
}
