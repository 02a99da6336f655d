package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"agentflow/internal/agentseam"
	"agentflow/internal/ids"
	"agentflow/store"
	"agentflow/workflow"
)

// This file is the workflow's side of agents ⇄ workflows: what a workflow
// started by RunWorkflow can do with its agent, and how what it reports
// reaches the agent.
//
// Reports travel as notices: rows in the agent's schedules with a method of
// the runtime's own ("agentflow:…"), due at once. So they are durable the
// moment the step that sends them commits, reach the agent in whichever
// process has its class (the workflow may run in another service), and are
// retried like any schedule. A notice step's idempotency key is its
// schedule's, so a retried step sends nothing twice.

// noticeMethod is the method of the notices workflows send their agent.
const noticeMethod = "agentflow:workflow-notice"

// notice kinds.
const (
	noticeProgress   = "progress"
	noticeComplete   = "complete"
	noticeError      = "error"
	noticeEvent      = "event"
	noticeSetState   = "set-state"
	noticeMergeState = "merge-state"
	noticeResetState = "reset-state"
	noticeBroadcast  = "broadcast"
)

// notice is the payload of a notice schedule.
type notice struct {
	InstanceID string          `json:"instanceId"`
	Kind       string          `json:"kind,omitempty"` // empty for the store's finish notice
	Data       json.RawMessage `json:"data,omitempty"`
}

// ErrNoOrigin: the workflow was not started by an agent.
var ErrNoOrigin = errors.New("workflow was not started by an agent")

// ErrMalformedNotice: a notice from a workflow to its agent does not decode.
var ErrMalformedNotice = errors.New("malformed workflow notice")

// NoticeError reports a notice from a workflow that its agent cannot take
// because its payload does not decode. It is not retried: the runtime logs
// it at error level, hands it to the agent's ErrorHook (inside a
// *ScheduleError, like a schedule that failed for good) and drops it. It
// matches ErrMalformedNotice.
type NoticeError struct {
	Notice   string // the notice's id (its schedule's)
	Agent    store.AgentKey
	Kind     string // "progress", "error", …; "" when the payload does not say
	Instance string // the workflow instance that sent it; "" when the payload does not say
	Err      error  // why it does not decode
}

func (e *NoticeError) Error() string {
	kind, from := e.Kind, e.Instance
	if kind == "" {
		kind = "unknown kind"
	}
	if from == "" {
		from = "an unknown instance"
	}
	return fmt.Sprintf("notice %s (%s) for agent %s from workflow %s: %v", e.Notice, kind, e.Agent, from, e.Err)
}

func (e *NoticeError) Unwrap() []error { return []error{e.Err, ErrMalformedNotice} }

// ErrorName is the name the error is reported under.
func (e *NoticeError) ErrorName() string { return "NoticeError" }

// RejectedError is how WaitForApproval reports a rejection.
type RejectedError struct {
	InstanceID string
	Reason     string
}

// ErrorName is the name the workflow's error is stored under.
func (e *RejectedError) ErrorName() string { return "RejectedError" }

func (e *RejectedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("workflow %s was rejected", e.InstanceID)
	}
	return fmt.Sprintf("workflow %s was rejected: %s", e.InstanceID, e.Reason)
}

// Origin is a workflow's handle on the agent that started it. Its methods
// are steps: call them from Run's goroutine, with names as deterministic as
// any step's.
type Origin struct {
	rt   *Runtime
	step *workflow.Step
	key  store.AgentKey
}

// OriginOf returns the handle on the agent that started the instance step
// belongs to, or an error matching ErrNoOrigin. rt is this process's agent
// runtime; in a service that hosts no agents, a runtime with no classes
// (agent.NewRuntime on the service's engine, not started) will do: reports
// go through the store to the agent's own service, and calls (Call, and
// think.Prompt) go to the agent's node when the runtime has the cluster's
// Options.ClusterSecret.
func OriginOf(rt *Runtime, step *workflow.Step) (*Origin, error) {
	key := step.Origin()
	if key == (store.AgentKey{}) {
		return nil, fmt.Errorf("workflow %s: %w", step.InstanceID(), ErrNoOrigin)
	}
	return &Origin{rt: rt, step: step, key: key}, nil
}

