package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/telemetry"
	"agentflow/store"
	"agentflow/workflow"
)

// This file is the agent's side of agents ⇄ workflows (DESIGN §3.5):
// bindings, RunWorkflow, the tracking table and the control of tracked
// instances, and the delivery of what workflows report to their agent.

// Errors of agents ⇄ workflows. Match them with errors.Is.
var (
	// ErrUnknownBinding: no binding of that name is registered.
	ErrUnknownBinding = errors.New("unknown workflow binding")
	// ErrParamsNotObject: workflow params must be a JSON object.
	ErrParamsNotObject = errors.New("workflow params must be a JSON object")
	// ErrNotTracked: the agent did not start a workflow with that id (or
	// deleted its tracking row).
	ErrNotTracked = errors.New("workflow is not tracked by this agent")
	// ErrInvalidCursor: a GetWorkflows cursor that no page returned.
	ErrInvalidCursor = errors.New("invalid workflow cursor")
)

// Binding names a workflow class that agents start by the binding's name,
// as the original platform's wrangler bindings do:
//
//	rt.Bind("EMAIL_WORKFLOW", agent.Binding{Workflow: "MyWorkflow", Service: "email-workflows"})
type Binding struct {
	// Workflow is the workflow class name.
	Workflow string
	// Service is the service whose workers run the class; "" is this
	// runtime's engine's service, which must have the class registered.
	// With another service, instances are queued in the shared store for
	// that service's workers.
	Service string
}

// Bind registers a binding. Bind before Start.
func (rt *Runtime) Bind(name string, b Binding) error {
	if name == "" {
		return errors.New("agent: bind: binding name is empty")
	}
	if b.Workflow == "" {
		return fmt.Errorf("agent: bind %s: no workflow class given", name)
	}
	rt.classMu.Lock()
	defer rt.classMu.Unlock()
	if _, dup := rt.bindings[name]; dup {
		return fmt.Errorf("agent: bind %s: a binding of that name is already registered", name)
	}
	rt.bindings[name] = b
	return nil
}

func (rt *Runtime) binding(name string) (Binding, error) {
	rt.classMu.RLock()
	defer rt.classMu.RUnlock()
	b, ok := rt.bindings[name]
	if !ok {
		names := make([]string, 0, len(rt.bindings))
		for n := range rt.bindings {
			names = append(names, n)
		}
		slices.Sort(names)
		return Binding{}, fmt.Errorf("%w %q (bound: %s)", ErrUnknownBinding, name, strings.Join(names, ", "))
	}
	return b, nil
}

// RunOptions are options of RunWorkflow.
type RunOptions struct {
	// ID is the instance id; default a generated "wf_…" id.
	ID string
	// Metadata is stored on the tracking row as a JSON object, and can be
	// filtered on by GetWorkflows.
	Metadata map[string]any
}

// RunWorkflow starts an instance of the workflow class bound to binding
// with params (a JSON object) and returns its id. The instance records this
// agent as its origin, and the agent's tracking row is inserted in the same
// transaction as the instance. With the binding's service elsewhere, the
// instance waits in the store for that service's workers.
func (a *Agent[S]) RunWorkflow(ctx context.Context, binding string, params any, opts ...RunOptions) (_ string, err error) {
	var o RunOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	in := a.in
	rt := in.rt
	b, err := rt.binding(binding)
	if err != nil {
		return "", err
	}
	if rt.tel.Tracing() {
		// The span the instance's segments descend from, as for Engine.Create.
		var span trace.Span
		ctx, span = rt.tel.Start(ctx, "create_workflow "+b.Workflow, trace.WithAttributes(
			telemetry.KeyWorkflow.String(b.Workflow), telemetry.KeyAgentClass.String(in.key.Class), telemetry.KeyAgentName.String(in.key.Name)))
		defer func() { telemetry.End(span, err, "") }()
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return "", fmt.Errorf("run workflow %s: params: %w", binding, err)
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return "", fmt.Errorf("run workflow %s: params %s: %w", binding, truncate(raw), ErrParamsNotObject)
	}
	var meta []byte
	if o.Metadata != nil {
		if meta, err = json.Marshal(o.Metadata); err != nil {
			return "", fmt.Errorf("run workflow %s: metadata: %w", binding, err)
		}
	}
	row, err := rt.seam.Prepare(b.Workflow, b.Service, o.ID, raw, in.key)
	if err == nil {
		// The instance's segments descend from the calling span.
		row.TraceParent = telemetry.Traceparent(ctx)
	}
	if err != nil {
		return "", fmt.Errorf("run workflow %s: %w", binding, err)
	}
	track := &store.AgentWorkflow{AgentKey: in.key, WorkflowID: row.ID, Binding: binding,
		Workflow: row.Workflow, Service: row.Service, Status: store.StatusQueued, Metadata: meta,
		CreatedAt: row.CreatedAt, UpdatedAt: row.CreatedAt}
	// With a free slot here, the insert claims the instance too and it
	// starts at once, with no claim of its own (as Engine.Create's).
	claimed, inserted := rt.seam.Claim(row)
	err = rt.store.CreateTrackedInstance(ctx, row, track)
	inserted(err == nil)
	if err != nil {
		return "", fmt.Errorf("run workflow %s: %w", binding, err)
	}
	if !claimed {
		rt.engine.Wake()
	}
	return row.ID, nil
}

