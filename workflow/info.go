package workflow

import (
	"encoding/json"
	"time"

	"agentflow/store"
)

// Status is an instance's status as users see it.
type Status string

// The statuses of an instance.
const (
	StatusQueued          Status = "queued"
	StatusRunning         Status = "running"
	StatusPaused          Status = "paused"
	StatusErrored         Status = "errored"
	StatusTerminated      Status = "terminated"
	StatusComplete        Status = "complete"
	StatusWaiting         Status = "waiting"
	StatusWaitingForPause Status = "waitingForPause"
	StatusUnknown         Status = "unknown"
)

// Finished reports whether s is a terminal status: complete, errored or
// terminated.
func (s Status) Finished() bool {
	return s == StatusComplete || s == StatusErrored || s == StatusTerminated
}

// statusOf returns the stored status s as users see it; a status this
// version does not know is StatusUnknown.
func statusOf(s store.Status) Status {
	switch st := Status(s); st {
	case StatusQueued, StatusRunning, StatusPaused, StatusErrored, StatusTerminated,
		StatusComplete, StatusWaiting, StatusWaitingForPause:
		return st
	}
	return StatusUnknown
}

// StepKind is what a step did: a Do, a sleep or a wait for an event.
type StepKind string

// The kinds of step.
const (
	KindDo    StepKind = "do"
	KindSleep StepKind = "sleep"
	KindWait  StepKind = "wait"
)

// StepState is where a checkpointed step is in its life.
type StepState string

// The states of a checkpointed step.
const (
	// StepPending: a sleep not yet over, a wait not yet satisfied, or a Do
	// backing off before its next attempt.
	StepPending StepState = "pending"
	// StepDone: the step returned; Result holds its JSON result.
	StepDone StepState = "done"
	// StepFailed: the step failed for good; ErrorName and ErrorMessage say why.
	StepFailed StepState = "failed"
)

// StepInfo is the checkpoint of one step of an instance, as Instance.Steps
// reports it.
type StepInfo struct {
	Seq        int // 0-based position in the run
	Name       string
	Occurrence int // how many times Name was used earlier in the run
	Kind       StepKind
	State      StepState
	// Attempt is, for a pending Do, the number of the next attempt; for a
	// finished Do, the number of attempts made.
	Attempt      int
	Result       json.RawMessage // for a wait, the event's payload
	ErrorName    string
	ErrorMessage string
	// WakeAt is a pending sleep's end, a pending wait's deadline or a
	// pending Do's next attempt time.
	WakeAt    time.Time
	UpdatedAt time.Time
}

// stepInfo is the one place a stored step becomes a StepInfo.
func stepInfo(s store.Step) StepInfo {
	return StepInfo{
		Seq: s.Seq, Name: s.Name, Occurrence: s.Occurrence,
		Kind: StepKind(s.Kind), State: StepState(s.State), Attempt: s.Attempt,
		Result: json.RawMessage(s.Result), ErrorName: s.ErrorName, ErrorMessage: s.ErrorMessage,
		WakeAt: s.WakeAt, UpdatedAt: s.UpdatedAt,
	}
}