// Agent returns the origin agent's class and name.
func (o *Origin) Agent() store.AgentKey { return o.key }

// Step returns the workflow step the handle was made with.
func (o *Origin) Step() *workflow.Step { return o.step }

// Runtime returns the agent runtime the handle was made with.
func (o *Origin) Runtime() *Runtime { return o.rt }

// Call calls a method of the agent, by name with arguments checked as
// Ref.Call checks them, in a step called name. Like Ref.Call it reaches the
// agent on whichever node of the cluster it is live, so the class need not
// be registered in this process.
func (o *Origin) Call(name, method string, args ...any) (json.RawMessage, error) {
	return workflow.Do(o.step, name, func(ctx context.Context, _ workflow.Attempt) (json.RawMessage, error) {
		return o.rt.Ref(o.key.Class, o.key.Name).Call(ctx, method, args...)
	})
}

// ReportProgress tells the agent how far the workflow is: its tracking
// row moves from queued or waiting to running, and its OnWorkflowProgress
// hook gets progress. The step is called "agent:progress".
func (o *Origin) ReportProgress(progress any) error {
	return o.send("agent:progress", noticeProgress, progress)
}

// ReportComplete tells the agent the workflow completed with output, ahead
// of Run returning; the agent hears of the completion once either way.
func (o *Origin) ReportComplete(output any) error {
	return o.send("agent:complete", noticeComplete, output)
}

// ReportError tells the agent the workflow failed with message, whether or
// not Run then returns an error; the agent hears of the failure once.
func (o *Origin) ReportError(message string) error {
	return o.send("agent:error", noticeError, message)
}

// SendEvent sends the agent an event of type typ, for its OnWorkflowEvent
// hook. It does not change the workflow's tracked status.
func (o *Origin) SendEvent(typ string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("send event to agent %s: %w", o.key, err)
	}
	return o.send("agent:event", noticeEvent, WorkflowEvent{Type: typ, Payload: raw})
}

// SetState replaces the agent's state (validated, stored and broadcast as
// SetState does).
func (o *Origin) SetState(state any) error {
	return o.send("agent:set-state", noticeSetState, state)
}

// MergeState merges patch's top-level fields into the agent's state, which
// must be a JSON object.
func (o *Origin) MergeState(patch map[string]any) error {
	return o.send("agent:merge-state", noticeMergeState, patch)
}

// ResetState sets the agent's state back to its initial state.
func (o *Origin) ResetState() error {
	return o.send("agent:reset-state", noticeResetState, nil)
}

// Broadcast sends msg to the agent's WebSocket clients: a string or []byte
// as it is, anything else as JSON.
func (o *Origin) Broadcast(msg any) error {
	raw, err := encodeMessage(msg)
	if err != nil {
		return fmt.Errorf("broadcast to agent %s: %w", o.key, err)
	}
	b, _ := json.Marshal(string(raw))
	return o.send("agent:broadcast", noticeBroadcast, json.RawMessage(b))
}

// WaitForApproval waits, in a step called name, for the agent's
// ApproveWorkflow or RejectWorkflow. A rejection is a *RejectedError; a
// timeout a *workflow.WaitTimeoutError.
func (o *Origin) WaitForApproval(name string, timeout time.Duration) (Approval, error) {
	ap, err := workflow.WaitForEvent[Approval](o.step, name, workflow.WaitOptions{Type: ApprovalEvent, Timeout: timeout})
	if err != nil {
		return ap, err
	}
	if !ap.Approved {
		return ap, &RejectedError{InstanceID: o.step.InstanceID(), Reason: ap.Reason}
	}
	return ap, nil
}