// WorkflowInfo is a tracked workflow as its agent knows it.
type WorkflowInfo struct {
	ID       string
	Binding  string
	Workflow string
	Service  string
	// Status is the status the agent last learned (GetWorkflowStatus
	// reads the instance's own and brings this up to date).
	Status       workflow.Status
	Metadata     json.RawMessage
	ErrorName    string
	ErrorMessage string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	CompletedAt  time.Time
	// Waiting, for a queued workflow of another service with no running
	// workers, says so; it is "" otherwise.
	Waiting string
}

func workflowInfo(w *store.AgentWorkflow) WorkflowInfo {
	return WorkflowInfo{ID: w.WorkflowID, Binding: w.Binding, Workflow: w.Workflow, Service: w.Service,
		Status: workflow.Status(w.Status), Metadata: w.Metadata, ErrorName: w.ErrorName, ErrorMessage: w.ErrorMessage,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, CompletedAt: w.CompletedAt}
}

// tracked returns the agent's tracking row for id or ErrNotTracked.
func (in *instance) tracked(ctx context.Context, id string) (*store.AgentWorkflow, error) {
	if err := in.acks.wait(ctx, id); err != nil {
		return nil, err
	}
	w, err := in.rt.store.GetAgentWorkflow(ctx, in.key, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("workflow %q of agent %s: %w", id, in.key, ErrNotTracked)
	}
	return w, err
}

// GetWorkflow returns a tracked workflow, or an error matching
// ErrNotTracked.
func (a *Agent[S]) GetWorkflow(ctx context.Context, id string) (WorkflowInfo, error) {
	w, err := a.in.tracked(ctx, id)
	if err != nil {
		return WorkflowInfo{}, err
	}
	infos := []WorkflowInfo{workflowInfo(w)}
	a.in.rt.noteWaiting(ctx, infos)
	return infos[0], nil
}

// WorkflowQuery selects tracked workflows. Zero fields match all.
type WorkflowQuery struct {
	Statuses []workflow.Status
	Workflow string
	// Metadata keeps workflows whose metadata has each key with that value
	// (strings, numbers and booleans, compared as their JSON text).
	Metadata map[string]string
	// Cursor continues from a previous page's NextCursor.
	Cursor string
	// Limit caps the page: default and at most 100.
	Limit int
}

// WorkflowPage is one page of GetWorkflows, newest first.
type WorkflowPage struct {
	Workflows []WorkflowInfo
	// NextCursor continues the listing; "" on the last page.
	NextCursor string
}

// GetWorkflows lists the agent's tracked workflows, newest first, a page at
// a time.
func (a *Agent[S]) GetWorkflows(ctx context.Context, q WorkflowQuery) (WorkflowPage, error) {
	limit := q.Limit
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	var statuses []store.Status
	for _, s := range q.Statuses {
		statuses = append(statuses, store.Status(s))
	}
	f := store.WorkflowFilter{Statuses: statuses, Workflow: q.Workflow, Metadata: q.Metadata, Limit: limit + 1}
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor)
		if err != nil {
			return WorkflowPage{}, err
		}
		f.After = &c
	}
	if err := a.in.acks.waitAll(ctx); err != nil {
		return WorkflowPage{}, err
	}
	rows, err := a.in.rt.store.ListAgentWorkflows(ctx, a.in.key, f)
	if err != nil {
		return WorkflowPage{}, err
	}
	var page WorkflowPage
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		page.NextCursor = encodeCursor(store.WorkflowCursor{CreatedAt: last.CreatedAt, WorkflowID: last.WorkflowID})
	}
	page.Workflows = make([]WorkflowInfo, len(rows))
	for i := range rows {
		page.Workflows[i] = workflowInfo(&rows[i])
	}
	a.in.rt.noteWaiting(ctx, page.Workflows)
	return page, nil
}

