package store

import (
	"context"
	"time"
)

// This file is the storage of Think agents (DESIGN §4.1–4.2): each agent's
// conversation and its ledger of submissions, the durable FIFO queue of
// turns.

// SubmissionStatus is where a submission is in its life.
type SubmissionStatus string

// Submission statuses.
const (
	SubmissionPending   SubmissionStatus = "pending"
	SubmissionRunning   SubmissionStatus = "running"
	SubmissionCompleted SubmissionStatus = "completed"
	SubmissionAborted   SubmissionStatus = "aborted"
	SubmissionSkipped   SubmissionStatus = "skipped"
	SubmissionError     SubmissionStatus = "error"
)

// Finished reports whether s is terminal.
func (s SubmissionStatus) Finished() bool {
	return s == SubmissionCompleted || s == SubmissionAborted || s == SubmissionSkipped || s == SubmissionError
}

// Submission is one entry of a Think agent's ledger: messages to add to the
// conversation and a turn to run on them.
type Submission struct {
	ID string
	AgentKey
	// Seq orders the agent's submissions, first in first out; the store
	// assigns it on insert.
	Seq            int64
	IdempotencyKey string // unique per agent when set
	Metadata       []byte // JSON, or nil
	// Messages are the submitted messages, a JSON array of model.Message.
	Messages []byte
	Status   SubmissionStatus
	Error    string
	// Output is the turn's result as the runtime records it (JSON), nil
	// until it finishes.
	Output []byte
	// Applied is set once the submission's messages are in the
	// conversation.
	Applied bool
	// Owner is the node running the submission, "" when none is.
	Owner string
	// NotifyInstance and NotifyEvent, when set, name the workflow instance
	// that waits for the submission (think.Prompt) and the event type it
	// waits for: FinishSubmission then writes an outbox message for it in
	// the same transaction.
	NotifyInstance string
	NotifyEvent    string
	// TraceParent is the W3C traceparent of the span that created the
	// submission, "" when there was none; the turn that runs it is that
	// span's child.
	TraceParent  string
	InputTokens  int
	OutputTokens int
	CreatedAt    time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
}

// ConversationMessage is one stored message of a Think agent's conversation.
type ConversationMessage struct {
	AgentKey
	Seq          int64  // assigned by the store, increasing per agent
	SubmissionID string // the submission whose turn added it
	Message      []byte // JSON model.Message
	CreatedAt    time.Time
}

// SubmissionFilter selects submissions. Zero fields match all.
type SubmissionFilter struct {
	Statuses []SubmissionStatus
	Limit    int // default and at most 1000
}

