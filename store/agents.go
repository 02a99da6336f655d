package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// This file is the storage half of agents (docs/DESIGN.md §3): the agent rows that
// place each instance on one node and hold its state, its schedules, and its
// fibers' ledger.
//
// Liveness is the node table's: a claim (an agent's Owner, a schedule's or a
// fiber's) held by a node that has no row any more is free. Nodes are
// removed by the workflow engine's reaper when their lease lapses or their
// process is gone, so every claim below is released by the same rule.

// AgentKey addresses one agent instance.
type AgentKey struct {
	Class string // registered class name, e.g. "Counter"
	Name  string
}

func (k AgentKey) String() string { return k.Class + "/" + k.Name }

// Agent is one agent instance row.
type Agent struct {
	AgentKey
	// State is the instance's JSON state; nil until it is first set.
	State []byte
	// Owner is the node the instance is live on, "" when it is live nowhere.
	Owner string
	// Fence increments on every activation; state writes carry it. It
	// starts at 1 when the row is created, which is again after a release
	// that deleted it (see ReleaseAgent).
	Fence     int64
	CreatedAt time.Time
	UpdatedAt time.Time
	// UnfinishedFibers is set by ActivateAgent when the agent has fibers to
	// recover: interrupted ones, or pending or running ones that another
	// node ran (which InterruptFibers interrupts). Without it the new
	// activation skips recovery's queries.
	UnfinishedFibers bool
}

// AgentLease identifies one activation of an agent instance on a node.
type AgentLease struct {
	AgentKey
	Owner string
	Fence int64
}

// ScheduleKind is how a schedule's run times are given.
type ScheduleKind string

// Schedule kinds. Delayed and scheduled are one-shot; cron and interval recur.
const (
	ScheduleDelayed   ScheduleKind = "delayed"
	ScheduleScheduled ScheduleKind = "scheduled"
	ScheduleCron      ScheduleKind = "cron"
	ScheduleInterval  ScheduleKind = "interval"
	// ScheduleRecur runs on a declarative schedule of package recur
	// ("every day at 09:00 in Europe/London"), held in Cron.
	ScheduleRecur ScheduleKind = "recur"
)

// Recurring reports whether schedules of kind k run more than once.
func (k ScheduleKind) Recurring() bool {
	return k == ScheduleCron || k == ScheduleInterval || k == ScheduleRecur
}

// Schedule is a durable timer owned by an agent: at NextRunAt it calls the
// agent's Method with Payload.
type Schedule struct {
	ID string
	AgentKey
	Method  string
	Payload []byte // JSON
	Kind    ScheduleKind
	// Cron is the cron expression of a cron schedule, with its time zone
	// prefix ("CRON_TZ=Europe/London ...") when it has one, or the text of
	// a recur schedule.
	Cron string
	// Interval is the period of an interval schedule.
	Interval time.Duration
	// IdempotencyKey, when set, is unique per agent: creating a schedule
	// whose key exists returns the existing one.
	IdempotencyKey string
	NextRunAt      time.Time
	CreatedAt      time.Time
	// Owner is the node that claimed the schedule to run it, "" when
	// unclaimed.
	Owner string
}

// ScheduleFilter selects schedules of one agent. Zero fields match all.
type ScheduleFilter struct {
	Kind ScheduleKind
	// From and To bound NextRunAt, inclusive.
	From, To time.Time
}

// FiberStatus is where a fiber is in its life (docs/DESIGN.md §3.6).
type FiberStatus string

// Fiber statuses.
const (
	FiberPending     FiberStatus = "pending"
	FiberRunning     FiberStatus = "running"
	FiberCompleted   FiberStatus = "completed"
	FiberAborted     FiberStatus = "aborted"
	FiberInterrupted FiberStatus = "interrupted"
	FiberError       FiberStatus = "error"
)

// Finished reports whether s is a terminal status. An interrupted fiber is
// not finished: its recovery hook decides what becomes of it.
func (s FiberStatus) Finished() bool {
	return s == FiberCompleted || s == FiberAborted || s == FiberError
}

