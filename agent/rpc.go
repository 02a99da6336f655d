package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/agentseam"
	"agentflow/internal/telemetry"
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
	// transport is how the call arrived, for telemetry; "" is in process
	// (or a WebSocket frame, when conn is set).
	transport string
}

// Call calls an exported method by name. Each argument is checked against
// the method's parameter: a value of the parameter's type passes as it is,
// a json.RawMessage is decoded into it, anything else is converted through
// JSON. The result is the method's result as JSON (null for none).
func (r Ref) Call(ctx context.Context, method string, args ...any) (json.RawMessage, error) {
	return r.CallWith(ctx, method, CallOptions{}, args...)
}

// CallWith is Call with options.
//
// The call goes to the node of the cluster the agent is live on (see
// Options.AdvertiseURL), its arguments as JSON; an agent live nowhere is
// activated here if this process has its class, and otherwise on a node
// that hosts it.
func (r Ref) CallWith(ctx context.Context, method string, o CallOptions, args ...any) (json.RawMessage, error) {
	rt := r.rt
	if err := ValidateName(r.key.Name); err != nil {
		return nil, fmt.Errorf("agent %s: %w", r.key.Class, err)
	}
	c, _ := rt.class(r.key.Class)
	p, err := rt.cluster.place(ctx, c, r.key)
	if err != nil {
		return nil, err
	}
	if !p.local {
		res, err := r.callRemote(ctx, p, method, o, args)
		if !errors.Is(err, errRunHere) {
			return res, err
		}
	}
	res, err := rt.callLocal(ctx, c, r.key.Name, method, o, args)
	if owned, ok := errors.AsType[*store.AgentOwnedError](err); ok && rt.cluster.enabled() && owned.Node.Address != "" {
		// Activated on another node since place looked.
		return r.callRemote(ctx, placement{node: owned.Node}, method, o, args)
	}
	return res, err
}

// callRemote sends the call to the node p names.
func (r Ref) callRemote(ctx context.Context, p placement, method string, o CallOptions, args []any) (json.RawMessage, error) {
	raw, err := jsonArgs(args)
	if err != nil {
		return nil, &MethodError{Class: r.key.Class, Method: method, Err: ErrBadArguments, Detail: err.Error()}
	}
	ctx, span := r.rt.tel.StartClientCall(ctx, r.key.Class, r.key.Name, method)
	res, err := r.rt.cluster.call(ctx, p, r.key, method, raw, o.OnChunk)
	if span != nil && !errors.Is(err, errRunHere) {
		telemetry.End(span, err, "")
	} else if span != nil {
		span.End()
	}
	return res, err
}

// jsonArgs encodes call arguments for another node; a json.RawMessage
// passes as it is.
func jsonArgs(args []any) ([]json.RawMessage, error) {
	raw := make([]json.RawMessage, len(args))
	for i, a := range args {
		if rm, ok := a.(json.RawMessage); ok {
			raw[i] = rm
			continue
		}
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
		raw[i] = b
	}
	return raw, nil
}

// callLocal runs a call by name on the instance here.
func (rt *Runtime) callLocal(ctx context.Context, c *class, name, method string, o CallOptions, args []any) (json.RawMessage, error) {
	if c == nil {
		return nil, fmt.Errorf("agent class: %w", ErrUnknownClass)
	}
	if h := rt.callHandler(method); h != nil {
		var arg json.RawMessage
		if len(args) > 0 {
			raw, err := jsonArgs(args[:1])
			if err != nil {
				return nil, &MethodError{Class: c.name, Method: method, Err: ErrBadArguments, Detail: err.Error()}
			}
			arg = raw[0]
		}
		return rt.runHandler(ctx, c, name, method, h, arg)
	}
	_, m, err := rt.lookup(c.name, method, o.callable)
	if err != nil {
		return nil, err
	}
	vals, err := m.convertArgs(c.name, args)
	if err != nil {
		return nil, err
	}
	return rt.invoke(ctx, c, name, m, vals, o)
}

// callHere answers a named call another node sent: on the instance here,
// activating it here, never sending it on.
func (rt *Runtime) callHere(ctx context.Context, key store.AgentKey, method string, args []json.RawMessage, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	if err := ValidateName(key.Name); err != nil {
		return nil, fmt.Errorf("agent %s: %w", key.Class, err)
	}
	c, err := rt.class(key.Class)
	if err != nil {
		return nil, err
	}
	if h := rt.callHandler(method); h != nil {
		var arg json.RawMessage
		if len(args) > 0 {
			arg = args[0]
		}
		return rt.runHandler(ctx, c, key.Name, method, h, arg)
	}
	_, m, err := rt.lookup(c.name, method, false)
	if err != nil {
		return nil, err
	}
	vals, err := m.decodeArgs(c.name, args)
	if err != nil {
		return nil, err
	}
	return rt.invoke(ctx, c, key.Name, m, vals, CallOptions{OnChunk: onChunk, transport: telemetry.TransportHTTP})
}

func (rt *Runtime) callHandler(method string) agentseam.CallHandler {
	if !isNotice(method) {
		return nil
	}
	return rt.host.Call(method)
}

// runHandler runs a runtime's own method on the instance here.
func (rt *Runtime) runHandler(ctx context.Context, c *class, name, method string, h agentseam.CallHandler, arg json.RawMessage) (json.RawMessage, error) {
	in, err := rt.acquire(ctx, c, name)
	if err != nil {
		return nil, err
	}
	defer rt.release(in)
	var res any
	err = in.run(ctx, func() error {
		var err error
		res, err = h(ctx, in.obj, arg)
		return err
	})
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: encode result: %w", c.name, method, err)
	}
	return out, nil
}

