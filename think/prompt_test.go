package think_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// Draft is the seed 001 answer type.
type Draft struct {
	Title   string   `json:"title"`
	Summary string   `json:"summary"`
	Labels  []string `json:"labels"`
}

type promptParams struct {
	Mode string `json:"mode"`
}

// promptResult is what the test workflow returns: the draft, or the error.
type promptResult struct {
	Draft *Draft `json:"draft,omitempty"`
	Err   string `json:"err,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

func kindOf(err error) string {
	var (
		se *think.SchemaError
		de *think.DuplicateStepError
		te *think.TimeoutError
		ve *think.ValidationError
		ee *think.EndedError
		dl *think.DeliveryError
	)
	switch {
	case errors.As(err, &se):
		return "schema"
	case errors.As(err, &de):
		return "duplicate"
	case errors.As(err, &te):
		return "timeout"
	case errors.As(err, &ve):
		return "validation"
	case errors.As(err, &ee) && ee.NoAnswer:
		return "no-answer"
	case errors.As(err, &ee):
		return "ended:" + string(ee.Status)
	case errors.As(err, &dl):
		return "delivery:" + string(dl.Status)
	}
	return "other"
}

func promptSetup(eng *workflow.Engine, rt *agent.Runtime) {
	workflow.MustRegister(eng, "Triage", workflow.Func[promptParams, promptResult](func(ctx context.Context, ev workflow.Event[promptParams], step *workflow.Step) (promptResult, error) {
		o, err := agent.OriginOf(rt, step)
		if err != nil {
			return promptResult{}, err
		}
		opts := think.PromptOptions{Prompt: "Draft a triage for issue 42.", Timeout: time.Hour}
		var d Draft
		switch ev.Payload.Mode {
		case "schema":
			_, err = think.Prompt[map[string]int](o, "draft", opts)
		case "duplicate":
			if _, err = think.Prompt[Draft](o, "draft", opts); err == nil {
				_, err = think.Prompt[Draft](o, "draft", opts)
			}
		case "keyed":
			opts.Key = "a"
			if d, err = think.Prompt[Draft](o, "draft", opts); err == nil {
				opts.Key = "b"
				d, err = think.Prompt[Draft](o, "draft", opts)
			}
		default:
			d, err = think.Prompt[Draft](o, "draft", opts)
		}
		if err != nil {
			return promptResult{Err: err.Error(), Kind: kindOf(err)}, nil
		}
		return promptResult{Draft: &d}, nil
	}))
	if err := rt.Bind("TRIAGE_WORKFLOW", agent.Binding{Workflow: "Triage"}); err != nil {
		panic(err)
	}
}

func runPrompt(t *testing.T, e *env, name, mode string) promptResult {
	t.Helper()
	id := with(t, e, name, func(ctx context.Context, h *Helper) (string, error) {
		return h.RunWorkflow(ctx, "TRIAGE_WORKFLOW", promptParams{Mode: mode})
	})
	return promptOutcome(t, e.st, id)
}

// promptOutcome waits up to 15 s for the Triage workflow id to finish and
// returns its result.
func promptOutcome(t *testing.T, st store.Store, id string) promptResult {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		in, err := st.GetInstance(t.Context(), id)
		if err == nil && in.Status.Finished() {
			var r promptResult
			if in.Status != store.StatusComplete || json.Unmarshal(in.Output, &r) != nil {
				t.Fatalf("workflow %s: %s %s %s", id, in.Status, in.ErrorName, in.ErrorMessage)
			}
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("workflow %s did not finish (%v)", id, in)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const goodDraft = `{"title":"Crash on save","summary":"Saving crashes.","labels":["bug","p1"]}`

func TestPromptAnswers(t *testing.T) {
	t.Parallel()
	m := scripted.New(
		scripted.Call("get_weather", `{"city":"Oslo"}`), // a tool round first
		scripted.Call("think_final_answer", goodDraft),
	)
	e := newEnvWith(t, envOptions{model: m, setup: promptSetup})
	r := runPrompt(t, e, "p1", "")
	if r.Draft == nil || r.Draft.Title != "Crash on save" || len(r.Draft.Labels) != 2 {
		t.Fatalf("result = %+v", r)
	}
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model calls, want 2", len(reqs))
	}
	// With other tools the first step must call some tool; the last allowed
	// step is not reached, so nothing forces the named tool yet.
	if reqs[0].ToolChoice.Mode != model.ToolChoiceRequired || reqs[0].Tools[len(reqs[0].Tools)-1].Name != think.FinalAnswerTool {
		t.Errorf("first request: choice %+v, tools %+v", reqs[0].ToolChoice, reqs[0].Tools)
	}
	conv := with(t, e, "p1", func(ctx context.Context, h *Helper) ([]model.Message, error) { return h.Conversation(ctx) })
	for _, msg := range conv {
		for _, c := range msg.ToolCalls {
			if strings.HasPrefix(c.Name, think.FinalAnswerTool) {
				t.Fatalf("the final-answer call entered the conversation: %+v", conv)
			}
		}
		if msg.ToolName == think.FinalAnswerTool {
			t.Fatalf("the final-answer result entered the conversation: %+v", conv)
		}
	}
	if len(conv) != 3 { // user, assistant(get_weather), tool result
		t.Errorf("conversation = %d messages: %+v", len(conv), conv)
	}
}

func TestPromptErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode  string
		turns []scripted.Turn
		kind  string
	}{
		{"", []scripted.Turn{scripted.Say("I think it is a bug.")}, "no-answer"},
		{"", []scripted.Turn{scripted.Call("think_final_answer", `{"title":"x","summary":"y","labels":"bug"}`)}, "validation"},
		{"", []scripted.Turn{scripted.Call("think_final_answer", `{"title":"x","sum`)}, "no-answer"},
		{"schema", nil, "schema"},
		{"duplicate", []scripted.Turn{scripted.Call("think_final_answer", goodDraft)}, "duplicate"},
		{"keyed", []scripted.Turn{scripted.Call("think_final_answer", goodDraft)}, ""},
	} {
		m := scripted.New(tc.turns...)
		e := newEnvWith(t, envOptions{model: m, setup: promptSetup})
		r := runPrompt(t, e, "pe", tc.mode)
		if r.Kind != tc.kind {
			t.Errorf("mode %q, turns %+v: result %+v, want kind %q", tc.mode, tc.turns, r, tc.kind)
		}
		if tc.mode == "schema" && len(m.Requests()) != 0 {
			t.Errorf("schema error: the model was called")
		}
		if tc.kind == "no-answer" && len(tc.turns) == 1 && len(tc.turns[0].Calls) == 1 && strings.Contains(string(tc.turns[0].Calls[0].Arguments), "sum") {
			// the truncated answer was refused, then the model was forced again
			if n := len(m.Requests()); n < 2 {
				t.Errorf("truncated answer: %d model calls, want the turn to go on", n)
			}
		}
	}
}

