package agent

import (
	"errors"
	"fmt"

	"agentflow/store"
)

// Errors returned by the runtime. Match them with errors.Is; the concrete
// errors wrapping them say which agent, method or argument was at fault.
var (
	// ErrUnknownClass: no class is registered under the name.
	ErrUnknownClass = errors.New("unknown agent class")
	// ErrMethodNotFound: the class has no such method.
	ErrMethodNotFound = errors.New("method does not exist")
	// ErrNotCallable: the method exists but clients may not call it.
	ErrNotCallable = errors.New("method is not callable")
	// ErrBadArguments: the arguments do not fit the method's signature.
	ErrBadArguments = errors.New("arguments do not match the method")
	// ErrStateRejected: the state validation hook refused a change.
	ErrStateRejected = errors.New("state update rejected")
	// ErrReadonly: a readonly connection tried to change the state.
	ErrReadonly = errors.New("connection is readonly")
	// ErrInvalidSchedule: a schedule's time, cron expression or interval
	// is not valid.
	ErrInvalidSchedule = errors.New("invalid schedule")
	// ErrStopped: the runtime is stopping or stopped.
	ErrStopped = errors.New("agent runtime stopped")
	// ErrAgentElsewhere: the agent is live on another node (see
	// store.AgentOwnedError for which one).
	ErrAgentElsewhere = store.ErrAgentElsewhere
)

// MethodError is an error about calling one method of an agent class.
type MethodError struct {
	Class  string
	Method string
	Err    error // ErrMethodNotFound, ErrNotCallable or ErrBadArguments
	// Detail says what was wrong with the arguments.
	Detail string
}

// Error reads like the original platform's messages ("Method foo is not
// callable"), which its JavaScript client shows as they are.
func (e *MethodError) Error() string {
	switch {
	case errors.Is(e.Err, ErrMethodNotFound):
		return fmt.Sprintf("Method %s does not exist on %s", e.Method, e.Class)
	case errors.Is(e.Err, ErrNotCallable):
		return fmt.Sprintf("Method %s is not callable", e.Method)
	default:
		return fmt.Sprintf("Method %s of %s: %s", e.Method, e.Class, e.Detail)
	}
}

func (e *MethodError) Unwrap() error { return e.Err }

// PanicError is a panic in agent code, recovered and returned as an error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("agent code panicked: %v", e.Value) }

// StatusCoder is implemented by errors that say which HTTP status a refusal
// from a BeforeConnect or BeforeRequest hook answers with.
type StatusCoder interface {
	error
	StatusCode() int
}

// HTTPError is a refusal with an HTTP status, for the handler's hooks.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string   { return e.Message }
func (e *HTTPError) StatusCode() int { return e.Status }
