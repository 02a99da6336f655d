package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// This file is the read side operators use (the admin API, the CLI, the
// dashboard): lists of instances, agents and outbox rows in keyset pages,
// counts, and the attempt history of a step. None of it is on the engine's
// hot path.

// MaxPage is the largest page the list queries return; a zero Limit means it.
const MaxPage = 100

// InspectStore answers operators' queries (the admin API, the CLI, the
// dashboard). It is part of Store. Every method validates its filter first
// and fails with a *FilterError (matching ErrInvalidFilter) when it is
// invalid, reading nothing.
type InspectStore interface {
	// ListInstances returns one page of instances matching f, newest first
	// (CreatedAt descending, then ID descending). The next page starts
	// after the last instance of this one (InstanceCursor{CreatedAt, ID});
	// a page shorter than the limit is the last.
	ListInstances(ctx context.Context, f InstanceFilter) ([]Instance, error)
	// CountInstances counts the instances matching f by status; statuses
	// with no instance are absent. f.Statuses, f.After and f.Limit are
	// ignored (not validated either).
	CountInstances(ctx context.Context, f InstanceFilter) (map[Status]int, error)
	// ListStepAttempts returns every finished attempt of the instance's Do
	// steps (failed ones with their error), by Seq then Attempt. An
	// attempt that ended before the store kept attempts (a step written
	// before the migration that added them) is missing or has zero times;
	// an unknown instance has none (nil, no error).
	ListStepAttempts(ctx context.Context, instanceID string) ([]StepAttempt, error)
	// ListAgents returns one page of agent instances, by class then name.
	ListAgents(ctx context.Context, f AgentFilter) ([]AgentSummary, error)
	// ListOutboxes returns one page of Think outbox rows, newest first (ID
	// descending).
	ListOutboxes(ctx context.Context, f OutboxFilter) ([]OutboxMessage, error)
}

// InstanceFilter selects workflow instances. Zero fields match all; the
// fields that are set must all match.
type InstanceFilter struct {
	Statuses  []Status // any of; each must be a status of the Status constants but StatusUnknown
	Workflows []string // class names, any of
	Services  []string // any of; "" is the default service
	// Origin selects instances started by that agent; Class alone (Name
	// "") selects those started by any agent of the class. Name without
	// Class is invalid.
	Origin AgentKey
	// CreatedFrom and CreatedTo bound CreatedAt to [From, To); a zero time
	// leaves that side open. To must be after From when both are set.
	CreatedFrom, CreatedTo time.Time
	// UpdatedFrom and UpdatedTo bound UpdatedAt the same way.
	UpdatedFrom, UpdatedTo time.Time
	// After, when set, starts the page after that instance in list order:
	// the last one of the previous page. Its ID must not be empty.
	After *InstanceCursor
	// Limit caps the page: 1..MaxPage, 0 means MaxPage.
	Limit int
}

// InstanceCursor is a position in the instance list: the instance with
// this CreatedAt and ID (which need not exist any more).
type InstanceCursor struct {
	CreatedAt time.Time
	ID        string
}

// StepAttempt is one finished attempt of a Do step.
type StepAttempt struct {
	Seq     int // the step's position in the run (Step.Seq)
	Attempt int // 1-based
	// StartedAt and EndedAt time the attempt; EndedAt is when its result
	// was checkpointed.
	StartedAt, EndedAt time.Time
	// ErrorName and ErrorMessage are the attempt's error; ErrorName "" is
	// an attempt that succeeded.
	ErrorName    string
	ErrorMessage string
}

// AgentFilter selects agent instances. Pages run by class, then name.
type AgentFilter struct {
	// Class, when set, selects the agents of that class.
	Class string
	// After, when set (Name not ""), starts the page after that agent in
	// list order: the last one of the previous page. When Class is set,
	// After.Class must equal it.
	After AgentKey
	// Limit caps the page: 1..MaxPage, 0 means MaxPage.
	Limit int
}

// AgentSummary is one agent instance as a list shows it, without its state.
type AgentSummary struct {
	AgentKey
	// Owner is the node the agent is live on: "" when it is live nowhere,
	// or when its node has no row any more (its claim is free).
	Owner     string
	CreatedAt time.Time
	// UpdatedAt is the row's last change: an activation, a release, a
	// state write.
	UpdatedAt time.Time
	// StateBytes is the size of the agent's JSON state, 0 when it has none.
	StateBytes int
}

