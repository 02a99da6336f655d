package agent_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

type hearerState struct {
	Heard []string `json:"heard"`
}

// Hearer starts workflows and records, in its state, each completion it
// hears of. Its hook may be made to hang, as in a process that dies in it.
type Hearer struct {
	agent.Agent[hearerState]
	hang    chan struct{} // closed to let a hanging hook go on; nil: no hang
	entered func()        // called when the hook starts hanging
}

func (h *Hearer) Start(ctx context.Context, _ int) (string, error) {
	return h.RunWorkflow(ctx, "QUICK", struct{}{})
}

func (h *Hearer) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	if h.hang != nil {
		h.entered()
		<-h.hang
	}
	s := h.State()
	s.Heard = append(slices.Clone(s.Heard), wf.ID)
	_ = h.SetState(ctx, s) // fails in the node that lost the agent
}

// A node that dies after its runtime has claimed a workflow's finish
// notice, in the agent's complete hook before the hook's state write, must
// not leave the agent never knowing: the node that takes the agent over
// tells it. (The runtime used to record the tracking row as complete before
// calling the hook, so the redelivered notice found the row finished and
// told nobody.)
func TestFinishNoticeSurvivesDeathInHook(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "agents.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	quick := func(eng *workflow.Engine, rt *agent.Runtime) {
		workflow.MustRegister(eng, "Quick", workflow.Func[struct{}, string](
			func(context.Context, workflow.Event[struct{}], *workflow.Step) (string, error) { return "ok", nil }))
		if err := rt.Bind("QUICK", agent.Binding{Workflow: "Quick"}); err != nil {
			t.Fatal(err)
		}
	}
	hang := make(chan struct{})
	entered := make(chan struct{})
	var once sync.Once
	// Node 1: its hook hangs, as if its process had died there.
	a := newEnv(t, envOptions{store: st, workflows: quick, setup: func(rt *agent.Runtime) {
		agent.MustRegister[Hearer](rt, "Hearer", agent.ClassOptions{}, func(h *Hearer) {
			h.hang, h.entered = hang, func() { once.Do(func() { close(entered) }) }
		})
	}})
	t.Cleanup(func() { // before a's runtime stops, which waits for the hook
		select {
		case <-hang:
		default:
			close(hang)
		}
	})
	id, err := agent.Call(ctx, a.rt, "h", (*Hearer).Start, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the complete hook was not called on node 1")
	}
	// Node 1 dies: its node row goes, as when a node reaps it.
	if err := a.eng.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Node 2 takes the agent over, with the notice still pending.
	b := newEnv(t, envOptions{store: st, workflows: quick, rt: agent.Options{PollInterval: 20 * time.Millisecond},
		setup: func(rt *agent.Runtime) { agent.MustRegister[Hearer](rt, "Hearer", agent.ClassOptions{}) }})
	key := store.AgentKey{Class: "Hearer", Name: "h"}
	heard := func() []string {
		row, err := st.GetAgent(ctx, key)
		if err != nil {
			return nil
		}
		var s hearerState
		_ = json.Unmarshal(row.State, &s)
		return s.Heard
	}
	eventually(t, 10*time.Second, "node 2 to tell the agent that its workflow completed", func() bool {
		return slices.Equal(heard(), []string{id})
	})
	eventually(t, 10*time.Second, "the tracking row to say complete", func() bool {
		w, err := st.GetAgentWorkflow(ctx, key, id)
		return err == nil && w.Status == store.StatusComplete
	})
	// Node 1's hook, let go, writes nothing: the agent is node 2's.
	close(hang)
	eventually(t, 10*time.Second, "the notice to be gone", func() bool {
		_, err := st.GetSchedule(ctx, key, store.FinishedNoticeID(id))
		return err != nil
	})
	if got := heard(); !slices.Equal(got, []string{id}) {
		t.Fatalf("the agent heard %v; want [%s] once", got, id)
	}
	_ = b
}

// Retrier restarts a workflow the first time it hears it completed.
type Retrier struct {
	agent.Agent[struct{ Heard int }]
}

func (r *Retrier) Start(ctx context.Context, _ int) (string, error) {
	return r.RunWorkflow(ctx, "NAPPER", struct{}{})
}

func (r *Retrier) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, _ json.RawMessage) {
	s := r.State()
	s.Heard++
	if err := r.SetState(ctx, s); err != nil {
		r.Logger().Error("set state", "err", err)
	}
	if s.Heard == 1 {
		if err := r.RestartWorkflow(ctx, wf.ID); err != nil {
			r.Logger().Error("restart", "err", err)
		}
	}
}

// A complete hook that restarts its workflow leaves the tracking row as
// the restart set it, though the runtime records the end after the hook:
// the restarted run's completion is told again.
func TestCompleteHookRestartsWorkflow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{rt: agent.Options{PollInterval: 20 * time.Millisecond},
		setup: func(rt *agent.Runtime) { agent.MustRegister[Retrier](rt, "Retrier", agent.ClassOptions{}) },
		workflows: func(eng *workflow.Engine, rt *agent.Runtime) {
			workflow.MustRegister(eng, "Napper", workflow.Func[struct{}, string](
				func(ctx context.Context, _ workflow.Event[struct{}], step *workflow.Step) (string, error) {
					return "ok", step.Sleep("nap", 100*time.Millisecond)
				}))
			if err := rt.Bind("NAPPER", agent.Binding{Workflow: "Napper"}); err != nil {
				t.Fatal(err)
			}
		}})
	ctx := t.Context()
	id, err := agent.Call(ctx, e.rt, "r", (*Retrier).Start, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := store.AgentKey{Class: "Retrier", Name: "r"}
	heard := func() int {
		row, err := e.store.GetAgent(ctx, key)
		if err != nil {
			return 0
		}
		var s struct{ Heard int }
		_ = json.Unmarshal(row.State, &s)
		return s.Heard
	}
	eventually(t, 10*time.Second, "both runs' completions to be told", func() bool { return heard() == 2 })
	eventually(t, 10*time.Second, "the tracking row to say complete", func() bool {
		w, err := e.store.GetAgentWorkflow(ctx, key, id)
		return err == nil && w.Status == store.StatusComplete
	})
	if inst, err := e.store.GetInstance(ctx, id); err != nil || inst.Restarts != 1 || inst.Status != store.StatusComplete {
		t.Fatalf("instance = %+v, %v; want complete after one restart", inst, err)
	}
}
