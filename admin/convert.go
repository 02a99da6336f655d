package admin

import (
	"encoding/json"
	"time"

	"agentflow/store"
)

// This file turns store rows into the API's JSON types, and assembles an
// instance's step timeline.

func mapSlice[T, U any](in []T, f func(*T) U) []U {
	out := make([]U, len(in))
	for i := range in {
		out[i] = f(&in[i])
	}
	return out
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func raw(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return json.RawMessage(b)
}

func errInfo(name, msg string) *ErrorInfo {
	if name == "" && msg == "" {
		return nil
	}
	return &ErrorInfo{Name: name, Message: msg}
}

// workflowJSON is an instance; full adds its params and output, which a
// list page leaves out.
func workflowJSON(in *store.Instance, full bool) Workflow {
	w := Workflow{
		ID: in.ID, Workflow: in.Workflow, Service: in.Service, Status: string(in.Status),
		Error:     errInfo(in.ErrorName, in.ErrorMessage),
		CreatedAt: utc(in.CreatedAt), UpdatedAt: utc(in.UpdatedAt), FinishedAt: utc(in.FinishedAt),
		WakeAt: utc(in.WakeAt), WaitingEvent: in.WaitingEvent, PausedAt: utc(in.PausedAt),
		Owner: in.Owner, Restarts: in.Restarts,
	}
	if in.Origin != (store.AgentKey{}) {
		w.Origin = &AgentRef{Class: in.Origin.Class, Name: in.Origin.Name}
	}
	if full {
		w.Params, w.Output = raw(in.Params), raw(in.Output)
	}
	return w
}

// timeline assembles the description of an instance: each step with its
// start and end, its attempts (with their errors and the retry times
// between them), a sleep's end and a wait's deadline and event type; and
// the events sent to it, with when they were consumed.
func timeline(in *store.Instance, steps []store.Step, attempts []store.StepAttempt, events []store.Event) WorkflowDescription {
	bySeq := map[int][]store.StepAttempt{}
	for _, a := range attempts {
		bySeq[a.Seq] = append(bySeq[a.Seq], a)
	}
	d := WorkflowDescription{Workflow: workflowJSON(in, true), Steps: make([]Step, 0, len(steps)), Events: make([]Event, 0, len(events))}
	for i, s := range steps {
		st := Step{
			Seq: s.Seq, Name: s.Name, Occurrence: s.Occurrence, Kind: string(s.Kind), State: string(s.State),
			Attempt: s.Attempt, StartedAt: utc(s.StartedAt), Result: raw(s.Result),
			Error: errInfo(s.ErrorName, s.ErrorMessage),
		}
		if s.State == store.StepPending {
			st.WakeAt = utc(s.WakeAt)
			// The instance waits for its last step; a pending wait there
			// waits for the instance's event type.
			if s.Kind == store.KindWait && i == len(steps)-1 {
				st.WaitingEvent = in.WaitingEvent
			}
		} else {
			st.EndedAt = utc(s.UpdatedAt)
		}
		as := bySeq[s.Seq]
		for j, a := range as {
			at := Attempt{Number: a.Attempt, StartedAt: utc(a.StartedAt), EndedAt: utc(a.EndedAt),
				Error: errInfo(a.ErrorName, a.ErrorMessage)}
			// A failed attempt followed by another was retried when the
			// next one started.
			if at.Error != nil && j+1 < len(as) {
				at.RetryAt = utc(as[j+1].StartedAt)
			}
			st.Attempts = append(st.Attempts, at)
		}
		if st.StartedAt.IsZero() && len(st.Attempts) > 0 {
			st.StartedAt = st.Attempts[0].StartedAt
		}
		d.Steps = append(d.Steps, st)
	}
	for _, e := range events {
		d.Events = append(d.Events, Event{Seq: e.Seq, Type: e.Type, Payload: raw(e.Payload), SentAt: utc(e.CreatedAt),
			Consumed: e.Consumed, ConsumedAt: utc(e.ConsumedAt)})
	}
	return d
}

func agentJSON(a *store.Agent) Agent {
	return Agent{Class: a.Class, Name: a.Name, State: raw(a.State), Owner: a.Owner,
		CreatedAt: utc(a.CreatedAt), UpdatedAt: utc(a.UpdatedAt)}
}

func agentSummaryJSON(a *store.AgentSummary) AgentSummary {
	return AgentSummary{Class: a.Class, Name: a.Name, Owner: a.Owner, CreatedAt: utc(a.CreatedAt),
		UpdatedAt: utc(a.UpdatedAt), StateBytes: a.StateBytes}
}

func scheduleJSON(s *store.Schedule) Schedule {
	out := Schedule{ID: s.ID, Class: s.Class, Name: s.Name, Method: s.Method, Payload: raw(s.Payload),
		Kind: string(s.Kind), Cron: s.Cron, IdempotencyKey: s.IdempotencyKey,
		NextRunAt: utc(s.NextRunAt), CreatedAt: utc(s.CreatedAt), Owner: s.Owner}
	if s.Interval != 0 {
		out.Interval = s.Interval.String()
	}
	return out
}

func fiberJSON(f *store.Fiber) Fiber {
	return Fiber{ID: f.ID, Name: f.Name, IdempotencyKey: f.IdempotencyKey, Metadata: raw(f.Metadata),
		Status: string(f.Status), Stash: raw(f.Stash), Error: f.Error, Owner: f.Owner,
		CreatedAt: utc(f.CreatedAt), UpdatedAt: utc(f.UpdatedAt), FinishedAt: utc(f.FinishedAt)}
}

func trackedJSON(w *store.AgentWorkflow) TrackedWorkflow {
	return TrackedWorkflow{WorkflowID: w.WorkflowID, Binding: w.Binding, Workflow: w.Workflow, Service: w.Service,
		Status: string(w.Status), Metadata: raw(w.Metadata), Error: errInfo(w.ErrorName, w.ErrorMessage),
		CreatedAt: utc(w.CreatedAt), UpdatedAt: utc(w.UpdatedAt), CompletedAt: utc(w.CompletedAt)}
}

// submissionJSON is a submission; full adds its messages, which a list
// leaves out.
func submissionJSON(s *store.Submission, full bool) Submission {
	out := Submission{ID: s.ID, Class: s.Class, Name: s.Name, Seq: s.Seq, IdempotencyKey: s.IdempotencyKey,
		Metadata: raw(s.Metadata), Status: string(s.Status), Error: s.Error, Output: raw(s.Output),
		Applied: s.Applied, Owner: s.Owner, NotifyInstance: s.NotifyInstance, NotifyEvent: s.NotifyEvent,
		InputTokens: s.InputTokens, OutputTokens: s.OutputTokens,
		CreatedAt: utc(s.CreatedAt), StartedAt: utc(s.StartedAt), FinishedAt: utc(s.FinishedAt)}
	if full {
		out.Messages = raw(s.Messages)
	}
	return out
}

func conversationJSON(m *store.ConversationMessage) ConversationMessage {
	msg := raw(m.Message)
	if msg == nil {
		msg = json.RawMessage("null")
	}
	return ConversationMessage{Seq: m.Seq, SubmissionID: m.SubmissionID, Message: msg, CreatedAt: utc(m.CreatedAt)}
}

func outboxJSON(o *store.OutboxMessage) Outbox {
	return Outbox{ID: o.ID, Class: o.Class, Name: o.Name, SubmissionID: o.SubmissionID, InstanceID: o.InstanceID,
		EventType: o.EventType, Payload: raw(o.Payload), Attempts: o.Attempts, LastError: o.LastError,
		NextAttemptAt: utc(o.NextAttemptAt), Owner: o.Owner, CreatedAt: utc(o.CreatedAt),
		DeliveredAt: utc(o.DeliveredAt), Failed: o.Failed}
}
