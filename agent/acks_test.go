package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/workflow"
)

// Teller starts workflows and signals each completion its hook hears of.
type Teller struct {
	agent.Agent[struct{}]
	told chan string
}

func (tl *Teller) Start(ctx context.Context, _ int) (string, error) {
	return tl.RunWorkflow(ctx, "QUICK", struct{}{})
}

func (tl *Teller) OnWorkflowComplete(_ context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	tl.told <- wf.ID
}

// The record of a completion is written after the hook has released the
// agent, but a call that comes right after the hook still finds the
// tracking row complete, by id and in a listing: it waits for that write.
func TestCallAfterCompleteHookSeesItRecorded(t *testing.T) {
	t.Parallel()
	told := make(chan string, 1)
	e := newEnv(t, envOptions{
		setup: func(rt *agent.Runtime) {
			agent.MustRegister[Teller](rt, "Teller", agent.ClassOptions{}, func(tl *Teller) { tl.told = told })
		},
		workflows: func(eng *workflow.Engine, rt *agent.Runtime) {
			workflow.MustRegister(eng, "Quick", workflow.Func[struct{}, string](
				func(context.Context, workflow.Event[struct{}], *workflow.Step) (string, error) { return "ok", nil }))
			if err := rt.Bind("QUICK", agent.Binding{Workflow: "Quick"}); err != nil {
				t.Fatal(err)
			}
		}})
	ctx := t.Context()
	for i := range 20 {
		id, err := agent.Call(ctx, e.rt, "t", (*Teller).Start, 0)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-told:
			if got != id {
				t.Fatalf("run %d: the hook heard of %s, want %s", i, got, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: the complete hook was not called", i)
		}
		type seen struct {
			one, listed workflow.Status
		}
		got, err := agent.With(ctx, e.rt, "t", func(ctx context.Context, tl *Teller) (seen, error) {
			wf, err := tl.GetWorkflow(ctx, id)
			if err != nil {
				return seen{}, err
			}
			page, err := tl.GetWorkflows(ctx, agent.WorkflowQuery{Limit: 1})
			if err != nil {
				return seen{}, err
			}
			if len(page.Workflows) != 1 || page.Workflows[0].ID != id {
				t.Errorf("run %d: the newest workflow listed is not %s: %+v", i, id, page.Workflows)
				return seen{one: wf.Status}, nil
			}
			return seen{one: wf.Status, listed: page.Workflows[0].Status}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.one != workflow.StatusComplete || got.listed != workflow.StatusComplete {
			t.Fatalf("run %d: right after the hook, GetWorkflow says %s and GetWorkflows %s; want complete", i, got.one, got.listed)
		}
	}
	key := store.AgentKey{Class: "Teller", Name: "t"}
	eventually(t, 10*time.Second, "the notices to be gone", func() bool {
		ss, err := e.store.ListSchedules(ctx, key, store.ScheduleFilter{})
		return err == nil && len(ss) == 0
	})
}
