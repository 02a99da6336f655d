package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/workflow"
)

// Planner starts Trip workflows and records what they tell it.
type Planner struct {
	agent.Agent[PlannerState]
}

type PlannerState struct {
	Stage string `json:"stage"`
	Seats int    `json:"seats"`
}

func (p *Planner) InitialState() PlannerState { return PlannerState{Stage: "idle"} }

// heard records hook calls per agent name.
var heard = struct {
	sync.Mutex
	m map[string][]string
}{m: map[string][]string{}}

func hear(name, s string) {
	heard.Lock()
	heard.m[name] = append(heard.m[name], s)
	heard.Unlock()
}

func heardBy(name string) []string {
	heard.Lock()
	defer heard.Unlock()
	return append([]string(nil), heard.m[name]...)
}

func (p *Planner) OnWorkflowProgress(ctx context.Context, wf agent.WorkflowInfo, progress json.RawMessage) {
	hear(p.Name(), fmt.Sprintf("progress %s %s", wf.Status, progress))
}

func (p *Planner) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	hear(p.Name(), fmt.Sprintf("complete %s", output))
}

func (p *Planner) OnWorkflowError(ctx context.Context, wf agent.WorkflowInfo, err *workflow.ErrorInfo) {
	hear(p.Name(), "error "+err.Message)
}

func (p *Planner) OnWorkflowEvent(ctx context.Context, wf agent.WorkflowInfo, ev agent.WorkflowEvent) {
	hear(p.Name(), fmt.Sprintf("event %s %s", ev.Type, ev.Payload))
}

// Seats is called by the workflow over RPC.
func (p *Planner) Seats(ctx context.Context) (int, error) { return p.State().Seats, nil }

type TripParams struct {
	To      string `json:"to"`
	Approve bool   `json:"approve"` // wait for approval
	Report  bool   `json:"report"`  // ReportComplete before returning
}

func registerTrip(eng *workflow.Engine, rt *agent.Runtime) {
	workflow.MustRegister(eng, "Trip", workflow.Func[TripParams, string](func(ctx context.Context, ev workflow.Event[TripParams], step *workflow.Step) (string, error) {
		o, err := agent.OriginOf(rt, step)
		if err != nil {
			return "", err
		}
		if err := o.ReportProgress(map[string]int{"percent": 10}); err != nil {
			return "", err
		}
		if err := o.MergeState(map[string]any{"stage": "booking"}); err != nil {
			return "", err
		}
		seats, err := o.Call("ask seats", "seats")
		if err != nil {
			return "", err
		}
		if err := o.SendEvent("seats", json.RawMessage(seats)); err != nil {
			return "", err
		}
		if ev.Payload.Approve {
			if _, err := o.WaitForApproval("approval", time.Hour); err != nil {
				return "", err
			}
		}
		out := "booked " + ev.Payload.To
		if ev.Payload.Report {
			if err := o.ReportComplete(out); err != nil {
				return "", err
			}
		}
		return out, o.Broadcast("done")
	}))
}

func plannerEnv(t *testing.T) *env {
	return newEnv(t, envOptions{
		setup: func(rt *agent.Runtime) {
			agent.MustRegister[Planner](rt, "Planner", agent.ClassOptions{})
			for name, b := range map[string]agent.Binding{
				"TRIP":   {Workflow: "Trip"},
				"REMOTE": {Workflow: "MyWorkflow", Service: "email-workflows"},
			} {
				if err := rt.Bind(name, b); err != nil {
					t.Fatal(err)
				}
			}
		},
		workflows: registerTrip,
	})
}

func withPlanner[R any](t *testing.T, e *env, name string, fn func(ctx context.Context, p *Planner) (R, error)) (R, error) {
	t.Helper()
	return agent.With(t.Context(), e.rt, name, fn)
}

func waitHeard(t *testing.T, name, want string) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%s to hear %q", name, want), func() bool {
		for _, h := range heardBy(name) {
			if h == want {
				return true
			}
		}
		return false
	})
}

