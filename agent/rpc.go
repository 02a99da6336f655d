package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"agentflow/store"
)

// Stream is the channel a streaming method sends its chunks through. A
// method streams by taking a *Stream after its context:
//
//	func (c *Counter) Countdown(ctx context.Context, s *agent.Stream, from int) (string, error)
//
// Each Send reaches a WebSocket caller as a `done:false` reply; the
// method's return value is the final `done:true` reply.
type Stream struct {
	send func(chunk json.RawMessage) error
}

// Send encodes v as JSON and sends it as one chunk. It fails when the
// caller has gone.
func (s *Stream) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("stream chunk: %w", err)
	}
	if s == nil || s.send == nil {
		return nil
	}
	return s.send(b)
}

type ctxKey int

const (
	connKey ctxKey = iota
	scheduleKey
)

// ConnFromContext returns the WebSocket connection a call came over, or
// nil when it did not come over one.
func ConnFromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey).(*Conn)
	return c
}

// Ref addresses one agent instance by class and name, for calls from Go
// code: workflow steps, other agents, tests. Calls go to the instance on
// this node, activating it here if it is live nowhere.
type Ref struct {
	rt  *Runtime
	key store.AgentKey
}

// Ref returns a reference to the instance name of class.
func (rt *Runtime) Ref(class, name string) Ref {
	return Ref{rt: rt, key: store.AgentKey{Class: class, Name: name}}
}

// Key returns the instance's class and name.
func (r Ref) Key() store.AgentKey { return r.key }

// CallOptions are options of Ref.CallWith.
type CallOptions struct {
	// OnChunk receives the chunks of a streaming method; without it they
	// are discarded.
	OnChunk func(chunk json.RawMessage) error
	// callable restricts the call to methods marked callable (WebSocket
	// clients).
	callable bool
	conn     *Conn
}

// Call calls an exported method by name. Each argument is checked against
// the method's parameter: a value of the parameter's type passes as it is,
// a json.RawMessage is decoded into it, anything else is converted through
// JSON. The result is the method's result as JSON (null for none).
func (r Ref) Call(ctx context.Context, method string, args ...any) (json.RawMessage, error) {
	return r.CallWith(ctx, method, CallOptions{}, args...)
}

// CallWith is Call with options.
func (r Ref) CallWith(ctx context.Context, method string, o CallOptions, args ...any) (json.RawMessage, error) {
	c, m, err := r.rt.lookup(r.key.Class, method, o.callable)
	if err != nil {
		return nil, err
	}
	vals, err := m.convertArgs(c.name, args)
	if err != nil {
		return nil, err
	}
	return r.rt.invoke(ctx, c, r.key.Name, m, vals, o)
}

// lookup finds a method of a class and checks clients may call it.
func (rt *Runtime) lookup(className, name string, callable bool) (*class, *method, error) {
	c, err := rt.class(className)
	if err != nil {
		return nil, nil, err
	}
	m := c.methods[name]
	if m == nil {
		return nil, nil, &MethodError{Class: c.name, Method: name, Err: ErrMethodNotFound}
	}
	if callable && !m.callable {
		return nil, nil, &MethodError{Class: c.name, Method: name, Err: ErrNotCallable}
	}
	return c, m, nil
}

// invoke runs a method with decoded arguments on the live instance.
func (rt *Runtime) invoke(ctx context.Context, c *class, name string, m *method, args []reflect.Value, o CallOptions) (json.RawMessage, error) {
	in, err := rt.acquire(ctx, c, name)
	if err != nil {
		return nil, err
	}
	defer rt.release(in)
	if o.conn != nil {
		ctx = context.WithValue(ctx, connKey, o.conn)
	}
	var res any
	err = in.run(ctx, func() error {
		var err error
		res, err = m.invoke(ctx, in.obj, &Stream{send: o.OnChunk}, args)
		return err
	})
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: encode result: %w", c.name, m.wire, err)
	}
	return out, nil
}

// Do runs fn on the instance's class value (its *T), holding the instance's
// lock like any call, activating it if need be. It is for code that knows
// the instance only by class name, such as a base's helpers.
func (r Ref) Do(ctx context.Context, fn func(ctx context.Context, self any) error) error {
	c, err := r.rt.class(r.key.Class)
	if err != nil {
		return err
	}
	in, err := r.rt.acquire(ctx, c, r.key.Name)
	if err != nil {
		return err
	}
	defer r.rt.release(in)
	return in.run(ctx, func() error { return fn(ctx, in.obj) })
}

// State returns the instance's state as JSON, activating it if need be.
func (r Ref) State(ctx context.Context) (json.RawMessage, error) {
	c, err := r.rt.class(r.key.Class)
	if err != nil {
		return nil, err
	}
	in, err := r.rt.acquire(ctx, c, r.key.Name)
	if err != nil {
		return nil, err
	}
	defer r.rt.release(in)
	return in.obj.stateJSON()
}

// classOf finds the class registered for the pointer type A.
func classOf[A any](rt *Runtime) (*class, error) {
	t := reflect.TypeFor[A]()
	rt.classMu.RLock()
	c := rt.byType[t]
	rt.classMu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("agent class of type %s: %w", t, ErrUnknownClass)
	}
	return c, nil
}

// Call calls a method of the agent instance name with one argument, checked
// at compile time: the method is given as a method expression.
//
//	n, err := agent.Call(ctx, rt, "alice", (*Counter).Increment, 5)
//
// The call holds the instance's lock like any other call.
func Call[A any, Arg any, R any](ctx context.Context, rt *Runtime, name string, m func(A, context.Context, Arg) (R, error), arg Arg) (R, error) {
	return With(ctx, rt, name, func(ctx context.Context, a A) (R, error) { return m(a, ctx, arg) })
}

// Call0 is Call for a method that takes no argument.
func Call0[A any, R any](ctx context.Context, rt *Runtime, name string, m func(A, context.Context) (R, error)) (R, error) {
	return With(ctx, rt, name, func(ctx context.Context, a A) (R, error) { return m(a, ctx) })
}

// With runs fn on the agent instance name of class A (a registered *T),
// holding the instance's lock, and returns its result.
func With[A any, R any](ctx context.Context, rt *Runtime, name string, fn func(ctx context.Context, a A) (R, error)) (R, error) {
	var zero R
	c, err := classOf[A](rt)
	if err != nil {
		return zero, err
	}
	in, err := rt.acquire(ctx, c, name)
	if err != nil {
		return zero, err
	}
	defer rt.release(in)
	var res R
	err = in.run(ctx, func() error {
		var err error
		res, err = fn(ctx, in.obj.(A))
		return err
	})
	return res, err
}