// ThinkStore is the storage Think agents need. It is part of Store.
type ThinkStore interface {
	// CreateSubmission inserts s as pending, assigning Seq. When the agent
	// has a submission with s's ID or IdempotencyKey already, it inserts
	// nothing and returns that one with created false; when the ID and the
	// key name two different submissions it fails with an error matching
	// ErrDuplicateID that names both.
	CreateSubmission(ctx context.Context, s *Submission) (existing *Submission, created bool, err error)
	// GetSubmission returns one submission of the agent or ErrNotFound.
	GetSubmission(ctx context.Context, key AgentKey, id string) (*Submission, error)
	// ListSubmissions returns the agent's submissions in Seq order.
	ListSubmissions(ctx context.Context, key AgentKey, f SubmissionFilter) ([]Submission, error)
	// StartSubmission makes owner the runner of the agent's oldest pending
	// submission and sets it running, unless one of the agent's
	// submissions is already running; it returns nil when there is none
	// to start.
	StartSubmission(ctx context.Context, key AgentKey, owner string, now time.Time) (*Submission, error)
	// ApplySubmission appends the submission's messages to the
	// conversation and sets Applied, in one transaction, while owner runs
	// it; it fails with ErrLeaseLost otherwise.
	ApplySubmission(ctx context.Context, key AgentKey, id, owner string, now time.Time) error
	// AppendConversation appends messages (JSON model.Message each) that
	// the submission's turn produced, while owner runs it.
	AppendConversation(ctx context.Context, key AgentKey, id, owner string, msgs [][]byte, now time.Time) error
	// FinishSubmission records the end of a running submission (status
	// completed, aborted, skipped or error) with its error, output and
	// token usage, and clears its owner, while owner runs it. For a
	// submission with a NotifyInstance it also inserts, in the same
	// transaction, the outbox message telling it (see OutboxMessage).
	FinishSubmission(ctx context.Context, key AgentKey, id, owner string, status SubmissionStatus, errMsg string, output []byte, usage Usage, now time.Time) error
	// FinishSubmissionAndDeliver is FinishSubmission that also delivers
	// the outbox message in the same transaction when it can: when the
	// submission has a NotifyInstance that is in this store and not
	// finished, and the payload is at most d.MaxEventBytes, it inserts the
	// payload as an event of type NotifyEvent for the instance, waking it
	// if it waits for that type (as SendEvent does), and writes the
	// outbox message already delivered (payload cleared, DeliveredAt
	// now), so that it is never claimed. Otherwise it writes the message
	// undelivered, as FinishSubmission does, for the outbox loop (which
	// reports a refused or undeliverable outcome). It reports whether it
	// delivered; when it also claimed the instance it woke (see
	// Delivery.ClaimOwner), it returns the instance as claimed.
	FinishSubmissionAndDeliver(ctx context.Context, key AgentKey, id, owner string, status SubmissionStatus, errMsg string, output []byte, usage Usage, now time.Time, d Delivery) (delivered bool, claimed *Instance, err error)
	// FinishPendingSubmission ends a submission that has not started
	// (CancelSubmission's abort, or skipped) with the status and error,
	// writing its outbox message like FinishSubmission; it returns the
	// status the submission had and changes nothing unless it was pending.
	FinishPendingSubmission(ctx context.Context, key AgentKey, id string, status SubmissionStatus, errMsg string, now time.Time) (SubmissionStatus, error)

	// ClaimOutbox claims for owner up to limit undelivered outbox messages
	// due at or before now (unclaimed, or claimed by a node with no row),
	// oldest first; on PostgreSQL with SKIP LOCKED.
	ClaimOutbox(ctx context.Context, owner string, now time.Time, limit int) ([]OutboxMessage, error)
	// NextOutboxTimes returns the due times of up to limit undelivered,
	// unclaimed outbox messages due at or before until, earliest first.
	NextOutboxTimes(ctx context.Context, until time.Time, limit int) ([]time.Time, error)
	// DeliveredOutbox marks a claimed message delivered: it clears its
	// payload and claim and sets DeliveredAt. It fails with ErrLeaseLost
	// when owner does not hold the claim.
	DeliveredOutbox(ctx context.Context, id int64, owner string, now time.Time) error
	// FailedOutbox gives up on a claimed message that can never be
	// delivered: like DeliveredOutbox it clears its payload and claim and
	// sets DeliveredAt, so it is never claimed again and is pruned with
	// the delivered ones; it also sets Failed and records reason as
	// LastError. It fails with ErrLeaseLost when owner does not hold the
	// claim.
	FailedOutbox(ctx context.Context, id int64, owner string, now time.Time, reason string) error
	// RetryOutbox gives up owner's claim on a message that could not be
	// delivered: Attempts increments, NextAttemptAt becomes next, LastError
	// is recorded.
	RetryOutbox(ctx context.Context, id int64, owner string, next time.Time, lastError string) error
	// PruneOutbox deletes up to limit messages delivered before before and
	// returns how many it deleted.
	PruneOutbox(ctx context.Context, before time.Time, limit int) (int, error)
	// GetOutbox returns the outbox messages of one submission, oldest first.
	GetOutbox(ctx context.Context, key AgentKey, submissionID string) ([]OutboxMessage, error)
	// CancelSubmission aborts a pending submission at once (writing its
	// outbox message, like FinishPendingSubmission) and returns the status
	// it had; a running or finished one is left alone (the
	// runner aborts a running one) and its status returned.
	CancelSubmission(ctx context.Context, key AgentKey, id string, now time.Time) (SubmissionStatus, error)
	// DeleteSubmissions removes the given finished submissions of the
	// agent (all finished ones when ids is empty) and returns how many it
	// removed; unfinished ones are never removed.
	DeleteSubmissions(ctx context.Context, key AgentKey, ids []string) (int, error)
	// RecoverSubmissions handles the agent's running submissions that
	// owner does not run, after their runner died: one whose messages
	// never reached the conversation is pending again; one cut off
	// mid-turn is finished as error with errMsg. It returns both lists.
	RecoverSubmissions(ctx context.Context, key AgentKey, owner, errMsg string, now time.Time) (requeued, failed []Submission, err error)
	// ListConversation returns the agent's conversation in Seq order.
	ListConversation(ctx context.Context, key AgentKey) ([]ConversationMessage, error)
	// ListConversationFrom returns the agent's messages whose Seq is at
	// least seq, in Seq order: what a reader holding the conversation up to
	// seq needs to catch up, with the message at seq to check that the one
	// it holds is still there (ClearConversation starts the seqs again).
	// A negative seq fails with an error that says so.
	ListConversationFrom(ctx context.Context, key AgentKey, seq int64) ([]ConversationMessage, error)
	// ClearConversation removes the agent's conversation.
	ClearConversation(ctx context.Context, key AgentKey) error
	// PendingSubmissionAgents returns up to limit agents of the given
	// classes that have pending submissions, or running ones whose owner
	// has no node row, and are live on no node that has a row.
	PendingSubmissionAgents(ctx context.Context, classes []string, limit int) ([]AgentKey, error)
}

// Delivery says how FinishSubmissionAndDeliver may deliver a submission's
// outcome itself.
type Delivery struct {
	// MaxEventBytes bounds the payload it delivers; a larger one is left
	// to the outbox. Zero or less: none is delivered.
	MaxEventBytes int
	// ClaimOwner, when set, is the node that claims, in the same
	// transaction, an instance of service ClaimService that the event
	// wakes (it was suspended waiting for that type): the instance is
	// claimed as ClaimDue would claim it, for that node to execute at
	// once, instead of being left due for any node's ClaimDue. The write
	// then also takes the event for the pending wait step the instance is
	// suspended in, as TakeEvent would: the event is consumed and the
	// step stored done with its payload, so the execution's replay
	// returns it without a write.
	ClaimOwner   string
	ClaimService string
}

// OutboxMessage tells a waiting workflow instance that a submission ended.
// FinishSubmission writes it in the same transaction as the status, with
// Payload {"submissionId","status","error","output"}; the runtime delivers
// it as an event of type EventType to InstanceID until delivery succeeds.
type OutboxMessage struct {
	ID int64 // assigned by the store, increasing
	AgentKey
	SubmissionID  string
	InstanceID    string
	EventType     string
	Payload       []byte // JSON; nil once delivered
	Attempts      int
	LastError     string
	NextAttemptAt time.Time
	Owner         string // the node delivering it now, "" when none is
	CreatedAt     time.Time
	DeliveredAt   time.Time // zero until delivered or given up
	// Failed is set when the message was given up on (FailedOutbox): its
	// payload never reached the instance, and LastError says why.
	Failed bool
}

// Usage counts a turn's tokens.
type Usage struct {
	InputTokens  int
	OutputTokens int
}
