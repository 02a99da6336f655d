package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"agentflow/store"
)

// instance is one live activation of an agent on this node.
type instance struct {
	rt    *Runtime
	cls   *class
	key   store.AgentKey
	log   *slog.Logger
	obj   Base // the class's *T
	lease store.AgentLease

	// lock serializes calls: holding it is sending into it.
	lock chan struct{}

	// stateMu orders state writes with their broadcasts, and connection
	// sign-ups with both, so that a new connection never misses a change.
	stateMu sync.Mutex
	// released is set, under stateMu, before the lease is released: the
	// activation writes nothing after that (see releaseLease).
	released bool

	connMu sync.Mutex
	conns  map[*Conn]struct{}

	fibMu  sync.Mutex
	fibers map[string]*runningFiber

	// telling is the workflow whose end the agent's hook is being told of
	// (see deliver); touched, whether the agent changed that workflow's
	// tracking meanwhile (restarted it, deleted its row).
	tellMu  sync.Mutex
	telling string
	touched bool

	// acks are the notices' acknowledgements being written.
	acks acks

	// Under rt.mu.
	refs      int // calls in progress, open connections, running fibers, schedule runs
	idleSince time.Time
	gone      bool // evicted or dropped: acquire must activate anew
}

// run calls fn holding the instance's lock, so that it never runs
// concurrently with another call on the instance.
func (in *instance) run(ctx context.Context, fn func() error) error {
	select {
	case in.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-in.lock }()
	return in.guard(fn)
}

// guard calls fn, turning a panic into a *PanicError.
func (in *instance) guard(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn()
}

// saveState persists the state under this activation's lease; the caller
// holds stateMu. Losing the lease means another node has activated the
// agent: this activation is dropped.
func (in *instance) saveState(ctx context.Context, raw []byte) error {
	if in.released {
		return fmt.Errorf("save state of agent %s: its activation has ended: %w", in.key, store.ErrLeaseLost)
	}
	err := in.rt.store.SaveAgentState(ctx, in.lease, raw, in.rt.clock.Now())
	if errors.Is(err, store.ErrLeaseLost) {
		in.rt.drop(in)
	}
	if err != nil {
		return fmt.Errorf("save state of agent %s: %w", in.key, err)
	}
	return nil
}

// releaseLease ends this activation in the store. From then on it writes
// no state, not even from a call still running (Stop releases instances
// that have some) or from code that kept the class's value: the store may
// delete the row of a first activation that stored nothing, and a later
// activation then has fence 1 again, the lease this one holds. A write in
// progress holds stateMu, so it commits before the release is sent.
func (in *instance) releaseLease(ctx context.Context) error {
	in.stateMu.Lock()
	in.released = true
	in.stateMu.Unlock()
	return in.rt.store.ReleaseAgent(ctx, in.lease, in.rt.clock.Now())
}

// stateFrame is the protocol frame carrying the state.
func stateFrame(raw []byte) []byte {
	b := make([]byte, 0, len(raw)+32)
	b = append(b, `{"type":"cf_agent_state","state":`...)
	b = append(b, raw...)
	return append(b, '}')
}

// broadcastState sends the state to every connection but source, which
// has the value it sent. The caller holds stateMu.
func (in *instance) broadcastState(raw []byte, source *Conn) {
	in.broadcast(stateFrame(raw), source)
}

func (in *instance) broadcast(msg []byte, except ...*Conn) {
	in.connMu.Lock()
	defer in.connMu.Unlock()
next:
	for c := range in.conns {
		for _, e := range except {
			if c == e {
				continue next
			}
		}
		c.enqueue(msg)
	}
}

func (in *instance) connections() []*Conn {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	out := make([]*Conn, 0, len(in.conns))
	for c := range in.conns {
		out = append(out, c)
	}
	return out
}

func (in *instance) addConn(c *Conn) {
	in.connMu.Lock()
	if in.conns == nil {
		in.conns = map[*Conn]struct{}{}
	}
	in.conns[c] = struct{}{}
	in.connMu.Unlock()
}

func (in *instance) removeConn(c *Conn) {
	in.connMu.Lock()
	delete(in.conns, c)
	in.connMu.Unlock()
}

func (in *instance) closeConns(code int, reason string) {
	for _, c := range in.connections() {
		c.Close(code, reason)
	}
}

// beginTelling notes that the agent's hook is being told that workflow id
// ended; endTelling reports whether the agent changed that workflow's
// tracking meanwhile (touch).
func (in *instance) beginTelling(id string) {
	in.tellMu.Lock()
	in.telling, in.touched = id, false
	in.tellMu.Unlock()
}

func (in *instance) endTelling() bool {
	in.tellMu.Lock()
	defer in.tellMu.Unlock()
	t := in.touched
	in.telling, in.touched = "", false
	return t
}

// touch notes that the agent changed workflow id's tracking.
func (in *instance) touch(id string) {
	in.tellMu.Lock()
	if in.telling == id {
		in.touched = true
	}
	in.tellMu.Unlock()
}
