package agent_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/workflow"
)

// GetWorkflowStatus must not keep the complete hook from being told: here
// the instance completes in another service's engine, whose finish notice
// the runtime only sees at its next poll, and the agent asks for the status
// before that.
func TestWorkflowStatusBeforeFinishNotice(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	e := newEnv(t, envOptions{clock: clock, setup: func(rt *agent.Runtime) {
		agent.MustRegister[Planner](rt, "Planner", agent.ClassOptions{})
		if err := rt.Bind("REMOTE", agent.Binding{Workflow: "MyWorkflow", Service: "email-workflows"}); err != nil {
			t.Fatal(err)
		}
	}})
	other, err := workflow.NewEngine(workflow.Options{Store: e.store, Clock: clock, Service: "email-workflows", Logger: procLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(other, "MyWorkflow", workflow.Func[map[string]string, string](func(ctx context.Context, ev workflow.Event[map[string]string], step *workflow.Step) (string, error) {
		return "sent to " + ev.Payload["to"], nil
	}))
	if err := other.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := other.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	name := uniq("early-status")
	id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
		return p.RunWorkflow(ctx, "REMOTE", map[string]string{"to": "ada"})
	})
	if err != nil {
		t.Fatal(err)
	}
	other.Wake()
	eventually(t, 5*time.Second, "the remote instance to complete", func() bool {
		in, err := e.store.GetInstance(t.Context(), id)
		return err == nil && in.Status == store.StatusComplete
	})
	st, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (workflow.InstanceStatus, error) {
		return p.GetWorkflowStatus(ctx, id)
	})
	if err != nil || st.Status != workflow.StatusComplete {
		t.Fatalf("status = %+v, %v; want complete", st, err)
	}
	// The runtime polls on the virtual clock.
	advanceUntil(t, clock, 500*time.Millisecond, "the complete hook", func() bool {
		return count(heardBy(name), `complete "sent to ada"`) == 1
	})
	info, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) { return p.GetWorkflow(ctx, id) })
	if err != nil || info.Status != workflow.StatusComplete {
		t.Errorf("tracked = %+v, %v; want complete", info, err)
	}
}

// A workflow that reported completion and has not returned yet stays
// complete for its agent when the agent asks for its status, and the
// complete hook is told once when Run returns.
func TestWorkflowStatusAfterReportComplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		setup: func(rt *agent.Runtime) {
			agent.MustRegister[Planner](rt, "Planner", agent.ClassOptions{})
			if err := rt.Bind("EARLY", agent.Binding{Workflow: "Early"}); err != nil {
				t.Fatal(err)
			}
		},
		workflows: func(eng *workflow.Engine, rt *agent.Runtime) {
			workflow.MustRegister(eng, "Early", workflow.Func[map[string]string, string](func(ctx context.Context, ev workflow.Event[map[string]string], step *workflow.Step) (string, error) {
				o, err := agent.OriginOf(rt, step)
				if err != nil {
					return "", err
				}
				if err := o.ReportComplete("early"); err != nil {
					return "", err
				}
				if _, err := workflow.WaitForEvent[json.RawMessage](step, "linger", workflow.WaitOptions{Type: "go", Timeout: time.Hour}); err != nil {
					return "", err
				}
				return "late", nil
			}))
		},
	})
	name := uniq("reported")
	id, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (string, error) {
		return p.RunWorkflow(ctx, "EARLY", map[string]string{})
	})
	if err != nil {
		t.Fatal(err)
	}
	waitHeard(t, name, `complete "early"`)
	eventually(t, 5*time.Second, "the wait", func() bool {
		in, err := e.store.GetInstance(t.Context(), id)
		return err == nil && in.WaitingEvent == "go"
	})
	st, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (workflow.InstanceStatus, error) {
		return p.GetWorkflowStatus(ctx, id)
	})
	if err != nil || st.Status != workflow.StatusWaiting {
		t.Fatalf("status = %+v, %v; want waiting", st, err)
	}
	info, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (agent.WorkflowInfo, error) { return p.GetWorkflow(ctx, id) })
	if err != nil || info.Status != workflow.StatusComplete {
		t.Fatalf("tracked after the status read = %+v, %v; want still complete", info, err)
	}
	if _, err := withPlanner(t, e, name, func(ctx context.Context, p *Planner) (struct{}, error) {
		return struct{}{}, p.SendWorkflowEvent(ctx, id, "go", nil)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the instance to finish", func() bool {
		in, err := e.store.GetInstance(t.Context(), id)
		return err == nil && in.Status == store.StatusComplete
	})
	eventually(t, 5*time.Second, "the finish notice", func() bool {
		ss, err := e.store.ListSchedules(t.Context(), store.AgentKey{Class: "Planner", Name: name}, store.ScheduleFilter{})
		return err == nil && len(ss) == 0
	})
	n := 0
	for _, h := range heardBy(name) {
		if strings.HasPrefix(h, "complete") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("complete told %d times, want once: %v", n, heardBy(name))
	}
}