func TestRunWorkflowEndToEnd(t *testing.T) {
	t.Parallel()
	e := plannerEnv(t)
	name := uniq("planner")
	if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (struct{}, error) {
		return struct{}{}, p.SetState(ctx, PlannerState{Stage: "idle", Seats: 2})
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		params TripParams
		hooks  []string
	}{
		{TripParams{To: "Oslo"}, []string{`progress running {"percent":10}`, `event seats 2`, `complete "booked Oslo"`}},
		{TripParams{To: "Rome", Report: true}, []string{`complete "booked Rome"`}},
	} {
		id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
			return p.RunWorkflow(ctx, "TRIP", tc.params, agent.RunOptions{Metadata: map[string]any{"to": tc.params.To}})
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, "wf_") {
			t.Errorf("generated id %q, want wf_…", id)
		}
		for _, h := range tc.hooks {
			waitHeard(t, name, h)
		}
		info, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) {
			return p.GetWorkflow(ctx, id)
		})
		if err != nil || info.Status != workflow.StatusComplete || info.Binding != "TRIP" || string(info.Metadata) != fmt.Sprintf(`{"to":%q}`, tc.params.To) {
			t.Errorf("tracking row = %+v, %v", info, err)
		}
		inst, err := e.store.GetInstance(t.Context(), id)
		if err != nil || inst.Origin != (store.AgentKey{Class: "Planner", Name: name}) {
			t.Errorf("instance origin = %+v, %v", inst, err)
		}
	}
	// The workflow merged its stage into the state.
	st, err := e.rt.Ref("Planner", name).State(t.Context())
	if err != nil || string(st) != `{"stage":"booking","seats":2}` {
		t.Errorf("state = %s, %v", st, err)
	}
	// Completion was told once per workflow, though Rome also reported it.
	time.Sleep(100 * time.Millisecond)
	n := 0
	for _, h := range heardBy(name) {
		if strings.HasPrefix(h, "complete") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("complete told %d times for 2 workflows: %v", n, heardBy(name))
	}
}

func TestWorkflowApproval(t *testing.T) {
	t.Parallel()
	e := plannerEnv(t)
	name := uniq("approver")
	run := func() string {
		id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
			return p.RunWorkflow(ctx, "TRIP", TripParams{To: "Lima", Approve: true})
		})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the wait for approval", func() bool {
			in, err := e.store.GetInstance(t.Context(), id)
			return err == nil && in.WaitingEvent == agent.ApprovalEvent
		})
		return id
	}
	yes, no := run(), run()
	if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (struct{}, error) {
		if err := p.ApproveWorkflow(ctx, yes, "fine", map[string]string{"by": "ops"}); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, p.RejectWorkflow(ctx, no, "too expensive")
	}); err != nil {
		t.Fatal(err)
	}
	waitHeard(t, name, `complete "booked Lima"`)
	waitHeard(t, name, "error workflow "+no+" was rejected: too expensive")
	st, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (workflow.InstanceStatus, error) {
		return p.GetWorkflowStatus(ctx, no)
	})
	if err != nil || st.Status != workflow.StatusErrored || st.Error == nil || st.Error.Name != "RejectedError" {
		t.Errorf("rejected workflow status = %+v, %v", st, err)
	}
}

func TestWorkflowBadInput(t *testing.T) {
	t.Parallel()
	e := plannerEnv(t)
	name := uniq("bad")
	id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
		return p.RunWorkflow(ctx, "TRIP", TripParams{To: "Nice", Approve: true}, agent.RunOptions{ID: "trip-1"})
	})
	if err != nil || id != "trip-1" {
		t.Fatalf("RunWorkflow with an id = %q, %v", id, err)
	}
	for _, tc := range []struct {
		name    string
		binding string
		params  any
		id      string
		want    error
		text    string
	}{
		{"unknown binding", "NOPE", TripParams{}, "", agent.ErrUnknownBinding, `"NOPE" (bound: REMOTE, TRIP)`},
		{"string params", "TRIP", "Paris", "", agent.ErrParamsNotObject, `"Paris"`},
		{"array params", "TRIP", []int{1}, "", agent.ErrParamsNotObject, "[1]"},
		{"null params", "TRIP", nil, "", agent.ErrParamsNotObject, "null"},
		{"duplicate id", "TRIP", TripParams{}, "trip-1", store.ErrDuplicateID, `"trip-1"`},
		{"invalid id", "TRIP", TripParams{}, "a b", workflow.ErrInvalidID, `"a b"`},
	} {
		_, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
			return p.RunWorkflow(ctx, tc.binding, tc.params, agent.RunOptions{ID: tc.id})
		})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: err = %v, want %v mentioning %s", tc.name, err, tc.want, tc.text)
		}
	}
	page, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowPage, error) {
		return p.GetWorkflows(ctx, agent.WorkflowQuery{})
	})
	if err != nil || len(page.Workflows) != 1 {
		t.Fatalf("tracked after bad input: %+v, %v; want only trip-1", page, err)
	}
	for _, op := range []struct {
		name string
		fn   func(ctx context.Context, p *Planner) error
	}{
		{"approve", func(ctx context.Context, p *Planner) error { return p.ApproveWorkflow(ctx, "nope", "", nil) }},
		{"event", func(ctx context.Context, p *Planner) error { return p.SendWorkflowEvent(ctx, "nope", "x", nil) }},
		{"terminate", func(ctx context.Context, p *Planner) error { return p.TerminateWorkflow(ctx, "nope") }},
		{"status", func(ctx context.Context, p *Planner) error { _, err := p.GetWorkflowStatus(ctx, "nope"); return err }},
		{"get", func(ctx context.Context, p *Planner) error { _, err := p.GetWorkflow(ctx, "nope"); return err }},
	} {
		_, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (struct{}, error) { return struct{}{}, op.fn(ctx, p) })
		if !errors.Is(err, agent.ErrNotTracked) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("%s of an untracked id: err = %v, want ErrNotTracked naming it", op.name, err)
		}
	}
	if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowPage, error) {
		return p.GetWorkflows(ctx, agent.WorkflowQuery{Cursor: "garbage!"})
	}); !errors.Is(err, agent.ErrInvalidCursor) || !strings.Contains(err.Error(), "garbage!") {
		t.Errorf("invalid cursor: err = %v", err)
	}
}

