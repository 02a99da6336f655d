package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"agentflow/internal/ids"
	"agentflow/store"
)

// Route is one route of the API, as registered on the handler's mux and
// described in the OpenAPI document.
type Route struct {
	Method string
	Path   string // with {wildcards}, as in the OpenAPI document
	fn     apiFunc
}

// Routes lists the API's routes.
func Routes() []Route {
	rs := routes()
	for i := range rs {
		rs[i].fn = nil
	}
	return rs
}

func routes() []Route {
	p := APIPrefix
	return []Route{
		{"GET", p + "/openapi.json", (*handler).openAPIJSON},
		{"GET", p + "/openapi.yaml", (*handler).openAPIYAML},

		{"GET", p + "/workflows", (*handler).listWorkflows},
		{"POST", p + "/workflows", (*handler).createWorkflow},
		{"GET", p + "/workflow-counts", (*handler).countWorkflows},
		{"GET", p + "/workflows/{id}", (*handler).describeWorkflow},
		{"POST", p + "/workflows/{id}/events", (*handler).sendEvent},
		{"POST", p + "/workflows/{id}/pause", (*handler).pause},
		{"POST", p + "/workflows/{id}/resume", (*handler).resume},
		{"POST", p + "/workflows/{id}/terminate", (*handler).terminate},
		{"POST", p + "/workflows/{id}/restart", (*handler).restart},

		{"GET", p + "/agents", (*handler).listAgents},
		{"GET", p + "/agents/{class}/{name}", (*handler).describeAgent},
		{"GET", p + "/agents/{class}/{name}/schedules", (*handler).listSchedules},
		{"GET", p + "/agents/{class}/{name}/submissions", (*handler).listSubmissions},
		{"GET", p + "/agents/{class}/{name}/submissions/{id}", (*handler).describeSubmission},
		{"POST", p + "/agents/{class}/{name}/submissions/{id}/cancel", (*handler).cancelSubmission},
		{"GET", p + "/outbox", (*handler).listOutbox},
	}
}

// The engine's rules for what a create or a send-event names
// (workflow.CreateOptions.ID, WaitOptions.Type, class names).
var (
	idPattern        = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$`)
	eventTypePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$`)
)

const maxNameLen = 256

// ---- query parameters

// query reads a request's query parameters, refusing any the route does
// not take (a typo would otherwise be a filter silently not applied).
type query struct {
	v url.Values
}

func readQuery(r *http.Request, allowed ...string) (query, error) {
	v := r.URL.Query()
	for k := range v {
		if k != "token" && !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return query{}, invalidArg("unknown query parameter %q: this route takes none", k)
			}
			return query{}, invalidArg("unknown query parameter %q: this route takes %s", k, strings.Join(allowed, ", "))
		}
	}
	return query{v: v}, nil
}

