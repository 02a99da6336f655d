package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"
)

// Agent is the base every agent class embeds, with the class's state type S:
//
//	type CounterState struct{ Count int `json:"count"` }
//	type Counter struct{ agent.Agent[CounterState] }
//
// Its methods are available on the class's methods' receiver once the
// runtime has activated the instance.
type Agent[S any] struct {
	in   *instance
	self any // the embedding *T

	mu    sync.RWMutex // guards state
	state S
}

func (a *Agent[S]) bind(in *instance, self any) { a.in, a.self = in, self }
func (a *Agent[S]) base() *instance             { return a.in }

// Name returns the instance's name.
func (a *Agent[S]) Name() string { return a.in.key.Name }

// Class returns the instance's class name.
func (a *Agent[S]) Class() string { return a.in.key.Class }

// Logger returns the runtime's logger with the agent's class and name.
func (a *Agent[S]) Logger() *slog.Logger { return a.in.log }

// State returns the current state. Copy-on-write is the caller's choice:
// mutate a copy and pass it to SetState.
func (a *Agent[S]) State() S {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.state
}

// SetState validates, persists and broadcasts a new state, then calls the
// OnStateChanged hook. A rejected change (the ValidateState hook's error,
// wrapped in ErrStateRejected) is neither persisted nor broadcast. Inside a
// call made over a readonly connection it fails with ErrReadonly.
func (a *Agent[S]) SetState(ctx context.Context, s S) error {
	if c := ConnFromContext(ctx); c != nil && c.Readonly() {
		return fmt.Errorf("set state of agent %s: %w", a.in.key, ErrReadonly)
	}
	return a.setState(ctx, s, nil)
}

// setState applies a new state. pushedBy is the connection that pushed it
// (a cf_agent_state frame), which already has it and so is left out of the
// broadcast; a change made by a method, even one a client called, reaches
// every connection, the caller's included, as the JavaScript client expects.
func (a *Agent[S]) setState(ctx context.Context, s S, pushedBy *Conn) error {
	source := ConnFromContext(ctx)
	if v, ok := a.self.(StateValidator[S]); ok {
		if err := v.ValidateState(ctx, s, source); err != nil {
			return fmt.Errorf("%w: %w", ErrStateRejected, err)
		}
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("set state of agent %s: encode: %w", a.in.key, err)
	}
	a.in.stateMu.Lock()
	if err := a.in.saveState(ctx, raw); err != nil {
		a.in.stateMu.Unlock()
		return err
	}
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
	a.in.broadcastState(raw, pushedBy)
	a.in.stateMu.Unlock()
	if h, ok := a.self.(StateChangedHook[S]); ok {
		h.OnStateChanged(ctx, s, source)
	}
	return nil
}

// loadState sets the state from its stored JSON, or from the InitialState
// hook (or S's zero value) when none is stored.
func (a *Agent[S]) loadState(raw []byte) error {
	var s S
	if raw == nil {
		if h, ok := a.self.(InitialStater[S]); ok {
			s = h.InitialState()
		}
	} else if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("load state of agent %s: %w", a.in.key, err)
	}
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
	return nil
}

func (a *Agent[S]) stateJSON() ([]byte, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return json.Marshal(a.state)
}

// setStateJSON applies a state a client pushed.
func (a *Agent[S]) setStateJSON(ctx context.Context, raw []byte) error {
	var s S
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("%w: %w", ErrStateRejected, err)
	}
	return a.setState(ctx, s, ConnFromContext(ctx))
}

// mergeStateJSON merges a JSON object's top-level fields into the state.
func (a *Agent[S]) mergeStateJSON(ctx context.Context, patch []byte) error {
	cur, err := a.stateJSON()
	if err != nil {
		return err
	}
	var m, p map[string]json.RawMessage
	if err := json.Unmarshal(cur, &m); err != nil || m == nil {
		return fmt.Errorf("merge state of agent %s: the state is not a JSON object", a.in.key)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return fmt.Errorf("merge state of agent %s: the patch is not a JSON object", a.in.key)
	}
	maps.Copy(m, p)
	merged, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return a.setStateJSON(ctx, merged)
}

// resetState sets the initial state again.
func (a *Agent[S]) resetState(ctx context.Context) error {
	var s S
	if h, ok := a.self.(InitialStater[S]); ok {
		s = h.InitialState()
	}
	return a.setState(ctx, s, nil)
}

// Broadcast sends a text message to every connected WebSocket client except
// those listed. v is sent as it is when it is a string or []byte, and as
// JSON otherwise.
func (a *Agent[S]) Broadcast(v any, except ...*Conn) error {
	msg, err := encodeMessage(v)
	if err != nil {
		return fmt.Errorf("broadcast from agent %s: %w", a.in.key, err)
	}
	a.in.broadcast(msg, except...)
	return nil
}

// Self returns the class's value embedding this base (the *T), for bases
// such as think.Agent that look for hooks the class implements.
func (a *Agent[S]) Self() any { return a.self }

// Runtime returns the runtime the instance is live in.
func (a *Agent[S]) Runtime() *Runtime { return a.in.rt }

// Go runs fn in the background, outside the instance's lock, keeping the
// instance in memory until fn returns. ctx ends when the runtime stops.
// Unlike a fiber it has no ledger: the caller keeps its own durable record
// of the work (as think.Agent does with its submissions).
func (a *Agent[S]) Go(fn func(ctx context.Context)) {
	in := a.in
	rt := in.rt
	rt.mu.Lock()
	in.refs++
	rt.mu.Unlock()
	rt.goWork(func() {
		defer rt.release(in)
		if err := in.guard(func() error { fn(rt.ctx); return nil }); err != nil {
			in.reportError(context.WithoutCancel(rt.ctx), err)
		}
	})
}

// Connections returns the open WebSocket connections to the instance.
func (a *Agent[S]) Connections() []*Conn { return a.in.connections() }

func encodeMessage(v any) ([]byte, error) {
	switch m := v.(type) {
	case string:
		return []byte(m), nil
	case []byte:
		return m, nil
	default:
		return json.Marshal(v)
	}
}
