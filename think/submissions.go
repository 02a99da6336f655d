package think

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"agentflow/agent"
	"agentflow/internal/ids"
	"agentflow/internal/telemetry"
	"agentflow/model"
	"agentflow/store"
)

// SubmitOptions are options of SubmitMessages.
type SubmitOptions struct {
	// SubmissionID names the submission; default a generated "sub_…" id.
	SubmissionID string
	// IdempotencyKey makes a resubmission return the existing submission.
	IdempotencyKey string
	// Metadata is stored with the submission as JSON.
	Metadata any
}

// SubmissionInfo is a submission's ledger entry.
type SubmissionInfo struct {
	ID             string                 `json:"id"`
	Seq            int64                  `json:"seq"`
	IdempotencyKey string                 `json:"idempotencyKey,omitempty"`
	Metadata       json.RawMessage        `json:"metadata,omitempty"`
	Messages       []model.Message        `json:"messages"`
	Status         store.SubmissionStatus `json:"status"`
	Error          string                 `json:"error,omitempty"`
	// Output is the turn's result: {"text": …, "finish": "answered"} with
	// the model's final text, or "finish": "max_steps" when the turn hit
	// MaxSteps while the model was still calling tools.
	Output     json.RawMessage `json:"output,omitempty"`
	Usage      model.Usage     `json:"usage"`
	CreatedAt  time.Time       `json:"createdAt"`
	StartedAt  time.Time       `json:"startedAt,omitzero"`
	FinishedAt time.Time       `json:"finishedAt,omitzero"`
}

func submissionInfo(s *store.Submission) SubmissionInfo {
	info := SubmissionInfo{ID: s.ID, Seq: s.Seq, IdempotencyKey: s.IdempotencyKey, Metadata: s.Metadata,
		Status: s.Status, Error: s.Error, Output: s.Output,
		Usage:     model.Usage{InputTokens: s.InputTokens, OutputTokens: s.OutputTokens},
		CreatedAt: s.CreatedAt, StartedAt: s.StartedAt, FinishedAt: s.FinishedAt}
	_ = json.Unmarshal(s.Messages, &info.Messages)
	return info
}

// SubmitResult is what SubmitMessages returns.
type SubmitResult struct {
	Submission SubmissionInfo `json:"submission"`
	// Accepted is false when the ID or IdempotencyKey named an existing
	// submission, which is returned instead.
	Accepted bool `json:"accepted"`
}

// ErrNoMessages: a submission must carry at least one message.
var ErrNoMessages = errors.New("think: a submission needs at least one message")

// SubmitMessages appends messages to the ledger as a pending submission and
// returns at once; the agent runs it after the submissions before it.
func (a *Agent[S]) SubmitMessages(ctx context.Context, msgs []model.Message, o SubmitOptions) (SubmitResult, error) {
	return a.submit(ctx, msgs, o, "", "")
}

// submit is SubmitMessages with the workflow instance (and event type) the
// outbox tells when the submission ends, for a prompt step.
func (a *Agent[S]) submit(ctx context.Context, msgs []model.Message, o SubmitOptions, notifyInstance, notifyEvent string) (SubmitResult, error) {
	if len(msgs) == 0 {
		return SubmitResult{}, ErrNoMessages
	}
	for i, m := range msgs {
		if m.Role != model.RoleUser && m.Role != model.RoleAssistant {
			return SubmitResult{}, fmt.Errorf("think: submit: message %d: role %q: a submission carries user or assistant messages", i, m.Role)
		}
	}
	raw, err := json.Marshal(msgs)
	if err != nil {
		return SubmitResult{}, fmt.Errorf("think: submit: %w", err)
	}
	return a.create(ctx, raw, o, notifyInstance, notifyEvent)
}