// stateMethod is the runtime's own method behind Ref.State.
const stateMethod = "agentflow:state"

func stateHandler(_ context.Context, self any, _ json.RawMessage) (any, error) {
	raw, err := self.(Base).stateJSON()
	return json.RawMessage(raw), err
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
func (rt *Runtime) invoke(ctx context.Context, c *class, name string, m *method, args []reflect.Value, o CallOptions) (_ json.RawMessage, err error) {
	if rt.tel.Tracing() || rt.tel.Metrics() {
		call := telemetry.Call{Class: c.name, Name: name, Method: m.wire, Transport: o.transport}
		if o.conn != nil {
			call.Transport, call.Link = telemetry.TransportWebSocket, o.conn.upgrade
		} else if call.Transport == "" {
			call.Transport = telemetry.TransportInProcess
		}
		var (
			span  trace.Span
			start time.Time
		)
		ctx, span, start = rt.tel.StartCall(ctx, call)
		defer func() { rt.tel.EndCall(ctx, span, start, c.name, call.Transport, err) }()
	}
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
// the instance only by class name, such as a base's helpers. A Go function
// runs only in this process: when the agent is live on another node, Do
// fails with an error matching ErrAgentElsewhere (call a method by name
// to reach it there).
func (r Ref) Do(ctx context.Context, fn func(ctx context.Context, self any) error) error {
	c, err := r.rt.class(r.key.Class)
	if err != nil {
		return err
	}
	in, err := r.rt.acquire(ctx, c, r.key.Name)
	if err != nil {
		return localOnly("Ref.Do", err)
	}
	defer r.rt.release(in)
	return in.run(ctx, func() error { return fn(ctx, in.obj) })
}

// localOnly explains an AgentOwnedError met by an API that runs Go code.
func localOnly(api string, err error) error {
	if errors.Is(err, ErrAgentElsewhere) {
		return fmt.Errorf("%w; %s runs a Go function, which works only in the process the agent is live in: call a method by name (Ref.Call, agent.Call) to reach it there", err, api)
	}
	return err
}

// State returns the instance's state as JSON, activating it if need be,
// from whichever node it is live on.
func (r Ref) State(ctx context.Context) (json.RawMessage, error) {
	return r.Call(ctx, stateMethod)
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
//
// When the agent is live on another node of the cluster, the method is
// called there by name, its argument and result going as JSON.
func Call[A any, Arg any, R any](ctx context.Context, rt *Runtime, name string, m func(A, context.Context, Arg) (R, error), arg Arg) (R, error) {
	return callTyped(ctx, rt, name, m, []any{arg}, func(ctx context.Context, a A) (R, error) { return m(a, ctx, arg) })
}

// Call0 is Call for a method that takes no argument.
func Call0[A any, R any](ctx context.Context, rt *Runtime, name string, m func(A, context.Context) (R, error)) (R, error) {
	return callTyped(ctx, rt, name, m, nil, func(ctx context.Context, a A) (R, error) { return m(a, ctx) })
}

// callTyped runs a typed call here, or by name on the agent's node.
func callTyped[A any, R any](ctx context.Context, rt *Runtime, name string, m any, args []any, local func(context.Context, A) (R, error)) (R, error) {
	var zero R
	c, err := classOf[A](rt)
	if err != nil {
		return zero, err
	}
	if !rt.cluster.enabled() {
		return With(ctx, rt, name, local)
	}
	key := store.AgentKey{Class: c.name, Name: name}
	if err := ValidateName(name); err != nil {
		return zero, fmt.Errorf("agent %s: %w", c.name, err)
	}
	p, err := rt.cluster.place(ctx, c, key)
	if err == nil && p.local {
		res, err := With(ctx, rt, name, local)
		owned, ok := errors.AsType[*store.AgentOwnedError](err)
		if !ok || owned.Node.Address == "" {
			return res, err
		}
		p = placement{node: owned.Node} // activated elsewhere since place looked
	}
	if err != nil {
		return zero, err
	}
	method, err := c.wireNameOf(m)
	if err != nil {
		return zero, err
	}
	ref := Ref{rt: rt, key: key}
	raw, err := ref.callRemote(ctx, p, method, CallOptions{}, args)
	if errors.Is(err, errRunHere) {
		return With(ctx, rt, name, local)
	}
	if err != nil {
		return zero, err
	}
	var res R
	if err := json.Unmarshal(raw, &res); err != nil {
		return zero, fmt.Errorf("%s.%s on another node: decode result into %T: %w", c.name, method, res, err)
	}
	return res, nil
}

// wireNameOf finds the callable name of the method expression m, such as
// (*Counter).Increment.
func (c *class) wireNameOf(m any) (string, error) {
	f := runtime.FuncForPC(reflect.ValueOf(m).Pointer())
	if f != nil {
		full := strings.TrimSuffix(f.Name(), "-fm")
		goName := full[strings.LastIndexByte(full, '.')+1:]
		for _, meth := range c.methods {
			if meth.name == goName {
				return meth.wire, nil
			}
		}
	}
	return "", fmt.Errorf("agent class %s: the method given to agent.Call is not one of its methods callable by name, so it cannot be called on another node: %w", c.name, ErrMethodNotFound)
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
		return zero, localOnly("agent.With", err)
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