// list returns a parameter given repeatedly or as a comma-separated list.
func (q query) list(name string) []string {
	var out []string
	for _, s := range q.v[name] {
		for part := range strings.SplitSeq(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

func (q query) limit(name string, max int) (int, error) {
	s := q.v.Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, invalidArg("query parameter %s=%q: must be an integer from 1 to %d", name, s, max)
	}
	return n, nil
}

// agentKey reads the {class} and {name} of an agent route.
func agentKey(r *http.Request) (store.AgentKey, error) {
	k := store.AgentKey{Class: r.PathValue("class"), Name: r.PathValue("name")}
	if len(k.Class) > maxNameLen || len(k.Name) > maxNameLen {
		return k, invalidArg("agent class and name must be at most %d bytes", maxNameLen)
	}
	return k, nil
}

// ---- workflows

func (h *handler) describeWorkflow(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	ctx := r.Context()
	in, err := h.st.GetInstance(ctx, id)
	if err != nil {
		return nil, instErr(err, id)
	}
	steps, err := h.st.ListSteps(ctx, id)
	if err != nil {
		return nil, instErr(err, id)
	}
	events, err := h.st.ListEvents(ctx, id)
	if err != nil {
		return nil, instErr(err, id)
	}
	attempts, err := h.attempts(r, id)
	if err != nil {
		return nil, instErr(err, id)
	}
	return timeline(in, steps, attempts, events), nil
}

func instErr(err error, id string) error {
	if ae := storeErr(err, "workflow instance "+strconv.Quote(id)); ae != nil {
		return ae
	}
	return err
}

func (h *handler) createWorkflow(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	var req CreateWorkflowRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	switch {
	case req.Workflow == "" || len(req.Workflow) > maxNameLen:
		return nil, invalidArg("field workflow: the class name must be 1 to %d characters, got %q", maxNameLen, req.Workflow)
	case len(req.Service) > maxNameLen:
		return nil, invalidArg("field service: must be at most %d characters", maxNameLen)
	case req.ID != "" && !idPattern.MatchString(req.ID):
		return nil, invalidArg("field id: %q must match %s", req.ID, idPattern)
	}
	params, err := payload("params", req.Params)
	if err != nil {
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = "wf_" + ids.Sortable(h.now())
	}
	now := h.now()
	in := &store.Instance{
		ID: id, Workflow: req.Workflow, Service: req.Service, Params: params,
		Status: store.StatusQueued, CreatedAt: now, UpdatedAt: now, WakeAt: now,
	}
	if err := h.st.CreateInstances(r.Context(), []*store.Instance{in}); err != nil {
		if errors.Is(err, store.ErrDuplicateID) {
			return nil, apiErr(http.StatusConflict, CodeAlreadyExists, "field id: workflow instance %q already exists", id)
		}
		return nil, err
	}
	got, err := h.st.GetInstance(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return withStatus{http.StatusCreated, workflowJSON(got, true)}, nil
}

// payload checks a JSON value of a request (params, an event payload):
// absent is null; it must be at most MaxPayloadBytes once compacted.
func payload(field string, raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, invalidArg("field %s: not valid JSON: %v", field, err)
	}
	if b.Len() > MaxPayloadBytes {
		return nil, apiErr(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
			"field %s: is %d bytes; the limit is %d bytes", field, b.Len(), MaxPayloadBytes)
	}
	return b.Bytes(), nil
}

func (h *handler) sendEvent(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	var req SendEventRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if !eventTypePattern.MatchString(req.Type) {
		return nil, invalidArg("field type: %q must match %s", req.Type, eventTypePattern)
	}
	p, err := payload("payload", req.Payload)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	if err := h.st.SendEvent(ctx, store.Event{InstanceID: id, Type: req.Type, Payload: p, CreatedAt: h.now()}); err != nil {
		return nil, instErr(err, id)
	}
	return h.workflowAfter(r, id)
}

// control runs one control operation on the instance {id} and answers
// the instance as it then is. A control that does not apply (pause a
// finished instance, resume one that is not paused) is 409 and changes
// nothing: the store refuses it whole.
func (h *handler) control(r *http.Request, op func(id string) error) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	if err := op(id); err != nil {
		return nil, instErr(err, id)
	}
	return h.workflowAfter(r, id)
}

func (h *handler) workflowAfter(r *http.Request, id string) (any, error) {
	in, err := h.st.GetInstance(r.Context(), id)
	if err != nil {
		return nil, instErr(err, id)
	}
	return workflowJSON(in, true), nil
}

func (h *handler) pause(r *http.Request) (any, error) {
	return h.control(r, func(id string) error {
		_, err := h.st.Pause(r.Context(), id, h.now())
		return err
	})
}

func (h *handler) resume(r *http.Request) (any, error) {
	return h.control(r, func(id string) error { return h.st.Resume(r.Context(), id, h.now()) })
}

func (h *handler) terminate(r *http.Request) (any, error) {
	return h.control(r, func(id string) error { return h.st.Terminate(r.Context(), id, h.now()) })
}

func (h *handler) restart(r *http.Request) (any, error) {
	return h.control(r, func(id string) error { return h.st.Restart(r.Context(), id, h.now()) })
}

// ---- agents

func agentErr(err error, k store.AgentKey) error {
	if ae := storeErr(err, "agent "+strconv.Quote(k.String())); ae != nil {
		return ae
	}
	return err
}

// agent returns the agent row of the route, or 404.
func (h *handler) agent(r *http.Request) (*store.Agent, error) {
	k, err := agentKey(r)
	if err != nil {
		return nil, err
	}
	a, err := h.st.GetAgent(r.Context(), k)
	if err != nil {
		return nil, agentErr(err, k)
	}
	return a, nil
}

func (h *handler) describeAgent(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	a, err := h.agent(r)
	if err != nil {
		return nil, err
	}
	ctx, k := r.Context(), a.AgentKey
	d := AgentDescription{Agent: agentJSON(a)}
	scheds, err := h.st.ListSchedules(ctx, k, store.ScheduleFilter{})
	if err != nil {
		return nil, agentErr(err, k)
	}
	d.Schedules = mapSlice(scheds, scheduleJSON)
	fibers, err := h.st.ListFibers(ctx, k, store.FiberFilter{})
	if err != nil {
		return nil, agentErr(err, k)
	}
	d.Fibers = mapSlice(fibers, fiberJSON)
	wfs, err := h.st.ListAgentWorkflows(ctx, k, store.WorkflowFilter{Limit: 100})
	if err != nil {
		return nil, agentErr(err, k)
	}
	d.Workflows = mapSlice(wfs, trackedJSON)
	subs, err := h.st.ListSubmissions(ctx, k, store.SubmissionFilter{})
	if err != nil {
		return nil, agentErr(err, k)
	}
	d.Submissions = mapSlice(subs, func(s *store.Submission) Submission { return submissionJSON(s, false) })
	conv, err := h.st.ListConversation(ctx, k)
	if err != nil {
		return nil, agentErr(err, k)
	}
	d.Conversation = mapSlice(conv, conversationJSON)
	return d, nil
}

func (h *handler) listSchedules(r *http.Request) (any, error) {
	q, err := readQuery(r, "kind")
	if err != nil {
		return nil, err
	}
	f := store.ScheduleFilter{Kind: store.ScheduleKind(q.v.Get("kind"))}
	switch f.Kind {
	case "", store.ScheduleDelayed, store.ScheduleScheduled, store.ScheduleCron, store.ScheduleInterval, store.ScheduleRecur:
	default:
		return nil, invalidArg("query parameter kind=%q: must be delayed, scheduled, cron, interval or recur", f.Kind)
	}
	a, err := h.agent(r)
	if err != nil {
		return nil, err
	}
	scheds, err := h.st.ListSchedules(r.Context(), a.AgentKey, f)
	if err != nil {
		return nil, agentErr(err, a.AgentKey)
	}
	return ScheduleList{Schedules: mapSlice(scheds, scheduleJSON)}, nil
}

var submissionStatuses = []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning,
	store.SubmissionCompleted, store.SubmissionAborted, store.SubmissionSkipped, store.SubmissionError}