func TestWorkflowOfServiceWithNoWorkers(t *testing.T) {
	t.Parallel()
	e := plannerEnv(t)
	name := uniq("remote")
	id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
		return p.RunWorkflow(ctx, "REMOTE", map[string]string{"to": "a@example.com"})
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	info, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) {
		return p.GetWorkflow(ctx, id)
	})
	if err != nil || info.Status != workflow.StatusQueued || info.Service != "email-workflows" || !strings.Contains(info.Waiting, `"email-workflows"`) {
		t.Fatalf("remote workflow = %+v, %v; want queued and waiting for email-workflows", info, err)
	}
	inst, err := e.store.GetInstance(t.Context(), id)
	if err != nil || inst.Status != store.StatusQueued || inst.Service != "email-workflows" || inst.Workflow != "MyWorkflow" {
		t.Fatalf("instance = %+v, %v", inst, err)
	}
}

func TestWorkflowControlAndPaging(t *testing.T) {
	t.Parallel()
	e := plannerEnv(t)
	name := uniq("pager")
	var ids []string
	for i := range 7 {
		id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
			return p.RunWorkflow(ctx, "TRIP", TripParams{To: fmt.Sprint("city", i), Approve: true},
				agent.RunOptions{ID: fmt.Sprintf("%s-%d", name, i), Metadata: map[string]any{"odd": i%2 == 1, "n": i}})
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(time.Millisecond) // distinct creation times
	}
	ctl := func(what string, fn func(ctx context.Context, p *Planner) error) {
		t.Helper()
		if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (struct{}, error) { return struct{}{}, fn(ctx, p) }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, id := range ids {
		eventually(t, 10*time.Second, "waiting", func() bool {
			in, _ := e.store.GetInstance(t.Context(), id)
			return in != nil && in.WaitingEvent != ""
		})
	}
	ctl("terminate", func(ctx context.Context, p *Planner) error { return p.TerminateWorkflow(ctx, ids[0]) })
	ctl("pause", func(ctx context.Context, p *Planner) error { return p.PauseWorkflow(ctx, ids[1]) })
	info, _ := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) { return p.GetWorkflow(ctx, ids[0]) })
	if info.Status != workflow.StatusTerminated {
		t.Errorf("terminated workflow tracked as %s", info.Status)
	}
	ctl("resume", func(ctx context.Context, p *Planner) error { return p.ResumeWorkflow(ctx, ids[1]) })
	ctl("approve", func(ctx context.Context, p *Planner) error { return p.ApproveWorkflow(ctx, ids[1], "", nil) })
	waitHeard(t, name, `complete "booked city1"`)

	// Pages of 3, newest first.
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowPage, error) {
			return p.GetWorkflows(ctx, agent.WorkflowQuery{Limit: 3, Cursor: cursor})
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range page.Workflows {
			got = append(got, w.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
	}
	for i, id := range got {
		if want := ids[len(ids)-1-i]; id != want {
			t.Fatalf("page order %v, want newest first %v", got, ids)
		}
	}
	filtered, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowPage, error) {
		return p.GetWorkflows(ctx, agent.WorkflowQuery{Metadata: map[string]string{"odd": "true"}, Statuses: []workflow.Status{workflow.StatusWaiting, workflow.StatusRunning, workflow.StatusQueued}})
	})
	if err != nil || len(filtered.Workflows) != 2 { // 3 and 5 (1 completed)
		t.Errorf("odd unfinished workflows = %+v, %v; want 2", filtered.Workflows, err)
	}
	ok, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (bool, error) { return p.DeleteWorkflow(ctx, ids[0]) })
	if !ok || err != nil {
		t.Errorf("delete = %v, %v", ok, err)
	}
	if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) { return p.GetWorkflow(ctx, ids[0]) }); !errors.Is(err, agent.ErrNotTracked) {
		t.Errorf("deleted workflow: err = %v", err)
	}
}
