// Package flights is the first seed document end to end (DESIGN §3.5): an
// agent that, on an HTTP request, schedules one of its methods for 300 s
// later; that method starts a flight workflow and schedules a
// "*/5 * * * *" cron that checks the workflow's status and cancels itself
// once the workflow has ended. When the flight is booked the agent starts
// the email workflow, a class of another service ("email-workflows",
// package flights/email) that shares the store.
//
// The bindings are the seed's:
//
//	MY_WORKFLOW    -> class MyWorkflow (this service)
//	EMAIL_WORKFLOW -> class MyWorkflow in service email-workflows
package flights

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"agentflow/agent"
	"agentflow/examples/flights/email"
	"agentflow/store"
	"agentflow/workflow"
)

// Names of the example's class, workflows and bindings.
const (
	AgentClass     = "MyAgent"
	FlightWorkflow = "MyWorkflow"
	FlightBinding  = "MY_WORKFLOW"
	EmailBinding   = "EMAIL_WORKFLOW"
)

// FlightRequest is what the agent schedules and the flight workflow books.
type FlightRequest struct {
	ID     string `json:"id"` // the user
	Flight string `json:"flight"`
	Date   string `json:"date"`
}

// StatusCheck is the payload of the status-checking cron.
type StatusCheck struct {
	ID string `json:"id"` // the workflow instance
}

// Booking is the flight workflow's output.
type Booking struct {
	Confirmation string `json:"confirmation"`
	Seat         string `json:"seat"`
}

// State is MyAgent's state.
type State struct {
	// Workflows maps each flight workflow to its last known status.
	Workflows map[string]string `json:"workflows"`
	// Emails counts the email workflows started.
	Emails int `json:"emails"`
	// Checks counts the status checks the cron made.
	Checks int `json:"checks"`
}

// Options configure the example.
type Options struct {
	// Delay is how long after the request the flight workflow starts;
	// default 300 s, as in the seed.
	Delay time.Duration
	// CheckInWait is how long the flight workflow sleeps before checking
	// in; default 20 minutes.
	CheckInWait time.Duration
	// Observe, when set, is told each thing the agent does, as a line of
	// text naming the agent instance (the binaries and `agentflow dev`
	// print them). It runs holding the instance's lock: it must not block.
	Observe func(agent, line string)
}

// Register registers MyAgent, the flight workflow and both bindings: the
// agent service's half of the example.
func Register(eng *workflow.Engine, rt *agent.Runtime, o Options) error {
	if o.Delay <= 0 {
		o.Delay = 300 * time.Second
	}
	if o.CheckInWait <= 0 {
		o.CheckInWait = 20 * time.Minute
	}
	if err := agent.Register[MyAgent](rt, AgentClass, agent.ClassOptions{}, func(a *MyAgent) { a.delay, a.observe = o.Delay, o.Observe }); err != nil {
		return err
	}
	if err := workflow.Register(eng, FlightWorkflow, workflow.Workflow[FlightRequest, Booking](Flight{rt: rt, checkInWait: o.CheckInWait})); err != nil {
		return err
	}
	if err := rt.Bind(FlightBinding, agent.Binding{Workflow: FlightWorkflow}); err != nil {
		return err
	}
	return rt.Bind(EmailBinding, agent.Binding{Workflow: email.Workflow, Service: email.Service})
}

// MyAgent is the seed's agent.
type MyAgent struct {
	agent.Agent[State]
	delay   time.Duration            // Options.Delay
	observe func(agent, line string) // Options.Observe
}

// InitialState gives an empty workflow map.
func (a *MyAgent) InitialState() State { return State{Workflows: map[string]string{}} }