// send queues a notice for the agent in a step called name.
func (o *Origin) send(name, kind string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("%s for agent %s: %w", name, o.key, err)
	}
	payload, err := json.Marshal(notice{InstanceID: o.step.InstanceID(), Kind: kind, Data: raw})
	if err != nil {
		return err
	}
	_, err = workflow.Do(o.step, name, func(ctx context.Context, a workflow.Attempt) (struct{}, error) {
		rt := o.rt
		now := rt.clock.Now()
		s := &store.Schedule{ID: "wfn_" + ids.Random(), AgentKey: o.key, Method: noticeMethod, Payload: payload,
			Kind: store.ScheduleDelayed, IdempotencyKey: "wfn:" + a.IdempotencyKey, NextRunAt: now, CreatedAt: now}
		if _, _, err := rt.store.CreateSchedule(ctx, s); err != nil {
			return struct{}{}, err
		}
		rt.sched.Poke()
		return struct{}{}, nil
	})
	return err
}

// isNotice reports whether a schedule is one of the runtime's own.
func isNotice(method string) bool { return strings.HasPrefix(method, agentseam.MethodPrefix) }

// deliver hands a notice to its agent, holding the instance's lock. It
// sets *acked when the delivery deleted the notice itself, in the write
// that recorded what the agent was told (AckWorkflowNotice).
func (rt *Runtime) deliver(ctx context.Context, s *store.Schedule, acked *bool) error {
	if h := rt.host.Notice(s.Method); h != nil {
		c, err := rt.class(s.Class)
		if err != nil {
			return err
		}
		in, err := rt.acquire(ctx, c, s.Name)
		if err != nil {
			return err
		}
		defer rt.release(in)
		return in.run(ctx, func() error { return h(ctx, in.obj, *s) })
	}
	var n notice
	if err := json.Unmarshal(s.Payload, &n); err != nil || n.InstanceID == "" {
		if err == nil {
			err = errors.New("it names no instance")
		}
		return rt.malformed(s, &NoticeError{Kind: n.Kind, Err: fmt.Errorf("payload %s: %w", truncate(s.Payload), err)})
	}
	c, err := rt.class(s.Class)
	if err != nil {
		return err
	}
	in, err := rt.acquire(ctx, c, s.Name)
	if err != nil {
		return err
	}
	defer rt.release(in)
	var ack *pendingAck
	err = in.run(ctx, func() error { return in.deliver(ctx, s, n, &ack) })
	if err != nil && ack != nil {
		ack.done() // not written: the notice stays, to be told again
	}
	if ne, ok := errors.AsType[*NoticeError](err); ok {
		return rt.malformed(s, ne)
	}
	if err != nil || ack == nil {
		return err
	}
	// The acknowledgement, after the lock: the agent's next call need not
	// wait for its commit. A failure leaves the notice, and the retry or
	// the next claim tells the agent again.
	err = rt.store.AckWorkflowNotice(ctx, ack.NoticeAck, ack.now)
	ack.done()
	if err == nil {
		*acked = true
	}
	return err
}

// pendingAck is a notice's acknowledgement that a delivery left to be
// written after the agent's lock is released.
type pendingAck struct {
	store.NoticeAck
	now  time.Time
	done func() // ends its registration in the instance's acks
}

// malformed completes a NoticeError with the notice's id and agent and
// logs it at error level; the schedule runner reports it to the agent.
func (rt *Runtime) malformed(s *store.Schedule, ne *NoticeError) error {
	ne.Notice, ne.Agent = s.ID, s.AgentKey
	rt.log.Error("dropping a workflow notice whose payload does not decode",
		"notice", ne.Notice, "kind", ne.Kind, "agent", ne.Agent, "instance", ne.Instance, "err", ne.Err)
	return ne
}

// deliver applies a notice to the agent: the store's finish notice, which
// has no kind, or one of noticeKinds. A notice whose data does not decode
// is a *NoticeError, never half applied.
func (in *instance) deliver(ctx context.Context, s *store.Schedule, n notice, ack **pendingAck) error {
	if err := in.acks.wait(ctx, n.InstanceID); err != nil { // an earlier notice's
		return err
	}
	d := &delivery{ctx: ctx, in: in, s: s, ack: ack, n: n, now: in.rt.clock.Now()}
	if s.Method == store.WorkflowFinishedMethod {
		return d.finished()
	}
	apply, ok := noticeKinds[n.Kind]
	if !ok {
		return fmt.Errorf("notice of unknown kind %q from workflow %s", n.Kind, n.InstanceID)
	}
	return apply(d)
}