// create appends a submission of raw, a JSON array of checked messages
// (model.Message, or storedMessage for a chat request's), to the ledger.
func (a *Agent[S]) create(ctx context.Context, raw []byte, o SubmitOptions, notifyInstance, notifyEvent string) (SubmitResult, error) {
	var (
		meta []byte
		err  error
	)
	if o.Metadata != nil {
		if meta, err = json.Marshal(o.Metadata); err != nil {
			return SubmitResult{}, fmt.Errorf("think: submit: metadata: %w", err)
		}
	}
	id := o.SubmissionID
	if id == "" {
		id = "sub_" + ids.Random()
	}
	rt := a.Runtime()
	now := rt.Clock().Now()
	s := &store.Submission{ID: id, AgentKey: a.key(), IdempotencyKey: o.IdempotencyKey, Metadata: meta,
		Messages: raw, Status: store.SubmissionPending, CreatedAt: now,
		NotifyInstance: notifyInstance, NotifyEvent: notifyEvent, TraceParent: telemetry.Traceparent(ctx)}
	existing, created, err := a.store().CreateSubmission(ctx, s)
	if err != nil {
		return SubmitResult{}, fmt.Errorf("think: submit to %s: %w", a.key(), err)
	}
	if !created {
		return SubmitResult{Submission: submissionInfo(existing)}, nil
	}
	a.kick()
	return SubmitResult{Submission: submissionInfo(existing), Accepted: true}, nil
}

// InspectSubmission returns one submission, or an error matching
// store.ErrNotFound.
func (a *Agent[S]) InspectSubmission(ctx context.Context, id string) (SubmissionInfo, error) {
	s, err := a.store().GetSubmission(ctx, a.key(), id)
	if err != nil {
		return SubmissionInfo{}, err
	}
	return submissionInfo(s), nil
}

// ListSubmissions returns the agent's submissions, oldest first.
func (a *Agent[S]) ListSubmissions(ctx context.Context, statuses ...store.SubmissionStatus) ([]SubmissionInfo, error) {
	ss, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{Statuses: statuses})
	if err != nil {
		return nil, err
	}
	out := make([]SubmissionInfo, len(ss))
	for i := range ss {
		out[i] = submissionInfo(&ss[i])
	}
	return out, nil
}

// CancelSubmission cancels a submission: a pending one is aborted and never
// runs (its messages never enter the conversation); a running one has its
// turn cancelled and ends aborted. It reports whether the submission was
// unfinished.
func (a *Agent[S]) CancelSubmission(ctx context.Context, id string) (bool, error) {
	a.mu.Lock()
	cancel := a.cancels[id]
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		return true, nil
	}
	prev, err := a.store().CancelSubmission(ctx, a.key(), id, a.Runtime().Clock().Now())
	if err != nil {
		return false, err
	}
	if prev == store.SubmissionRunning {
		// The runner has started it but its turn has not registered yet
		// (or has just done so): leave word for the turn.
		a.mu.Lock()
		if cancel := a.cancels[id]; cancel != nil {
			cancel()
		} else {
			if a.cancelled == nil {
				a.cancelled = map[string]bool{}
			}
			a.cancelled[id] = true
		}
		a.mu.Unlock()
	}
	return !prev.Finished(), nil
}

// CancelSubmission cancels submission id of the Think agent class/name
// wherever in rt's cluster the agent is live, as Agent.CancelSubmission
// does there: a pending submission never runs, a running one has its turn
// cancelled. It is a named call routed to the agent's node (or activating
// the agent here when it is live nowhere), so it works from any node, and
// from code, such as an operator API, that holds no reference to the
// agent. It reports whether the submission was unfinished.
func CancelSubmission(ctx context.Context, rt *agent.Runtime, class, name, id string) (bool, error) {
	raw, err := rt.Ref(class, name).Call(ctx, cancelPromptMethod, id)
	if err != nil {
		return false, fmt.Errorf("think: cancel submission %s of agent %s/%s: %w", id, class, name, err)
	}
	var unfinished bool
	if err := json.Unmarshal(raw, &unfinished); err != nil {
		return false, fmt.Errorf("think: cancel submission %s of agent %s/%s: the agent's answer: %w", id, class, name, err)
	}
	return unfinished, nil
}

// DeleteSubmissions removes finished submissions (all of them when no id
// is given) and returns how many it removed.
func (a *Agent[S]) DeleteSubmissions(ctx context.Context, ids ...string) (int, error) {
	return a.store().DeleteSubmissions(ctx, a.key(), ids)
}

// Conversation returns the persisted conversation.
func (a *Agent[S]) Conversation(ctx context.Context) ([]model.Message, error) {
	msgs, err := a.history.read(ctx, a.store(), a.key())
	if err != nil {
		return nil, err
	}
	return cloneMessages(msgs), nil
}

func (a *Agent[S]) key() store.AgentKey { return store.AgentKey{Class: a.Class(), Name: a.Name()} }
