// Package store defines the durable storage the workflow engine runs on: the
// Store interface, the rows it keeps, and the errors its operations return.
//
// Two implementations live below it, store/sqlite (embedded, the default) and
// store/postgres (several processes sharing one database); store/storetest is
// the conformance suite both must pass.
//
// A store never reads a clock: every operation that needs the time takes it as
// an argument, so the engine's clock (real or virtual) is the only one.
//
// Invariants every implementation keeps:
//   - An instance row whose WakeAt is set has no owner and is waiting for a
//     worker to claim it at or after WakeAt; claiming clears WakeAt, sets the
//     owner and increments the fence.
//   - Every write an executing worker makes (SaveStep, Suspend, TakeEvent,
//     Finish) is fenced: it applies only while the instance's owner and fence
//     are still the ones the worker claimed with, and otherwise fails with
//     ErrLeaseLost and changes nothing.
//   - Each operation is atomic: it either applies entirely or not at all.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is an instance's persisted status. The names are the ones users see.
type Status string

// The statuses of DESIGN §2.2.
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

// Finished reports whether s is a terminal status.
func (s Status) Finished() bool {
	return s == StatusComplete || s == StatusErrored || s == StatusTerminated
}

// Instance is one workflow instance row.
type Instance struct {
	ID       string
	Workflow string // registered class name
	Service  string // the service whose workers run it; "" is the default service
	Params   []byte // JSON
	// Origin is the agent that started the instance (RunWorkflow), zero
	// when none did. When an instance with an origin finishes, Finish
	// also queues a WorkflowFinishedMethod schedule for that agent.
	Origin AgentKey

	Status       Status
	ErrorName    string
	ErrorMessage string
	Output       []byte // JSON, set when complete

	CreatedAt time.Time
	// UpdatedAt is when the instance row last changed: creation, a claim, a
	// suspension, the finish, a control operation. A step checkpoint is
	// timed by its step row's UpdatedAt and need not touch it.
	UpdatedAt  time.Time
	FinishedAt time.Time // zero until finished

	// WakeAt is when the instance next needs a worker; zero while it is
	// owned, paused or finished.
	WakeAt time.Time
	// WaitingEvent is the event type a suspended WaitForEvent is waiting for.
	WaitingEvent string
	// PausedAt is when the instance was paused; zero unless paused.
	PausedAt time.Time

	// Owner is the node executing the instance, "" when none is.
	Owner string
	// Fence increments on every claim (and on Terminate and Restart);
	// writes carry the fence they claimed with. Steps are only written
	// under a claim, so an instance claimed with fence 1 has none.
	Fence int64
	// Restarts counts the Restarts of the instance: 0 in its first run.
	// Only Restart changes it, so it names the run a step belongs to, the
	// same on every replay of that run, across crashes and nodes.
	Restarts int
	// TraceParent is the W3C traceparent of the span that created the
	// instance, "" when none: its execution segments' spans are its
	// children (see internal/telemetry).
	TraceParent string
}

// Lease identifies one claim of an instance by a node. Executing writes carry it.
type Lease struct {
	InstanceID string
	Owner      string
	Fence      int64
}

// StepKind is what a checkpointed step did.
type StepKind string

// Step kinds.
const (
	KindDo    StepKind = "do"
	KindSleep StepKind = "sleep"
	KindWait  StepKind = "wait"
)

// StepState is where a step is in its life.
type StepState string

// Step states.
const (
	// StepPending: a sleep not yet over, a wait not yet satisfied, or a Do
	// backing off before its next attempt.
	StepPending StepState = "pending"
	// StepDone: the step returned; Result holds its JSON result.
	StepDone StepState = "done"
	// StepFailed: the step failed for good; ErrorName and ErrorMessage say why.
	StepFailed StepState = "failed"
)

// Step is the checkpoint of one step of one instance, at position Seq of its run.
type Step struct {
	Seq        int // 0-based position in the run
	Name       string
	Occurrence int // how many times Name was used earlier in the run
	Kind       StepKind
	State      StepState
	// Attempt is, for a pending Do, the number of the next attempt; for a
	// finished Do, the number of attempts made.
	Attempt      int
	Result       []byte // JSON; for a wait, the event payload
	ErrorName    string
	ErrorMessage string
	// WakeAt is a pending sleep's end, a pending wait's deadline or a pending
	// Do's next attempt time.
	WakeAt time.Time
	// StartedAt is when the step started: a Do's first attempt, a sleep's
	// or a wait's first checkpoint. It is zero for steps stored before the
	// store kept it.
	//
	// On a write it is when the checkpointed attempt started (for a sleep
	// or a wait, when it started); the store keeps the StartedAt of the
	// step's first write and times the attempt with the given one (see
	// InspectStore.ListStepAttempts). A zero StartedAt is taken as the
	// write's now.
	StartedAt time.Time
	UpdatedAt time.Time
}