// noticeKinds applies each kind of notice a workflow sends through its
// Origin. A handler checks that the data decodes before it changes
// anything.
var noticeKinds = map[string]func(d *delivery) error{
	noticeProgress: (*delivery).progress,
	noticeComplete: func(d *delivery) error {
		return d.finish(store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusComplete}, d.n.Data)
	},
	noticeError:      (*delivery).failed,
	noticeEvent:      (*delivery).event,
	noticeSetState:   func(d *delivery) error { return d.in.obj.setStateJSON(d.ctx, d.n.Data) },
	noticeMergeState: func(d *delivery) error { return d.in.obj.mergeStateJSON(d.ctx, d.n.Data) },
	noticeResetState: func(d *delivery) error { return d.in.obj.resetState(d.ctx) },
	noticeBroadcast:  (*delivery).broadcast,
}

// delivery is one notice being applied to its agent.
type delivery struct {
	ctx context.Context
	in  *instance
	s   *store.Schedule // the notice's schedule
	ack **pendingAck    // set by record
	n   notice
	now time.Time
}

// malformed reports data of the notice that does not decode.
func (d *delivery) malformed(err error) error {
	return &NoticeError{Kind: d.n.Kind, Instance: d.n.InstanceID, Err: err}
}

// track updates the instance's tracking row; a nil row with no error when
// the agent deleted it, leaving nothing to tell.
func (d *delivery) track(u store.TrackingUpdate) (*store.AgentWorkflow, bool, error) {
	w, changed, err := d.in.rt.store.UpdateAgentWorkflow(d.ctx, d.in.key, d.n.InstanceID, u, d.now)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	return w, changed, err
}

// finished is the store's finish notice: Run returned, or the instance
// was terminated. One read gives both the instance's end and the tracking
// row (GetWorkflowOutcome).
func (d *delivery) finished() error {
	o, err := d.in.rt.store.GetWorkflowOutcome(d.ctx, d.in.key, d.n.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // removed by retention before the agent heard
	}
	if err != nil {
		return err
	}
	if !o.Status.Finished() {
		return nil // restarted since: a later finish tells
	}
	if o.Tracking == nil {
		return nil // the agent deleted its tracking row: nothing to tell
	}
	u := store.TrackingUpdate{Rule: store.TrackFinish, Status: o.Status,
		ErrorName: o.ErrorName, ErrorMessage: o.ErrorMessage}
	if o.Status == store.StatusTerminated { // no hook hears of it
		u.Rule = store.TrackSync
		return d.record(u)
	}
	return d.tell(o.Tracking, u, o.Output)
}

// finish tells the agent that the instance completed or failed, then
// records it in the tracking row (u is a TrackFinish). In that order: a
// crash between the two leaves the row unfinished and the notice pending,
// so the node that takes the agent over tells it again; the other order
// would lose the news for good, the row saying the agent knows. A hook's
// state writes and the row cannot be one write, so the hook hears at least
// once, and more than once only after a crash or a failed write between
// its return and the row's.
func (d *delivery) finish(u store.TrackingUpdate, output json.RawMessage) error {
	w, err := d.in.rt.store.GetAgentWorkflow(d.ctx, d.in.key, d.n.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the agent deleted its tracking row: nothing to tell
	}
	if err != nil {
		return err
	}
	return d.tell(w, u, output)
}

