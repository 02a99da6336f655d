package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"agentflow/agent"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Traveller starts Booking workflows and hears back from them.
type Traveller struct {
	agent.Agent[struct{}]
	completed chan<- string // given by the init function passed to Register
}

// Book starts a Booking workflow through its binding and returns its id.
func (t *Traveller) Book(ctx context.Context, city string) (string, error) {
	return t.RunWorkflow(ctx, "BOOKING_WORKFLOW", BookingParams{City: city},
		agent.RunOptions{Metadata: map[string]any{"city": city}})
}

// Confirm is called by the workflow, in a step.
func (t *Traveller) Confirm(ctx context.Context, city string) (string, error) {
	fmt.Printf("%s confirms %s\n", t.Name(), city)
	return "ticket to " + city, nil
}

// OnWorkflowComplete is told once when a workflow it started completes.
func (t *Traveller) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	t.completed <- fmt.Sprintf("%s %s %s", wf.Workflow, wf.Status, output)
}

// BookingParams are a Booking's params; an agent's workflow params must
// be a JSON object.
type BookingParams struct {
	City string `json:"city"`
}

// Booking is a workflow class that Traveller agents start.
type Booking struct{ rt *agent.Runtime }

func (b Booking) Run(ctx context.Context, ev workflow.Event[BookingParams], step *workflow.Step) (string, error) {
	o, err := agent.OriginOf(b.rt, step) // the agent that started the workflow
	if err != nil {
		return "", err
	}
	if err := o.ReportProgress(map[string]string{"stage": "booking"}); err != nil {
		return "", err
	}
	res, err := o.Call("confirm", "Confirm", ev.Payload.City) // RPC to the agent's method, in a step named "confirm"
	if err != nil {
		return "", err
	}
	var ticket string
	if err := json.Unmarshal(res, &ticket); err != nil {
		return "", err
	}
	return ticket, nil // returning reports completion to the agent
}

// An agent starting a workflow through a binding; the workflow calls back
// into the agent through OriginOf, and the agent hears of its completion.
func ExampleAgent_RunWorkflow() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentflow-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		panic(err)
	}
	workflow.MustRegister(eng, "Booking", workflow.Workflow[BookingParams, string](Booking{rt: rt}))
	if err := rt.Bind("BOOKING_WORKFLOW", agent.Binding{Workflow: "Booking"}); err != nil {
		panic(err)
	}
	completed := make(chan string, 1)
	agent.MustRegister[Traveller](rt, "Traveller", agent.ClassOptions{}, func(t *Traveller) { t.completed = completed })
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if err := rt.Start(ctx); err != nil {
		panic(err)
	}
	defer rt.Stop(ctx)

	id, err := agent.Call(ctx, rt, "ada", (*Traveller).Book, "Lisbon")
	if err != nil {
		panic(err)
	}
	inst, err := eng.Get(ctx, id)
	if err != nil {
		panic(err)
	}
	ticket, err := workflow.Result[string](ctx, inst)
	if err != nil {
		panic(err)
	}
	fmt.Println("result:", ticket)
	select {
	case s := <-completed:
		fmt.Println("agent heard:", s)
	case <-time.After(5 * time.Second):
		fmt.Println("the agent heard nothing")
	}
	// Output:
	// ada confirms Lisbon
	// result: ticket to Lisbon
	// agent heard: Booking complete "ticket to Lisbon"
}
