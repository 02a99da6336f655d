package think_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"agentflow/agent"
	"agentflow/model/scripted"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// Labels is the typed answer a LabelWorkflow prompts for.
type Labels struct {
	Labels []string `json:"labels" jsonschema:"the labels to apply"`
}

// LabelParams are a LabelWorkflow's params.
type LabelParams struct {
	Issue int `json:"issue"`
}

// Labeler is a Think agent that starts LabelWorkflows.
type Labeler struct{ think.Agent[struct{}] }

// Label starts a LabelWorkflow for an issue and returns its id.
func (l *Labeler) Label(ctx context.Context, issue int) (string, error) {
	return l.RunWorkflow(ctx, "LABEL_WORKFLOW", LabelParams{Issue: issue})
}

// LabelWorkflow hands one reasoning step back to the agent that started it.
type LabelWorkflow struct{ rt *agent.Runtime }

func (w LabelWorkflow) Run(ctx context.Context, ev workflow.Event[LabelParams], step *workflow.Step) ([]string, error) {
	o, err := agent.OriginOf(w.rt, step) // the agent that started the workflow
	if err != nil {
		return nil, err
	}
	ans, err := think.Prompt[Labels](o, "choose-labels", think.PromptOptions{
		Prompt:  fmt.Sprintf("Which labels fit issue #%d?", ev.Payload.Issue),
		Timeout: time.Hour, // the workflow waits durably, up to this long
	})
	if err != nil {
		return nil, err // a *think.TimeoutError, *think.ValidationError, *think.EndedError, …
	}
	return ans.Labels, nil
}

// A prompt step: the workflow asks the Think agent that started it for a
// typed value. The model answers by calling the reserved final-answer tool
// with arguments that match the type's schema.
func ExamplePrompt() {
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
	m := scripted.New(scripted.Call(think.FinalAnswerTool, `{"labels":["bug","crash"]}`))
	think.MustRegister[Labeler](rt, "Labeler", think.Options{Model: m, System: "You triage issues."})
	workflow.MustRegister(eng, "LabelWorkflow", workflow.Workflow[LabelParams, []string](LabelWorkflow{rt: rt}))
	if err := rt.Bind("LABEL_WORKFLOW", agent.Binding{Workflow: "LabelWorkflow"}); err != nil {
		panic(err)
	}
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if err := rt.Start(ctx); err != nil {
		panic(err)
	}
	defer rt.Stop(ctx)

	id, err := agent.Call(ctx, rt, "repo", (*Labeler).Label, 42)
	if err != nil {
		panic(err)
	}
	inst, err := eng.Get(ctx, id)
	if err != nil {
		panic(err)
	}
	labels, err := workflow.Result[[]string](ctx, inst)
	if err != nil {
		panic(err)
	}
	fmt.Println("labels:", labels)

	req := m.Requests()[0] // what the model was asked
	fmt.Println("prompt:", req.Messages[len(req.Messages)-1].Content)
	for _, t := range req.Tools {
		fmt.Println("tool:", t.Name)
	}
	// Output:
	// labels: [bug crash]
	// prompt: Which labels fit issue #42?
	// tool: think_final_answer
}