func encodeCursor(c store.WorkflowCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + ":" + c.WorkflowID))
}

func decodeCursor(s string) (store.WorkflowCursor, error) {
	bad := func(why string) (store.WorkflowCursor, error) {
		return store.WorkflowCursor{}, fmt.Errorf("%w %q: %s; pass a NextCursor a page returned", ErrInvalidCursor, s, why)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return bad("not base64url")
	}
	at, id, ok := strings.Cut(string(b), ":")
	us, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil || id == "" {
		return bad("not a page position")
	}
	return store.WorkflowCursor{CreatedAt: time.UnixMicro(us).UTC(), WorkflowID: id}, nil
}

// noteWaiting marks queued workflows of services with no running workers.
func (rt *Runtime) noteWaiting(ctx context.Context, ws []WorkflowInfo) {
	var services map[string]bool
	for i := range ws {
		w := &ws[i]
		if w.Status != workflow.StatusQueued {
			continue
		}
		if services == nil {
			nodes, err := rt.store.ListNodes(ctx)
			if err != nil {
				return
			}
			services = map[string]bool{}
			now := rt.clock.Now()
			for _, n := range nodes {
				if n.ExpiresAt.After(now) { // a node not yet reaped but lapsed runs nothing
					services[n.Service] = true
				}
			}
		}
		if !services[w.Service] {
			w.Waiting = fmt.Sprintf("no running workers of service %q: the instance stays queued until one starts", w.Service)
		}
	}
}

// GetWorkflowStatus reads the instance's status from the store and brings
// the tracking row up to date with it. A complete or errored instance's
// row is left to its finish notice while that is pending (the notice
// updates it and tells the hooks, once); nor is a row that ReportComplete
// or ReportError finished moved back while Run has not yet returned.
func (a *Agent[S]) GetWorkflowStatus(ctx context.Context, id string) (workflow.InstanceStatus, error) {
	in := a.in
	w, err := in.tracked(ctx, id)
	if err != nil {
		return workflow.InstanceStatus{Status: workflow.StatusUnknown}, err
	}
	inst, err := in.rt.engine.Get(ctx, id)
	if err != nil {
		return workflow.InstanceStatus{Status: workflow.StatusUnknown}, err
	}
	st, err := inst.Status(ctx)
	if err != nil {
		return st, err
	}
	if reported := w.Status == store.StatusComplete || w.Status == store.StatusErrored; reported && !st.Status.Finished() {
		return st, nil
	}
	return st, in.sync(ctx, id, st)
}

