package workflow

import (
	"errors"
	"fmt"
	"time"

	"agentflow/store"
)

// Errors the engine returns. Match them with errors.Is; the concrete error
// names the value and the rule it broke.
var (
	ErrUnknownWorkflow   = errors.New("unknown workflow class")
	ErrInvalidID         = errors.New("invalid instance id")
	ErrInvalidParams     = errors.New("invalid params")
	ErrInvalidName       = errors.New("invalid step name")
	ErrInvalidEvent      = errors.New("invalid event")
	ErrInvalidDuration   = errors.New("invalid duration")
	ErrInvalidStepConfig = errors.New("invalid step config")
	ErrTooLarge          = errors.New("too large")
	ErrNotJSON           = errors.New("cannot be encoded as JSON")
	ErrBatchTooLarge     = errors.New("batch too large")
	ErrTooManySteps      = errors.New("too many steps")
	ErrNonDeterministic  = errors.New("non-deterministic workflow")
	ErrTimeout           = errors.New("timed out")
	ErrNotStarted        = errors.New("engine is not started")

	// Errors of the store, re-exported so callers need not import it.
	ErrNotFound    = store.ErrNotFound
	ErrDuplicateID = store.ErrDuplicateID
	ErrFinished    = store.ErrFinished
	ErrNotPaused   = store.ErrNotPaused
)

// ValidationError reports bad input: which field, what value, which rule.
type ValidationError struct {
	Field string // e.g. "id", "params", "step name"
	Value string // the offending value, shortened when long
	Rule  string // what the value must satisfy
	Err   error  // one of the Err* values
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Rule)
	}
	return fmt.Sprintf("%s %s: %s", e.Field, e.Value, e.Rule)
}

func (e *ValidationError) Unwrap() error { return e.Err }

func invalid(sentinel error, field, value, rule string, args ...any) *ValidationError {
	if r := []rune(value); len(r) > 80 {
		value = string(r[:77]) + "..."
	}
	q := ""
	if value != "" {
		q = fmt.Sprintf("%q", value)
	}
	return &ValidationError{Field: field, Value: q, Rule: fmt.Sprintf(rule, args...), Err: sentinel}
}

// StepError is returned by Do when a step has failed for good: its retries
// are exhausted, its error was non-retryable, or its result could not be
// stored. On replay the same StepError is returned, rebuilt from the
// checkpoint, so Run sees the same error every time.
type StepError struct {
	Step     string // step name
	Attempts int
	Name     string // the error's name: see ErrorName
	Message  string
}

func (e *StepError) Error() string {
	return fmt.Sprintf("step %q failed after %d attempt(s): %s: %s", e.Step, e.Attempts, e.Name, e.Message)
}

// ErrorName is the name recorded for this error when it ends an instance.
func (e *StepError) ErrorName() string { return e.Name }

// WaitTimeoutError is returned by WaitForEvent when no event of the type
// arrived in time. It matches ErrTimeout.
type WaitTimeoutError struct {
	Step    string
	Type    string
	Timeout time.Duration
}

func (e *WaitTimeoutError) Error() string {
	return fmt.Sprintf("step %q: no %q event within %s", e.Step, e.Type, e.Timeout)
}

// ErrorName implements the name used in Status.
func (e *WaitTimeoutError) ErrorName() string { return "WaitTimeoutError" }

func (e *WaitTimeoutError) Is(target error) bool { return target == ErrTimeout }

// attemptTimeoutError ends an attempt that ran past its timeout.
type attemptTimeoutError struct {
	step    string
	timeout time.Duration
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("step %q attempt ran longer than its timeout of %s", e.step, e.timeout)
}

func (e *attemptTimeoutError) ErrorName() string { return "TimeoutError" }

func (e *attemptTimeoutError) Is(target error) bool { return target == ErrTimeout }

// NonDeterminismError fails an instance whose code no longer matches its
// checkpoints.
type NonDeterminismError struct {
	Position     int
	Want, Stored string // "Do(\"charge\")", …
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("step %d: the code asks for %s but the checkpoint at this position is %s; code outside steps must be deterministic",
		e.Position, e.Want, e.Stored)
}

func (e *NonDeterminismError) ErrorName() string { return "NonDeterminismError" }

func (e *NonDeterminismError) Unwrap() error { return ErrNonDeterministic }

// PanicError is a panic recovered from workflow or step code.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

func (e *PanicError) ErrorName() string { return "PanicError" }

type nonRetryable struct{ err error }

func (e *nonRetryable) Error() string { return e.err.Error() }
func (e *nonRetryable) Unwrap() error { return e.err }

// NonRetryable marks err so that the step fails at once instead of being
// retried. The instance then fails unless Run handles the StepError.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRetryable{err: err}
}

// IsNonRetryable reports whether err was marked with NonRetryable.
func IsNonRetryable(err error) bool {
	var nr *nonRetryable
	return errors.As(err, &nr)
}

// ErrorName returns the name recorded for err in an instance's status: the
// ErrorName() of the first error in its chain that has one, else "Error".
func ErrorName(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if n, ok := e.(interface{ ErrorName() string }); ok {
			return n.ErrorName()
		}
	}
	if IsNonRetryable(err) {
		return "NonRetryableError"
	}
	return "Error"
}