// tell is finish given the tracking row w as it was read.
func (d *delivery) tell(w *store.AgentWorkflow, u store.TrackingUpdate, output json.RawMessage) error {
	in := d.in
	switch w.Status {
	case store.StatusComplete, store.StatusErrored:
		return nil // a ReportComplete or ReportError before Run returned told it
	case store.StatusTerminated, store.StatusPaused:
		return nil // the rule leaves these alone, and tells nothing
	}
	told := *w
	told.Status, told.ErrorName, told.ErrorMessage = u.Status, u.ErrorName, u.ErrorMessage
	told.UpdatedAt, told.CompletedAt = d.now, d.now
	in.beginTelling(d.n.InstanceID)
	in.tellFinished(d.ctx, &told, output)
	if in.endTelling() {
		// The hook changed the workflow itself (restarted it, deleted its
		// row): the row is as that left it, and a restarted run's finish
		// tells anew.
		return nil
	}
	return d.record(u)
}

// record leaves the acknowledgement of the notice to be written once the
// agent's lock is released: u applied to the tracking row and, in the same
// write, the notice deleted while this node's claim of it holds
// (AckWorkflowNotice). Until that write ends, whatever reads or changes
// the row on the agent's behalf waits for it (acks).
func (d *delivery) record(u store.TrackingUpdate) error {
	*d.ack = &pendingAck{
		NoticeAck: store.NoticeAck{AgentKey: d.s.AgentKey, NoticeID: d.s.ID, Owner: d.in.rt.node,
			WorkflowID: d.n.InstanceID, Update: u},
		now:  d.now,
		done: d.in.acks.begin(d.n.InstanceID),
	}
	return nil
}

// progress is ReportProgress.
func (d *delivery) progress() error {
	w, _, err := d.track(store.TrackingUpdate{Rule: store.TrackProgress})
	if err != nil || w == nil {
		return err
	}
	if h, ok := d.in.obj.(WorkflowProgressHook); ok {
		h.OnWorkflowProgress(d.ctx, workflowInfo(w), d.n.Data)
	}
	return nil
}

// failed is ReportError.
func (d *delivery) failed() error {
	var msg string
	if err := json.Unmarshal(d.n.Data, &msg); err != nil {
		return d.malformed(fmt.Errorf("error message %s: %w", truncate(d.n.Data), err))
	}
	return d.finish(store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusErrored,
		ErrorName: "Error", ErrorMessage: msg}, nil)
}

// event is SendEvent.
func (d *delivery) event() error {
	var ev WorkflowEvent
	if err := json.Unmarshal(d.n.Data, &ev); err != nil {
		return d.malformed(fmt.Errorf("event %s: %w", truncate(d.n.Data), err))
	}
	w, err := d.in.rt.store.GetAgentWorkflow(d.ctx, d.in.key, d.n.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if h, ok := d.in.obj.(WorkflowEventHook); ok {
		h.OnWorkflowEvent(d.ctx, workflowInfo(w), ev)
	}
	return nil
}

// broadcast is Broadcast.
func (d *delivery) broadcast() error {
	var msg string
	if err := json.Unmarshal(d.n.Data, &msg); err != nil {
		return d.malformed(fmt.Errorf("broadcast %s: %w", truncate(d.n.Data), err))
	}
	d.in.broadcast([]byte(msg))
	return nil
}

// tellFinished calls the complete or error hook for a tracking row that
// is becoming complete or errored. A hook that panics is reported to the
// agent's error hook; the end is recorded all the same.
func (in *instance) tellFinished(ctx context.Context, w *store.AgentWorkflow, output json.RawMessage) {
	info := workflowInfo(w)
	err := in.guard(func() error {
		switch w.Status {
		case store.StatusComplete:
			if h, ok := in.obj.(WorkflowCompleteHook); ok {
				h.OnWorkflowComplete(ctx, info, output)
			}
		case store.StatusErrored:
			if h, ok := in.obj.(WorkflowErrorHook); ok {
				h.OnWorkflowError(ctx, info, &workflow.ErrorInfo{Name: w.ErrorName, Message: w.ErrorMessage})
			}
		}
		return nil
	})
	if err != nil {
		in.reportError(ctx, fmt.Errorf("workflow %s: hook: %w", w.WorkflowID, err))
	}
}