// Event is a message sent to an instance.
type Event struct {
	Seq        int64 // assigned by the store, increasing
	InstanceID string
	Type       string
	Payload    []byte // JSON
	CreatedAt  time.Time
	Consumed   bool
	// ConsumedAt is when a wait took the event; zero while unconsumed, and
	// for events consumed before the store kept it.
	ConsumedAt time.Time
}

// Suspension says how an executing instance stops until it is needed again.
type Suspension struct {
	// Step is the pending step row to store, if any.
	Step *Step
	// Status is the status while suspended: running (backing off),
	// waiting (sleep or event) or paused (a pause was requested).
	Status Status
	// WakeAt is when the instance next needs a worker.
	WakeAt time.Time
	// WaitingEvent, when set, is the event type that wakes it early. If an
	// unconsumed event of that type already exists, WakeAt becomes now.
	WaitingEvent string
}

// Outcome is how an instance ended.
type Outcome struct {
	Status       Status // complete or errored
	Output       []byte
	ErrorName    string
	ErrorMessage string
}

// Node is one running engine process, kept alive by heartbeats.
type Node struct {
	ID      string
	Service string
	Host    string
	PID     int
	// Process identifies the OS process on its host beyond its pid, so
	// that a new process that reused a dead one's pid is told apart;
	// "" where the platform cannot tell.
	Process   string
	StartedAt time.Time
	ExpiresAt time.Time
	// Address is where other nodes reach this node's agents (the base URL
	// of its agents handler), and AgentClasses the agent classes it hosts;
	// both are written by AdvertiseNode, not by Heartbeat. A node that
	// serves no agents has neither.
	Address      string
	AgentClasses []string
}

// Store is the storage the workflow engine and agents run on: one
// implementation of every part (store/sqlite, store/postgres), and one
// conformance suite (store/storetest). Each package that uses a store
// names the parts it needs. Implementations must be safe for concurrent
// use.
type Store interface {
	InstanceStore
	NodeStore
	AgentStore
	AgentWorkflowStore
	ThinkStore
	InspectStore

	// Close releases the store's resources.
	Close() error
}

