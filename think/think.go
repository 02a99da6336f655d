// Package think runs Think agents (DESIGN §4): agents with a model, a system
// prompt, tools and a persisted conversation, which run model turns — a
// streamed multi-step tool loop — one at a time from a durable ledger of
// submissions.
//
// A Think class embeds think.Agent[S] (which embeds agent.Agent[S]) and is
// registered with think.Register, which takes the model and the tools:
//
//	type Helper struct{ think.Agent[struct{}] }
//
//	weather, _ := think.NewTool("get_weather", "Current weather in a city",
//		func(ctx context.Context, a struct{ City string `json:"city"` }) (string, error) { … })
//	think.MustRegister[Helper](rt, "Helper", think.Options{
//		Model: provider, System: "You are helpful.", Tools: []think.Tool{weather},
//	})
//
// SubmitMessages appends to the ledger and returns at once; the agent runs
// the turns in the background, first in first out, streaming each turn's
// events to its WebSocket clients as cf_agent_think frames. After a crash,
// a submission whose messages never reached the conversation runs again;
// one cut off mid-turn ends as error, never silently lost and never run
// twice.
package think

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/recur"
	"agentflow/schema"
	"agentflow/store"
)

// Options configure a Think class.
type Options struct {
	// Model is the provider turns are streamed from. Required.
	Model model.Provider
	// ModelName overrides the provider's configured model.
	ModelName string
	// System is the system prompt.
	System string
	// Tools are the tools the model may call.
	Tools []Tool
	// MaxSteps caps the model calls of one turn; default 10.
	MaxSteps int
	// Tasks are the class's declared recurring tasks (DESIGN §4.5). Every
	// instance's stored task schedules are reconciled with them when it
	// is activated. Missed runs are not made up.
	Tasks []Task
	// Class is passed to agent.Register (callable methods).
	Class agent.ClassOptions
}

// Tool is a tool a Think agent offers its model: a Go function whose
// argument schema comes from a Go type.
type Tool struct {
	Name        string
	Description string
	// Schema is the arguments' full schema, used to validate them.
	Schema *schema.Schema
	// Run runs the tool on validated JSON arguments and returns its result,
	// which is sent to the model as JSON.
	Run func(ctx context.Context, args json.RawMessage) (any, error)
	// NeedsApproval holds every call of the tool until a person approves
	// it (human in the loop): the turn that made the call ends with the
	// call waiting, which a chat client shows as a tool part in state
	// "approval-requested" (the AI SDK's needsApproval); the client's
	// cf_agent_tool_approval frame (useAgentChat's addToolApprovalResponse)
	// is stored through the ledger, and a submission of it runs the tool
	// when approved, or records the denial as the call's outcome, and then
	// continues the turn. A waiting call survives restarts: it is in the
	// stored conversation.
	NeedsApproval bool

	wire json.RawMessage // the strict schema sent to providers
}

// NewTool makes a tool of fn, deriving the argument schema from A, which
// must be a struct the providers can express (schema.Strict).
func NewTool[A any, R any](name, description string, fn func(ctx context.Context, args A) (R, error)) (Tool, error) {
	if name == "" {
		return Tool{}, errors.New("think: tool name is empty")
	}
	full, err := schema.For[A]()
	if err != nil {
		return Tool{}, fmt.Errorf("think: tool %s: %w", name, err)
	}
	t := Tool{Name: name, Description: description, Schema: full,
		Run: func(ctx context.Context, raw json.RawMessage) (any, error) {
			var a A
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			return fn(ctx, a)
		}}
	return t.prepare()
}

// prepare checks the tool and computes its provider schema.
func (t Tool) prepare() (Tool, error) {
	if t.Schema == nil || t.Run == nil {
		return t, fmt.Errorf("think: tool %s: Schema and Run are required", t.Name)
	}
	if strings.HasPrefix(t.Name, FinalAnswerTool) {
		return t, fmt.Errorf("think: tool %s: names starting with %q are reserved", t.Name, FinalAnswerTool)
	}
	strict, err := schema.Strict(t.Schema)
	if err != nil {
		return t, fmt.Errorf("think: tool %s: %w", t.Name, err)
	}
	t.wire = strict.JSON()
	return t, nil
}

