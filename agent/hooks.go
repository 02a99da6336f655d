package agent

import (
	"context"
	"net/http"
)

// The hooks an agent class may implement. Each is a small interface; the
// runtime calls the ones the class's pointer type implements. Hooks that
// run on behalf of a caller (OnRequest, OnConnect, OnMessage, OnClose) hold
// the instance's lock like any call, so they never run concurrently with
// each other or with a method call.

// Starter is called once per activation, before the first call is served.
// An error fails the activation and is returned to the caller.
type Starter interface {
	OnStart(ctx context.Context) error
}

// Activator is Starter for a base type that a class embeds (think.Agent
// is one): it is called on activation before OnStart, so that the class
// can still define OnStart of its own. Application classes use OnStart.
type Activator interface {
	OnActivate(ctx context.Context) error
}

// RequestHandler serves plain HTTP requests to /agents/<class>/<name>[/rest].
// Without it such requests answer 404.
type RequestHandler interface {
	OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request)
}

// ConnectHook is called when a WebSocket client has connected and received
// its identity and state frames. It may mark the connection readonly; an
// error closes the connection with a policy-violation close code and the
// error as the reason.
type ConnectHook interface {
	OnConnect(ctx context.Context, c *Conn, r *http.Request) error
}

// MessageHandler receives the WebSocket messages that are not protocol
// frames (state pushes and RPC requests). Without it such a message is
// answered with an error frame.
type MessageHandler interface {
	OnMessage(ctx context.Context, c *Conn, msg []byte)
}

// CloseHook is called when a WebSocket connection has closed.
type CloseHook interface {
	OnClose(ctx context.Context, c *Conn, code int, reason string)
}

// ErrorHook is told of errors that have no caller to return to: a
// schedule that failed for good, a fiber that failed, a panic in a hook.
type ErrorHook interface {
	OnError(ctx context.Context, err error)
}

// InitialStater gives the state of an instance that has none stored yet;
// without it the initial state is S's zero value.
type InitialStater[S any] interface {
	InitialState() S
}

// StateValidator may reject a state change, from SetState or from a client,
// before anything is persisted or broadcast. source is the connection the
// change came from, nil when it came from server code.
type StateValidator[S any] interface {
	ValidateState(ctx context.Context, next S, source *Conn) error
}

// StateChangedHook is called after a state change was persisted and
// broadcast.
type StateChangedHook[S any] interface {
	OnStateChanged(ctx context.Context, s S, source *Conn)
}

// FiberRecoverer is called on activation for each interrupted fiber: one
// cut off by a crash, or by a runtime that stopped while it ran. The
// fiber's closure is gone with the process; the hook decides: resume it
// with ResumeFiber (its Stash is kept), abort it with CancelFiber, or leave
// it, in which case it is offered again on the next activation.
type FiberRecoverer interface {
	OnFiberRecovered(ctx context.Context, f FiberInfo) error
}