// OutboxFilter selects Think outbox rows. Pages run newest first.
type OutboxFilter struct {
	// Agent selects one agent's rows; Class alone selects a class's. Name
	// without Class is invalid.
	Agent AgentKey
	// Undelivered selects the rows not yet delivered nor given up on.
	Undelivered bool
	// AfterID, when not 0, starts the page after that row: rows with a
	// smaller ID. It must not be negative.
	AfterID int64
	// Limit caps the page: 1..MaxPage, 0 means MaxPage.
	Limit int
}

// ErrInvalidFilter: a list or count query's filter breaks a rule. The
// *FilterError that matches it names the field and the rule.
var ErrInvalidFilter = errors.New("invalid filter")

// FilterError says which field of a filter is invalid and why.
type FilterError struct {
	Field string // the field as the Go struct names it, e.g. "Limit", "Statuses[1]"
	Value string // the offending value as text
	Rule  string // what the field must be, e.g. "must be between 0 and 100"
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("%v: %s %s %s", ErrInvalidFilter, e.Field, e.Value, e.Rule)
}

func (e *FilterError) Unwrap() error { return ErrInvalidFilter }

func invalidFilter(field string, value any, rule string) error {
	return &FilterError{Field: field, Value: fmt.Sprintf("%q", fmt.Sprint(value)), Rule: rule}
}

// Statuses is every status an instance row can have, in DESIGN §2.2's order.
var Statuses = []Status{StatusQueued, StatusRunning, StatusPaused, StatusErrored,
	StatusTerminated, StatusComplete, StatusWaiting, StatusWaitingForPause}

func checkLimit(limit int) error {
	if limit < 0 || limit > MaxPage {
		return invalidFilter("Limit", limit, fmt.Sprintf("must be between 1 and %d (0 means %d)", MaxPage, MaxPage))
	}
	return nil
}

func checkRange(from, to string, f, t time.Time) error {
	if !f.IsZero() && !t.IsZero() && !t.After(f) {
		return invalidFilter(to, t.Format(time.RFC3339Nano), "must be after "+from+" ("+f.Format(time.RFC3339Nano)+")")
	}
	return nil
}

// Validate reports the first rule f breaks as a *FilterError, nil when f
// is valid. CountInstances skips the checks of Statuses, After and Limit.
func (f InstanceFilter) Validate() error {
	if err := f.validateCommon(); err != nil {
		return err
	}
	for i, s := range f.Statuses {
		if !slices.Contains(Statuses, s) {
			return invalidFilter(fmt.Sprintf("Statuses[%d]", i), s, fmt.Sprintf("is not a status: must be one of %v", Statuses))
		}
	}
	if f.After != nil && f.After.ID == "" {
		return invalidFilter("After.ID", "", "must not be empty")
	}
	return checkLimit(f.Limit)
}

// ValidateCount is Validate without the fields CountInstances ignores.
func (f InstanceFilter) ValidateCount() error { return f.validateCommon() }

func (f InstanceFilter) validateCommon() error {
	for i, w := range f.Workflows {
		if w == "" {
			return invalidFilter(fmt.Sprintf("Workflows[%d]", i), w, "must not be empty")
		}
	}
	if f.Origin.Class == "" && f.Origin.Name != "" {
		return invalidFilter("Origin.Class", "", "must be set when Origin.Name is")
	}
	if err := checkRange("CreatedFrom", "CreatedTo", f.CreatedFrom, f.CreatedTo); err != nil {
		return err
	}
	return checkRange("UpdatedFrom", "UpdatedTo", f.UpdatedFrom, f.UpdatedTo)
}

// Validate reports the first rule f breaks as a *FilterError, nil when f
// is valid.
func (f AgentFilter) Validate() error {
	if f.After.Name == "" && f.After.Class != "" {
		return invalidFilter("After.Name", "", "must be set when After.Class is")
	}
	if f.After.Name != "" && f.After.Class == "" {
		return invalidFilter("After.Class", "", "must be set when After.Name is")
	}
	if f.Class != "" && f.After.Class != "" && f.After.Class != f.Class {
		return invalidFilter("After.Class", f.After.Class, "must equal Class ("+f.Class+")")
	}
	return checkLimit(f.Limit)
}

// Validate reports the first rule f breaks as a *FilterError, nil when f
// is valid.
func (f OutboxFilter) Validate() error {
	if f.Agent.Class == "" && f.Agent.Name != "" {
		return invalidFilter("Agent.Class", "", "must be set when Agent.Name is")
	}
	if f.AfterID < 0 {
		return invalidFilter("AfterID", f.AfterID, "must not be negative")
	}
	return checkLimit(f.Limit)
}