// InstanceStore keeps workflow instances: their rows, steps and events,
// the claims that run them, and their control.
type InstanceStore interface {
	// CreateInstances inserts all instances or none. An existing id fails
	// the whole batch with an error matching ErrDuplicateID that names it.
	// Instances with an Owner are inserted claimed (fence 1); the others
	// must have WakeAt set.
	CreateInstances(ctx context.Context, insts []*Instance) error
	// GetInstance returns the instance or an error matching ErrNotFound.
	GetInstance(ctx context.Context, id string) (*Instance, error)
	// ListSteps returns the instance's steps ordered by Seq.
	ListSteps(ctx context.Context, id string) ([]Step, error)
	// ListStepsOf returns the steps of each of the instances ids, each
	// instance's ordered by Seq, in one query: the engine reads the
	// checkpoints of a batch of instances it has just claimed with it. The
	// ids are distinct; an instance with no steps, or not found, has no
	// entry.
	ListStepsOf(ctx context.Context, ids []string) (map[string][]Step, error)
	// ListEvents returns the instance's events ordered by Seq.
	ListEvents(ctx context.Context, id string) ([]Event, error)

	// ClaimDue claims up to limit instances of service whose WakeAt is at or
	// before now, earliest first, for owner.
	ClaimDue(ctx context.Context, owner, service string, now time.Time, limit int) ([]*Instance, error)
	// NextWakeTimes returns the WakeAt times of up to limit claimable
	// instances of service due at or before until, earliest first.
	NextWakeTimes(ctx context.Context, service string, until time.Time, limit int) ([]time.Time, error)

	// SaveStep stores a step (insert or replace at its Seq) and marks a
	// queued instance running. A Do step that ends an attempt with an
	// error also records the attempt (see ListStepAttempts), as does
	// Suspend with such a step. It returns the instance's status after the
	// write, so the worker sees a pending pause (waitingForPause).
	SaveStep(ctx context.Context, l Lease, s Step, now time.Time) (Status, error)
	// TakeEvent consumes the oldest unconsumed event of type typ and stores
	// s as done with the event's payload as its result. It returns nil and
	// stores nothing when there is no such event.
	TakeEvent(ctx context.Context, l Lease, typ string, s Step, now time.Time) (*Event, error)
	// Suspend stores the suspension and gives up the claim.
	Suspend(ctx context.Context, l Lease, sus Suspension, now time.Time) error
	// Finish records the outcome and gives up the claim. For an instance
	// with an Origin it also inserts, in the same transaction, the
	// schedule that tells the origin agent: ID and IdempotencyKey
	// FinishedNoticeID(instance id), Method WorkflowFinishedMethod, kind
	// delayed, due at now, Payload {"instanceId": id}; if that schedule
	// is still pending from an earlier finish (after a Restart), nothing
	// more is inserted.
	Finish(ctx context.Context, l Lease, o Outcome, now time.Time) error

	// SendEvent buffers an event for the instance and wakes it if it is
	// waiting for that type. It fails with ErrNotFound or ErrFinished.
	SendEvent(ctx context.Context, e Event) error
	// Pause pauses a suspended or queued instance at once, and asks an
	// executing one to pause after its current step (waitingForPause). It
	// returns the new status; it fails with ErrFinished for a finished one.
	Pause(ctx context.Context, id string, now time.Time) (Status, error)
	// Resume resumes a paused instance, shifting its pending timers by the
	// time it was paused. It fails with ErrNotPaused otherwise; resuming an
	// instance that is waitingForPause cancels the pause request.
	Resume(ctx context.Context, id string, now time.Time) error
	// Terminate ends an unfinished instance as terminated, fencing out any
	// worker executing it. It fails with ErrFinished for a finished one.
	Terminate(ctx context.Context, id string, now time.Time) error
	// Restart discards the instance's steps, outcome and consumed events
	// and queues it to run from the start, fencing out any current worker;
	// it increments Restarts.
	Restart(ctx context.Context, id string, now time.Time) error

	// DeleteFinished removes up to limit instances that finished before
	// before, with their steps and events, and returns how many it removed.
	DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error)
}

// NodeStore keeps the nodes of a cluster: their leases, and where other
// nodes reach them.
type NodeStore interface {
	// Heartbeat inserts or refreshes the node row.
	Heartbeat(ctx context.Context, n Node) error
	// ListNodes returns every registered node.
	ListNodes(ctx context.Context) ([]Node, error)
	// AdvertiseNode records where other nodes reach node id's agents and
	// which agent classes it hosts. It fails with ErrNotFound when the node
	// has no row (it has not heartbeaten yet, or was removed as dead).
	AdvertiseNode(ctx context.Context, id, address string, classes []string) error
	// RemoveNode deletes the node and releases the instances it owned, so
	// that they are due at now.
	RemoveNode(ctx context.Context, id string, now time.Time) (released int, err error)
	// ReleaseOrphans releases, due at now, the instances owned by a node
	// that has no row: a claim that a node committed just after it was
	// removed as dead.
	ReleaseOrphans(ctx context.Context, now time.Time) (released int, err error)
}

// Errors returned by stores. Match them with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrDuplicateID  = errors.New("id already exists")
	ErrLeaseLost    = errors.New("lease lost: another worker owns the instance or it was terminated or restarted")
	ErrFinished     = errors.New("instance has finished")
	ErrNotPaused    = errors.New("instance is not paused")
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
)

// InstanceError is an error about one instance; it names the instance and,
// where it matters, the status that refused the operation.
type InstanceError struct {
	ID     string
	Op     string // what was attempted: "create", "pause", "send event", ...
	Status Status // the instance's status, when it decided the error
	Err    error  // one of the Err* values above
}

func (e *InstanceError) Error() string {
	if e.Status != "" {
		return fmt.Sprintf("%s instance %q: instance is %s: %v", e.Op, e.ID, e.Status, e.Err)
	}
	return fmt.Sprintf("%s instance %q: %v", e.Op, e.ID, e.Err)
}

func (e *InstanceError) Unwrap() error { return e.Err }