// OnRequest serves the agent's HTTP requests. A POST to the instance's own
// path (/agents/my-agent/<name>) schedules the flight workflow for the user
// named by the user-id header, as the seed does, and answers
// {"taskId": <the schedule's id>}; another method there answers 405. GET
// <path>/state answers the agent's state and its tracked workflows (a
// StateView).
func (a *MyAgent) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	switch rest := agent.Rest(r); rest {
	case "":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, r.Method+" not allowed: POST a flight request (GET "+r.URL.Path+"/state shows the agent)", http.StatusMethodNotAllowed)
			return
		}
	case "/state":
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		view, err := a.view(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, view)
		return
	default:
		http.Error(w, fmt.Sprintf("not found: %s (the agent serves its own path and /state below it)", rest), http.StatusNotFound)
		return
	}
	userID := r.Header.Get("user-id")
	if userID == "" {
		http.Error(w, "the user-id header is required", http.StatusBadRequest)
		return
	}
	req := FlightRequest{ID: userID, Flight: "DL264", Date: "2025-02-23"}
	s, err := a.Schedule(ctx, agent.After(a.delay), "startWorkflow", req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	a.tell("request from %s: flight %s on %s starts in %s (task %s)", userID, req.Flight, req.Date, a.delay, s.ID)
	writeJSON(w, map[string]string{"taskId": s.ID})
}

// StateView is what GET /agents/my-agent/<name>/state answers.
type StateView struct {
	State     State         `json:"state"`
	Workflows []TrackedView `json:"workflows"` // newest first
}

// TrackedView is one tracked workflow in a StateView.
type TrackedView struct {
	ID       string `json:"id"`
	Binding  string `json:"binding"`
	Workflow string `json:"workflow"`
	Service  string `json:"service"`
	Status   string `json:"status"`
	// Waiting says that no worker of the workflow's service is running.
	Waiting string `json:"waiting,omitempty"`
}

func (a *MyAgent) view(ctx context.Context) (StateView, error) {
	v := StateView{State: a.State(), Workflows: []TrackedView{}}
	page, err := a.GetWorkflows(ctx, agent.WorkflowQuery{})
	if err != nil {
		return v, err
	}
	for _, wf := range page.Workflows {
		v.Workflows = append(v.Workflows, TrackedView{ID: wf.ID, Binding: wf.Binding, Workflow: wf.Workflow,
			Service: wf.Service, Status: string(wf.Status), Waiting: wf.Waiting})
	}
	return v, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// tell hands a line to Options.Observe.
func (a *MyAgent) tell(format string, args ...any) {
	if a.observe != nil {
		a.observe(a.Name(), fmt.Sprintf(format, args...))
	}
}

// StartWorkflow starts the flight workflow and a cron that checks on it
// every five minutes (the seed's runWorkflow; that name is the base's).
func (a *MyAgent) StartWorkflow(ctx context.Context, req FlightRequest) error {
	// The workflow's id comes from the schedule's, so a retry of this
	// method after a later step failed finds the flight already started
	// rather than booking a second one.
	o := agent.RunOptions{Metadata: map[string]any{"user": req.ID, "flight": req.Flight}}
	if s, ok := agent.ScheduleFromContext(ctx); ok {
		o.ID = "flight_" + s.ID
	}
	id, err := a.RunWorkflow(ctx, FlightBinding, req, o)
	if errors.Is(err, store.ErrDuplicateID) {
		id, err = o.ID, nil
	}
	if err != nil {
		return err
	}
	if err := a.note(ctx, func(s *State) { s.Workflows[id] = "queued" }); err != nil {
		return err
	}
	a.tell("started flight workflow %s for %s", id, req.ID)
	_, err = a.Schedule(ctx, agent.Cron("*/5 * * * *"), "checkWorkflowStatus", StatusCheck{ID: id})
	return err
}

// CheckWorkflowStatus records the workflow's status and cancels its own
// schedule once the workflow has ended.
func (a *MyAgent) CheckWorkflowStatus(ctx context.Context, c StatusCheck) error {
	st, err := a.GetWorkflowStatus(ctx, c.ID)
	if err != nil {
		return err
	}
	if err := a.note(ctx, func(s *State) { s.Workflows[c.ID] = string(st.Status); s.Checks++ }); err != nil {
		return err
	}
	if !st.Status.Finished() {
		a.tell("status check %d: workflow %s is %s", a.State().Checks, c.ID, st.Status)
		return nil
	}
	if s, ok := agent.ScheduleFromContext(ctx); ok {
		if _, err := a.CancelSchedule(ctx, s.ID); err != nil {
			return err
		}
		a.tell("status check %d: workflow %s is %s; the check cancelled itself", a.State().Checks, c.ID, st.Status)
	}
	return nil
}

// OnWorkflowProgress hears the flight workflow's progress reports.
func (a *MyAgent) OnWorkflowProgress(ctx context.Context, wf agent.WorkflowInfo, progress json.RawMessage) {
	a.tell("progress of %s (%s): %s", wf.ID, wf.Status, progress)
}

// OnWorkflowComplete emails the traveller once the flight is booked, through
// the other service's workflow.
func (a *MyAgent) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	if wf.Binding != FlightBinding {
		a.tell("%s workflow %s (service %s) complete: %s", wf.Binding, wf.ID, wf.Service, output)
		return
	}
	var b Booking
	if err := json.Unmarshal(output, &b); err != nil {
		a.Logger().Error("flight workflow output", "err", err)
		return
	}
	var meta struct {
		User string `json:"user"`
	}
	_ = json.Unmarshal(wf.Metadata, &meta)
	msg := email.Message{To: meta.User, Subject: "You are booked on DL264",
		Body: fmt.Sprintf("Confirmation %s, seat %s.", b.Confirmation, b.Seat)}
	if _, err := a.RunWorkflow(ctx, EmailBinding, msg, agent.RunOptions{ID: "email-" + wf.ID}); err != nil {
		a.Logger().Error("starting the email workflow", "err", err)
		return
	}
	if err := a.note(ctx, func(s *State) { s.Workflows[wf.ID] = "complete"; s.Emails++ }); err != nil {
		a.Logger().Error("recording the booking", "err", err)
	}
	a.tell("flight %s complete: confirmation %s, seat %s; emailing %s through %s (email-%s)", wf.ID, b.Confirmation, b.Seat, meta.User, EmailBinding, wf.ID)
}