// Fiber is one entry of an agent's fiber ledger.
type Fiber struct {
	ID string
	AgentKey
	// Name is the fiber's kind as the application named it ("reindex").
	Name string
	// IdempotencyKey, when set, is unique per agent.
	IdempotencyKey string
	Metadata       []byte // JSON
	Status         FiberStatus
	// Stash is the fiber's last checkpoint (JSON), nil if none.
	Stash []byte
	Error string
	// Owner is the node running the fiber, "" when none is.
	Owner      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time
}

// FiberFilter selects fibers of one agent. Zero fields match all.
type FiberFilter struct {
	Status FiberStatus
	Name   string
}

// AgentStore is the storage agents need. It is part of Store.
type AgentStore interface {
	// ActivateAgent makes owner the live node of the agent, creating its
	// row if there is none, and increments its fence. It succeeds when the
	// agent is live nowhere, is live on owner already, or is live on a node
	// that has no row; otherwise it fails with an *AgentOwnedError naming
	// the live node (matching ErrAgentElsewhere).
	ActivateAgent(ctx context.Context, key AgentKey, owner string, now time.Time) (*Agent, error)
	// GetAgent returns the agent row or an error matching ErrNotFound.
	GetAgent(ctx context.Context, key AgentKey) (*Agent, error)
	// SaveAgentState stores the agent's state while l is its current
	// activation, and fails with ErrLeaseLost otherwise.
	SaveAgentState(ctx context.Context, l AgentLease, state []byte, now time.Time) error
	// ReleaseAgent ends the activation l, leaving the agent live nowhere;
	// it does nothing when l is no longer current. The caller writes
	// nothing under l afterwards.
	//
	// When l is the row's first activation (fence 1) and the agent has
	// stored nothing — no state, and no schedule, fiber, tracked workflow,
	// Think submission, conversation message or outbox message — the row
	// is deleted instead, so that a name that was only looked at (a GET
	// answered 404, a WebSocket opened and closed) leaves nothing behind.
	// The next activation creates the row again with fence 1. That is
	// safe: a row at fence 1 has had one activation, l, and l is ending;
	// so once the row is gone, every activation the agent ever had has
	// ended (each deleted row had only one), and the new row's fence 1
	// cannot be mistaken for an old activation's. A row that was ever
	// re-activated (fence 2 or more) is kept, since an activation it
	// superseded may still be running — on a node presumed dead, or in a
	// process that reuses the node id — and only the fence stops it.
	ReleaseAgent(ctx context.Context, l AgentLease, now time.Time) error

	// CreateSchedule inserts s. When s has an IdempotencyKey that the agent
	// already has a schedule for, it inserts nothing and returns that
	// schedule with created false. Otherwise it returns the schedule as
	// stored, with created true. s must have an ID and a NextRunAt.
	// Schedule IDs are unique across agents (RescheduleSchedule takes only
	// the ID): an ID that exists fails with an error matching
	// ErrDuplicateID.
	CreateSchedule(ctx context.Context, s *Schedule) (existing *Schedule, created bool, err error)
	// GetSchedule returns one schedule of the agent or ErrNotFound.
	GetSchedule(ctx context.Context, key AgentKey, id string) (*Schedule, error)
	// ListSchedules returns the agent's schedules by NextRunAt, then ID.
	ListSchedules(ctx context.Context, key AgentKey, f ScheduleFilter) ([]Schedule, error)
	// DeleteSchedule removes a schedule of the agent and reports whether
	// it existed.
	DeleteSchedule(ctx context.Context, key AgentKey, id string) (bool, error)
	// ClaimDueSchedules claims for owner up to limit schedules of agents of
	// the given classes (those owner's runtime has; other services'
	// schedules are left to them) due at or before now, earliest first, that are unclaimed or claimed by a node
	// with no row, and whose agent is not live on another node that has a
	// row. Claiming sets Owner.
	ClaimDueSchedules(ctx context.Context, owner string, classes []string, now time.Time, limit int) ([]*Schedule, error)
	// NextScheduleTimes returns the NextRunAt times of up to limit
	// unclaimed schedules of the given classes due at or before until, earliest first. A
	// schedule claimed by a node that has no row counts as unclaimed.
	NextScheduleTimes(ctx context.Context, classes []string, until time.Time, limit int) ([]time.Time, error)
	// RescheduleSchedule sets a claimed schedule's NextRunAt and clears
	// its claim. It fails with ErrLeaseLost when owner no longer holds the
	// claim and with ErrNotFound when the schedule was deleted.
	RescheduleSchedule(ctx context.Context, id, owner string, next time.Time) error

	// CreateFiber inserts f. When the agent already has a fiber with f's
	// ID or f's IdempotencyKey, it inserts nothing and returns that fiber
	// with created false; when the ID and the key are two different
	// fibers', it fails with an error matching ErrDuplicateID. Otherwise it
	// returns the fiber as stored, with created true. Fiber IDs, like
	// keys, are unique per agent. An empty Status is stored as pending; a
	// zero UpdatedAt as CreatedAt.
	CreateFiber(ctx context.Context, f *Fiber) (existing *Fiber, created bool, err error)
	// GetFiber returns one fiber of the agent or ErrNotFound.
	GetFiber(ctx context.Context, key AgentKey, id string) (*Fiber, error)
	// ListFibers returns the agent's fibers, oldest first.
	ListFibers(ctx context.Context, key AgentKey, f FiberFilter) ([]Fiber, error)
	// ClaimFiber makes owner the runner of an unfinished fiber and sets it
	// running, taking it from any previous runner (whose writes then fail
	// with ErrLeaseLost). It fails with ErrFinished for a finished fiber
	// and ErrNotFound for a missing one.
	ClaimFiber(ctx context.Context, key AgentKey, id, owner string, now time.Time) (*Fiber, error)
	// UpdateFiber sets a fiber's status and error while owner runs it, and
	// clears the owner and sets FinishedAt when status is finished (and
	// clears the owner when it is interrupted). It
	// fails with ErrLeaseLost when owner does not run it, which includes a
	// fiber that was deleted or has finished.
	UpdateFiber(ctx context.Context, key AgentKey, id, owner string, status FiberStatus, errMsg string, now time.Time) error
	// StashFiber stores a fiber's checkpoint while owner runs it, and
	// fails with ErrLeaseLost otherwise.
	StashFiber(ctx context.Context, key AgentKey, id, owner string, stash []byte, now time.Time) error
	// AbortFiber marks an unfinished fiber that no live node runs as
	// aborted. It returns the status the fiber had; a fiber that a live
	// node runs is left alone (the runner aborts it) and its status is
	// returned, as is a finished fiber's. It fails with ErrNotFound for a
	// missing fiber.
	AbortFiber(ctx context.Context, key AgentKey, id string, now time.Time) (FiberStatus, error)
	// DeleteFiber removes a fiber and reports whether it existed.
	DeleteFiber(ctx context.Context, key AgentKey, id string) (bool, error)
	// InterruptFibers marks the agent's pending and running fibers that
	// owner does not run as interrupted, clears their owner, and returns
	// them as they now are (interrupted), oldest first. The caller has
	// just activated the agent, so no live node runs them.
	InterruptFibers(ctx context.Context, key AgentKey, owner string, now time.Time) ([]Fiber, error)
	// OrphanedFiberAgents returns up to limit agents of the given classes
	// that have pending or
	// running fibers whose owner has no node row (or that have no owner),
	// leaving out agents live on a node that has a row: that node
	// interrupted their fibers when it activated them.
	OrphanedFiberAgents(ctx context.Context, classes []string, limit int) ([]AgentKey, error)
}

// ErrAgentElsewhere: the agent is live on another node.
var ErrAgentElsewhere = errors.New("agent is live on another node")

// AgentOwnedError says which node an agent is live on.
type AgentOwnedError struct {
	Key AgentKey
	// Node is the owner's row: its ID, service, host and pid.
	Node Node
}

func (e *AgentOwnedError) Error() string {
	return fmt.Sprintf("agent %s is live on node %s (service %q, host %s, pid %d)",
		e.Key, e.Node.ID, e.Node.Service, e.Node.Host, e.Node.PID)
}

func (e *AgentOwnedError) Unwrap() error { return ErrAgentElsewhere }