// TestPromptStepHooks checks that the prompt's steps run the engine's
// hooks once each when the answer arrives while the workflow waits, so
// that the write that delivers it also claims the instance and completes
// its wait (the wait's hooks then run on its replay).
func TestPromptStepHooks(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	before, after := map[string]int{}, map[string]int{}
	count := func(m map[string]int) func(context.Context, workflow.StepRef) error {
		return func(_ context.Context, s workflow.StepRef) error {
			mu.Lock()
			m[s.Name]++
			mu.Unlock()
			return nil
		}
	}
	gate := make(chan struct{})
	e := newEnvWith(t, envOptions{model: scripted.New(scripted.Call("think_final_answer", goodDraft)), setup: promptSetup, gate: gate,
		hooks: workflow.Hooks{BeforeStep: count(before), AfterStep: count(after)}})
	id := with(t, e, "hooks", func(ctx context.Context, h *Helper) (string, error) {
		return h.RunWorkflow(ctx, "TRIAGE_WORKFLOW", promptParams{})
	})
	// The model answers once the workflow waits for the answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, err := e.st.GetInstance(t.Context(), id)
		if err == nil && in.Status == store.StatusWaiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workflow did not wait for the answer: %+v %v", in, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	if r := promptOutcome(t, e.st, id); r.Draft == nil {
		t.Fatalf("result = %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if after["draft:submit"] != 1 || after["draft:wait"] != 1 {
		t.Errorf("AfterStep ran %v; want draft:submit and draft:wait once each", after)
	}
	if before["draft:wait"] < 1 {
		t.Errorf("BeforeStep ran %v; want draft:wait", before)
	}
}