// sync sets a tracking row to the instance's status st. A complete or
// errored status is left to the finish notice while it is pending: Finish
// queued it in the same write, and it tells the complete or error hook only
// if the row was not finished already, so setting the row here first would
// keep the hook from ever being told.
func (in *instance) sync(ctx context.Context, id string, st workflow.InstanceStatus) error {
	if err := in.acks.wait(ctx, id); err != nil {
		return err
	}
	if st.Status == workflow.StatusComplete || st.Status == workflow.StatusErrored {
		_, err := in.rt.store.GetSchedule(ctx, in.key, store.FinishedNoticeID(id))
		if err == nil {
			return nil // the notice will tell
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	u := store.TrackingUpdate{Rule: store.TrackSync, Status: store.Status(st.Status)}
	if st.Error != nil {
		u.ErrorName, u.ErrorMessage = st.Error.Name, st.Error.Message
	}
	_, changed, err := in.rt.store.UpdateAgentWorkflow(ctx, in.key, id, u, in.rt.clock.Now())
	if changed {
		in.touch(id)
	}
	return err
}

// control runs op on a tracked instance and then syncs the tracking row.
func (in *instance) control(ctx context.Context, id, what string, op func(*workflow.Instance) error) error {
	if _, err := in.tracked(ctx, id); err != nil {
		return err
	}
	inst, err := in.rt.engine.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := op(inst); err != nil {
		return fmt.Errorf("%s workflow %s: %w", what, id, err)
	}
	in.touch(id)
	st, err := inst.Status(ctx)
	if err != nil {
		return err
	}
	return in.sync(ctx, id, st)
}

// SendWorkflowEvent sends an event to a tracked instance.
func (a *Agent[S]) SendWorkflowEvent(ctx context.Context, id, typ string, payload any) error {
	if _, err := a.in.tracked(ctx, id); err != nil {
		return err
	}
	inst, err := a.in.rt.engine.Get(ctx, id)
	if err != nil {
		return err
	}
	return inst.SendEvent(ctx, typ, payload)
}

// ApprovalEvent is the event type WaitForApproval waits for.
const ApprovalEvent = "agentflow:approval"

// Approval is what ApproveWorkflow and RejectWorkflow send.
type Approval struct {
	Approved bool            `json:"approved"`
	Reason   string          `json:"reason,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// ApproveWorkflow approves a tracked workflow waiting in WaitForApproval.
func (a *Agent[S]) ApproveWorkflow(ctx context.Context, id, reason string, metadata any) error {
	return a.sendApproval(ctx, id, true, reason, metadata)
}

// RejectWorkflow rejects a tracked workflow waiting in WaitForApproval,
// which then fails with a *RejectedError unless it handles it.
func (a *Agent[S]) RejectWorkflow(ctx context.Context, id, reason string) error {
	return a.sendApproval(ctx, id, false, reason, nil)
}

func (a *Agent[S]) sendApproval(ctx context.Context, id string, ok bool, reason string, metadata any) error {
	ap := Approval{Approved: ok, Reason: reason}
	if metadata != nil {
		raw, err := json.Marshal(metadata)
		if err != nil {
			return fmt.Errorf("approval of workflow %s: metadata: %w", id, err)
		}
		ap.Metadata = raw
	}
	return a.SendWorkflowEvent(ctx, id, ApprovalEvent, ap)
}

// PauseWorkflow pauses a tracked instance.
func (a *Agent[S]) PauseWorkflow(ctx context.Context, id string) error {
	return a.in.control(ctx, id, "pause", func(i *workflow.Instance) error { return i.Pause(ctx) })
}

// ResumeWorkflow resumes a paused tracked instance.
func (a *Agent[S]) ResumeWorkflow(ctx context.Context, id string) error {
	return a.in.control(ctx, id, "resume", func(i *workflow.Instance) error { return i.Resume(ctx) })
}

// TerminateWorkflow ends a tracked instance as terminated.
func (a *Agent[S]) TerminateWorkflow(ctx context.Context, id string) error {
	return a.in.control(ctx, id, "terminate", func(i *workflow.Instance) error { return i.Terminate(ctx) })
}

// RestartWorkflow runs a tracked instance again from the start.
func (a *Agent[S]) RestartWorkflow(ctx context.Context, id string) error {
	return a.in.control(ctx, id, "restart", func(i *workflow.Instance) error { return i.Restart(ctx) })
}

// DeleteWorkflow removes a workflow's tracking row and reports whether it
// existed. The instance itself is left to the engine's retention.
func (a *Agent[S]) DeleteWorkflow(ctx context.Context, id string) (bool, error) {
	a.in.touch(id)
	if err := a.in.acks.wait(ctx, id); err != nil {
		return false, err
	}
	return a.in.rt.store.DeleteAgentWorkflow(ctx, a.in.key, id)
}

// The hooks an agent class implements to hear from the workflows it
// started. Each runs holding the instance's lock, like a call.

// WorkflowProgressHook is told of a workflow's ReportProgress.
type WorkflowProgressHook interface {
	OnWorkflowProgress(ctx context.Context, wf WorkflowInfo, progress json.RawMessage)
}

// WorkflowCompleteHook is told once that a workflow completed: by its
// ReportComplete, or by Run returning. The runtime records that the agent
// was told only after the hook returns, so a process that dies in between
// (or a failed store write there) leaves the news pending, and the node
// that takes the agent over tells it again: the hook hears at least once,
// and twice only after such a failure. Key what it does by wf.ID when a
// second time must change nothing.
type WorkflowCompleteHook interface {
	OnWorkflowComplete(ctx context.Context, wf WorkflowInfo, output json.RawMessage)
}

// WorkflowErrorHook is told once that a workflow failed: by its
// ReportError, or by an error escaping Run; at least once after a crash,
// as WorkflowCompleteHook is.
type WorkflowErrorHook interface {
	OnWorkflowError(ctx context.Context, wf WorkflowInfo, err *workflow.ErrorInfo)
}

// WorkflowEventHook is told of an event a workflow sent its agent.
type WorkflowEventHook interface {
	OnWorkflowEvent(ctx context.Context, wf WorkflowInfo, ev WorkflowEvent)
}

// WorkflowEvent is an event a workflow sent its agent.
type WorkflowEvent struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}