// FinalAnswerTool is the reserved name (and prefix) of the tool a prompt
// step's turn answers through; user tools may not use it.
const FinalAnswerTool = "think_final_answer"

// TurnConfig is one turn's settings, which a BeforeTurn hook may change.
type TurnConfig struct {
	Model  string
	System string
	// Tools are the tools offered; a hook may add tools, not remove them
	// (use ActiveTools to narrow what the model sees).
	Tools []Tool
	// ActiveTools, when not nil, names the tools the model sees.
	ActiveTools []string
	ToolChoice  model.ToolChoice
	MaxSteps    int
	Temperature *float64
	TopP        *float64
	MaxTokens   int
}

// BeforeTurner is the hook a Think class implements to change one turn's
// settings; s is the submission the turn runs.
type BeforeTurner interface {
	BeforeTurn(ctx context.Context, s SubmissionInfo, c *TurnConfig) error
}

// config is a class's registered configuration.
type config struct {
	opts   Options
	tools  []Tool
	specs  map[string]*recur.Spec // by task id
	outbox *outbox
}

// Agent is the base of a Think class, with the class's state type S.
type Agent[S any] struct {
	agent.Agent[S]
	cfg *config

	mu      sync.Mutex
	running bool                          // the runner goroutine is live
	cancels map[string]context.CancelFunc // the running submission's, by id
	// cancelled holds cancels that came after the runner marked a
	// submission running in the store but before its turn registered in
	// cancels; the turn, registering, finds its id here and stops at once.
	cancelled map[string]bool

	chat    chatHub // the chat protocol's streaming state (chat.go)
	history history // the conversation as last read (history.go)
}

func (a *Agent[S]) setConfig(c *config) { a.cfg = c }

func (a *Agent[S]) runTask(ctx context.Context, self any, s store.Schedule) error {
	return runTask(ctx, a, self, s)
}

// thinkAgent is implemented by every *T embedding Agent[S].
type thinkAgent interface {
	setConfig(*config)
	runTask(ctx context.Context, self any, s store.Schedule) error
}

// Register registers the Think class T (embedding think.Agent[S]) with its
// model and tools.
func Register[T any, PT interface {
	*T
	agent.Base
	thinkAgent
}](rt *agent.Runtime, name string, o Options, init ...func(*T)) error {
	if o.Model == nil {
		return fmt.Errorf("think: register %s: Options.Model is required", name)
	}
	if o.MaxSteps <= 0 {
		o.MaxSteps = 10
	}
	specs, err := checkTasks(o.Tasks)
	if err != nil {
		return fmt.Errorf("think: register %s: %w", name, err)
	}
	c := &config{opts: o, specs: specs, outbox: outboxOf(rt)}
	seen := map[string]bool{}
	for _, t := range o.Tools {
		t, err := t.prepare()
		if err != nil {
			return fmt.Errorf("think: register %s: %w", name, err)
		}
		if seen[t.Name] {
			return fmt.Errorf("think: register %s: tool %s is listed twice", name, t.Name)
		}
		seen[t.Name] = true
		c.tools = append(c.tools, t)
	}
	if err := handlePromptCalls(rt); err != nil {
		return fmt.Errorf("think: register %s: %w", name, err)
	}
	h := host(rt)
	st := h.Store()
	h.AddFinder(func(ctx context.Context, classes []string) ([]store.AgentKey, error) {
		return st.PendingSubmissionAgents(ctx, []string{name}, 100)
	})
	if len(o.Tasks) > 0 {
		err := h.HandleNotice(taskMethod(name), func(ctx context.Context, self any, s store.Schedule) error {
			ta, ok := self.(thinkAgent)
			if !ok {
				return errNotThink
			}
			return ta.runTask(ctx, self, s)
		})
		if err != nil {
			return fmt.Errorf("think: register %s: %w", name, err)
		}
	}
	inits := append([]func(*T){func(t *T) { PT(t).setConfig(c) }}, init...)
	return agent.Register[T, PT](rt, name, o.Class, inits...)
}

// MustRegister is Register that panics on error.
func MustRegister[T any, PT interface {
	*T
	agent.Base
	thinkAgent
}](rt *agent.Runtime, name string, o Options, init ...func(*T)) {
	if err := Register[T, PT](rt, name, o, init...); err != nil {
		panic(err)
	}
}