// OnWorkflowError logs a workflow that failed.
func (a *MyAgent) OnWorkflowError(ctx context.Context, wf agent.WorkflowInfo, err *workflow.ErrorInfo) {
	a.tell("%s workflow %s failed: %s: %s", wf.Binding, wf.ID, err.Name, err.Message)
}

func (a *MyAgent) note(ctx context.Context, change func(*State)) error {
	s := a.State()
	next := State{Workflows: make(map[string]string, len(s.Workflows)+1), Emails: s.Emails, Checks: s.Checks}
	for k, v := range s.Workflows {
		next.Workflows[k] = v
	}
	change(&next)
	return a.SetState(ctx, next)
}

// Flight is the flight workflow (MY_WORKFLOW): book, tell the agent, wait
// for check-in to open, check in.
type Flight struct {
	rt          *agent.Runtime
	checkInWait time.Duration
}

// Run implements workflow.Workflow.
func (f Flight) Run(ctx context.Context, ev workflow.Event[FlightRequest], step *workflow.Step) (Booking, error) {
	o, err := agent.OriginOf(f.rt, step)
	if err != nil {
		return Booking{}, err
	}
	conf, err := workflow.Do(step, "book", func(ctx context.Context, a workflow.Attempt) (string, error) {
		// The idempotency key makes the booking safe to retry.
		return fmt.Sprintf("%s-%s-%x", ev.Payload.Flight, ev.Payload.Date, fnv(a.IdempotencyKey)), nil
	})
	if err != nil {
		return Booking{}, err
	}
	if err := o.ReportProgress(map[string]string{"stage": "booked", "confirmation": conf}); err != nil {
		return Booking{}, err
	}
	if err := step.Sleep("wait for check-in", f.checkInWait); err != nil {
		return Booking{}, err
	}
	seat, err := workflow.Do(step, "check in", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return "14C", nil
	})
	if err != nil {
		return Booking{}, err
	}
	return Booking{Confirmation: conf, Seat: seat}, nil
}

func fnv(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}