func (h *handler) listSubmissions(r *http.Request) (any, error) {
	q, err := readQuery(r, "status", "limit")
	if err != nil {
		return nil, err
	}
	var f store.SubmissionFilter
	for _, s := range q.list("status") {
		if !slices.Contains(submissionStatuses, store.SubmissionStatus(s)) {
			return nil, invalidArg("query parameter status=%q: must be one of %s", s, joinStrings(submissionStatuses))
		}
		f.Statuses = append(f.Statuses, store.SubmissionStatus(s))
	}
	if f.Limit, err = q.limit("limit", 1000); err != nil {
		return nil, err
	}
	a, err := h.agent(r)
	if err != nil {
		return nil, err
	}
	subs, err := h.st.ListSubmissions(r.Context(), a.AgentKey, f)
	if err != nil {
		return nil, agentErr(err, a.AgentKey)
	}
	return SubmissionList{Submissions: mapSlice(subs, func(s *store.Submission) Submission { return submissionJSON(s, false) })}, nil
}

func submissionErr(err error, k store.AgentKey, id string) error {
	if ae := storeErr(err, "submission "+strconv.Quote(id)+" of agent "+strconv.Quote(k.String())); ae != nil {
		return ae
	}
	return err
}

func (h *handler) describeSubmission(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	k, err := agentKey(r)
	if err != nil {
		return nil, err
	}
	id, ctx := r.PathValue("id"), r.Context()
	s, err := h.st.GetSubmission(ctx, k, id)
	if err != nil {
		return nil, submissionErr(err, k, id)
	}
	out, err := h.st.GetOutbox(ctx, k, id)
	if err != nil {
		return nil, submissionErr(err, k, id)
	}
	return SubmissionDescription{Submission: submissionJSON(s, true), Outbox: mapSlice(out, outboxJSON)}, nil
}

