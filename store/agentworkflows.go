package store

import (
	"context"
	"time"
)

// This file is the storage of agents ⇄ workflows (DESIGN §3.5): the tracking
// table in which an agent keeps the workflows it started.

// WorkflowFinishedMethod is the method name of the schedule Finish queues
// for the origin agent of a finished instance. Names starting with
// "agentflow:" are the runtime's own and never name a class's method.
const WorkflowFinishedMethod = "agentflow:workflow-finished"

// FinishedNoticeID is the id (and idempotency key) of the schedule that
// tells an instance's origin agent it finished.
func FinishedNoticeID(instanceID string) string { return "wff_" + instanceID }

// AgentWorkflow is an agent's tracking row for a workflow instance it
// started.
type AgentWorkflow struct {
	AgentKey
	WorkflowID string // the instance id
	Binding    string // the binding it was started through
	Workflow   string // the workflow class
	Service    string // the service whose workers run it
	// Status is the instance's status as the agent last learned it.
	Status Status
	// Metadata is a JSON object whose top-level keys are unique, or nil.
	Metadata []byte
	// ErrorName and ErrorMessage are set when Status is errored.
	ErrorName    string
	ErrorMessage string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	// CompletedAt is when the agent learned the instance finished.
	CompletedAt time.Time
}

// WorkflowCursor is where a page of tracking rows ended; the next page
// starts after it. Pages run newest first: by CreatedAt, then WorkflowID,
// both descending.
type WorkflowCursor struct {
	CreatedAt  time.Time
	WorkflowID string
}

// WorkflowFilter selects an agent's tracking rows. Zero fields match all.
type WorkflowFilter struct {
	Statuses []Status
	Workflow string // the workflow class
	// Metadata matches rows whose metadata has each key at the top level
	// with a string, number or boolean value whose JSON text (strings
	// unquoted) equals the given one. A number's text is the one stored
	// ("1.50" matches 1.50, not 1.5); true and false are "true" and
	// "false"; objects, arrays and null match nothing.
	Metadata map[string]string
	// After, when set, starts the page after that row.
	After *WorkflowCursor
	// Limit caps the page; the store caps it at 100 and defaults it to 100.
	Limit int
}

// TrackingRule says which status changes a tracking update may make
// (DESIGN §3.5's tracking rules).
type TrackingRule string

const (
	// TrackProgress moves a queued or waiting row to running; it leaves
	// any other status alone.
	TrackProgress TrackingRule = "progress"
	// TrackFinish sets complete or errored (with the error) unless the
	// row is terminated or paused. Its Status must be one of the two.
	TrackFinish TrackingRule = "finish"
	// TrackSync sets the status the instance has, whatever the row had.
	TrackSync TrackingRule = "sync"
)

// TrackFinish and TrackSync set the row's error to the update's (none
// unless given) and its CompletedAt to the update's time when the new
// status is finished, to zero otherwise. An update that would leave the
// status and the error as they are changes nothing, not even the row's
// times.

// TrackingUpdate is a change to a tracking row.
type TrackingUpdate struct {
	Rule         TrackingRule
	Status       Status // for TrackFinish and TrackSync
	ErrorName    string
	ErrorMessage string
}

// AgentWorkflowStore is the storage of agents' workflow tracking. It is
// part of Store.
type AgentWorkflowStore interface {
	// CreateTrackedInstance inserts the instance (which must have an
	// Origin, and WakeAt set unless it has an Owner) and the origin
	// agent's tracking row in one transaction. An existing instance id
	// fails with an error matching ErrDuplicateID that names it, and
	// inserts nothing.
	//
	// The instance is inserted as CreateInstances inserts one: with an
	// Owner, claimed with fence 1 (and inst.Fence set). wf must be
	// inst.Origin's row for inst.ID; its zero Status, Workflow, Service
	// and CreatedAt are taken from the instance, a zero UpdatedAt from
	// CreatedAt. Metadata that is not a JSON object with unique top-level
	// keys fails, inserting nothing. A tracking row left for an earlier
	// instance with the same id (one that retention deleted) is replaced.
	CreateTrackedInstance(ctx context.Context, inst *Instance, wf *AgentWorkflow) error
	// GetAgentWorkflow returns one tracking row or ErrNotFound.
	GetAgentWorkflow(ctx context.Context, key AgentKey, workflowID string) (*AgentWorkflow, error)
	// ListAgentWorkflows returns one page of the agent's tracking rows,
	// newest first.
	ListAgentWorkflows(ctx context.Context, key AgentKey, f WorkflowFilter) ([]AgentWorkflow, error)
	// UpdateAgentWorkflow applies u to a tracking row and returns the row
	// as it now is, with changed false when the rule left it as it was.
	// A missing row fails with ErrNotFound; an unknown rule, or a status
	// the rule does not take, fails and changes nothing.
	UpdateAgentWorkflow(ctx context.Context, key AgentKey, workflowID string, u TrackingUpdate, now time.Time) (wf *AgentWorkflow, changed bool, err error)
	// DeleteAgentWorkflow removes a tracking row and reports whether it
	// existed. The instance itself is left alone.
	DeleteAgentWorkflow(ctx context.Context, key AgentKey, workflowID string) (bool, error)
	// GetWorkflowOutcome reads, in one query, what an agent's notice about
	// workflowID tells it: the instance's status, output and error, and the
	// agent's tracking row (nil when the agent deleted it). It fails with
	// an error matching ErrNotFound when the instance is gone.
	GetWorkflowOutcome(ctx context.Context, key AgentKey, workflowID string) (*WorkflowOutcome, error)
	// AckWorkflowNotice records, in one atomic write, that an agent was
	// told what a notice from one of its workflows says: a.Update applied
	// to the tracking row as UpdateAgentWorkflow applies it (a missing row
	// is no error), and the notice's schedule deleted if a.Owner still
	// holds its claim.
	AckWorkflowNotice(ctx context.Context, a NoticeAck, now time.Time) error
}

// WorkflowOutcome is what GetWorkflowOutcome reads: an instance's end as
// its agent hears of it.
type WorkflowOutcome struct {
	Status       Status
	Output       []byte
	ErrorName    string
	ErrorMessage string
	// Tracking is the agent's tracking row; nil when there is none.
	Tracking *AgentWorkflow
}

// NoticeAck is what AckWorkflowNotice records.
type NoticeAck struct {
	AgentKey
	NoticeID   string // the notice's schedule id
	Owner      string // the node whose claim of the notice is acknowledged
	WorkflowID string
	Update     TrackingUpdate // TrackFinish or TrackSync
}