func (h *handler) cancelSubmission(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	k, err := agentKey(r)
	if err != nil {
		return nil, err
	}
	id, ctx := r.PathValue("id"), r.Context()
	// The store aborts a pending submission and leaves any other alone;
	// look first, so that a cancel that cannot apply is answered 409.
	s, err := h.st.GetSubmission(ctx, k, id)
	if err != nil {
		return nil, submissionErr(err, k, id)
	}
	if s.Status == store.SubmissionRunning && h.cancel != nil {
		return h.cancelRunning(ctx, k, id)
	}
	if s.Status != store.SubmissionPending {
		return nil, cancelRefused(k, id, s.Status)
	}
	prev, err := h.st.CancelSubmission(ctx, k, id, h.now())
	if err != nil {
		return nil, submissionErr(err, k, id)
	}
	if prev != store.SubmissionPending { // it started (or ended) since
		return nil, cancelRefused(k, id, prev)
	}
	if s, err = h.st.GetSubmission(ctx, k, id); err != nil {
		return nil, submissionErr(err, k, id)
	}
	return CancelResult{PreviousStatus: string(prev), Submission: submissionJSON(s, false)}, nil
}

// cancelRunning cancels a running submission's turn through
// Options.CancelRunning, then waits a moment for the turn to record its
// end, so that the answer shows it aborted (or, should it end first
// another way, how it ended).
func (h *handler) cancelRunning(ctx context.Context, k store.AgentKey, id string) (any, error) {
	if err := h.cancel(ctx, k, id); err != nil {
		return nil, fmt.Errorf("cancel running submission %q of agent %q: %w", id, k.String(), err)
	}
	wait, stop := context.WithTimeout(ctx, cancelSettle)
	defer stop()
	for {
		s, err := h.st.GetSubmission(ctx, k, id)
		if err != nil {
			return nil, submissionErr(err, k, id)
		}
		if s.Status != store.SubmissionRunning || wait.Err() != nil {
			return CancelResult{PreviousStatus: string(store.SubmissionRunning), Submission: submissionJSON(s, false)}, nil
		}
		select {
		case <-wait.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cancelSettle bounds how long a cancel of a running submission waits for
// the turn to record its end before answering with what the store holds.
const cancelSettle = 2 * time.Second

func cancelRefused(k store.AgentKey, id string, st store.SubmissionStatus) *Error {
	if st == store.SubmissionRunning {
		return apiErr(http.StatusConflict, CodeFailedPrecondition,
			"submission %q of agent %q is running: this server cannot reach the agent's turn (no agent runtime; see admin.Options.CancelRunning), only a pending one can be cancelled here", id, k.String())
	}
	return apiErr(http.StatusConflict, CodeFailedPrecondition, "submission %q of agent %q has finished (%s)", id, k.String(), st)
}

func joinStrings[S ~string](ss []S) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ", ")
}
