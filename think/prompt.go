package think

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/schema"
	"agentflow/store"
	"agentflow/workflow"
)

// This file is the prompt step (DESIGN §4.3): a workflow started by a Think
// agent hands one reasoning step back to it and gets a typed, validated Go
// value.

// PromptOptions are options of Prompt.
type PromptOptions struct {
	// Prompt is the user message submitted to the agent.
	Prompt string
	// Timeout bounds the wait for the turn's end; default 24 h.
	Timeout time.Duration
	// Key tells apart two prompts of one step name in one run (e.g. one
	// per item of a loop); without it, using a name twice is an error.
	Key string
	// CancelOnTimeout cancels the submission when the wait times out;
	// default true.
	CancelOnTimeout *bool
}

// Errors of Prompt, matchable with errors.As (and errors.Is ErrPrompt).
var ErrPrompt = errors.New("think: prompt step failed")

// SchemaError: T cannot be expressed under the providers' schema rules;
// nothing was submitted.
type SchemaError struct {
	Type string
	Err  error
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("think: prompt answer type %s: %v", e.Type, e.Err)
}
func (e *SchemaError) Unwrap() []error { return []error{e.Err, ErrPrompt} }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *SchemaError) ErrorName() string { return "PromptSchemaError" }

// DuplicateStepError: the step name was used twice in a run without a Key.
type DuplicateStepError struct{ Name string }

func (e *DuplicateStepError) Error() string {
	return fmt.Sprintf("think: prompt step %q is used twice in this run; give each use a distinct PromptOptions.Key", e.Name)
}
func (e *DuplicateStepError) Unwrap() error { return ErrPrompt }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *DuplicateStepError) ErrorName() string { return "PromptDuplicateStepError" }

// TimeoutError: the turn did not end within the Timeout.
type TimeoutError struct {
	Name         string
	SubmissionID string
	Timeout      time.Duration
	Cancelled    bool // the submission was cancelled
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("think: prompt %q: no answer within %s (submission %s, cancelled: %v)", e.Name, e.Timeout, e.SubmissionID, e.Cancelled)
}
func (e *TimeoutError) Unwrap() error { return ErrPrompt }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *TimeoutError) ErrorName() string { return "PromptTimeoutError" }

// ValidationError: the model's answer does not match T's schema. An
// invalid answer is never repaired.
type ValidationError struct {
	Name   string
	Answer json.RawMessage
	Err    error // a *schema.ValidationError, or the decoding error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("think: prompt %q: the answer is not valid: %v", e.Name, e.Err)
}
func (e *ValidationError) Unwrap() []error { return []error{e.Err, ErrPrompt} }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *ValidationError) ErrorName() string { return "PromptValidationError" }

// EndedError: the submission ended without an answer: aborted, skipped,
// error, or the model ended the turn without calling the final-answer
// tool (Status completed, NoAnswer true).
type EndedError struct {
	Name         string
	SubmissionID string
	Status       store.SubmissionStatus
	// NoAnswer is set when the model ended the turn without calling the
	// final-answer tool.
	NoAnswer bool
	Message  string
}

func (e *EndedError) Error() string {
	if e.NoAnswer {
		return fmt.Sprintf("think: prompt %q: the model ended the turn without calling the final-answer tool (submission %s)", e.Name, e.SubmissionID)
	}
	return fmt.Sprintf("think: prompt %q: submission %s ended %s: %s", e.Name, e.SubmissionID, e.Status, e.Message)
}
func (e *EndedError) Unwrap() error { return ErrPrompt }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *EndedError) ErrorName() string {
	if e.NoAnswer {
		return "PromptNoAnswerError"
	}
	return "PromptEndedError"
}

// DeliveryError: the turn ended but its outcome could not be delivered to
// the workflow, which refused it (over the workflow event size limit,
// say); the outbox sent this notice instead. The outcome is kept in the
// agent's ledger (InspectSubmission).
type DeliveryError struct {
	Name         string
	SubmissionID string
	Status       store.SubmissionStatus // how the submission ended
	Reason       string                 // why its outcome was refused
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("think: prompt %q: submission %s ended %s but its outcome could not be delivered to the workflow: %s",
		e.Name, e.SubmissionID, e.Status, e.Reason)
}
func (e *DeliveryError) Unwrap() error { return ErrPrompt }

// ErrorName is the name a workflow that returns the error is stored under.
func (e *DeliveryError) ErrorName() string { return "PromptDeliveryError" }

// promptSpec is what a prompt submission carries in its metadata for the
// turn: the answer's provider schema.
type promptSpec struct {
	Schema      json.RawMessage `json:"schema"`
	Fingerprint string          `json:"fingerprint"`
	Step        string          `json:"step"`
	Instance    string          `json:"instance"`
}

// promptMetaKey is the metadata key a prompt submission's spec is under.
const promptMetaKey = "agentflow.prompt"

// promptEvent is the outbox message's payload, as the wait receives it.
type promptEvent struct {
	SubmissionID string                 `json:"submissionId"`
	Status       store.SubmissionStatus `json:"status"`
	Error        string                 `json:"error"`
	Output       json.RawMessage        `json:"output"`
	// DeliveryError is set, and Output left out, in the failure notice
	// the outbox sends when the instance refused the outcome itself.
	DeliveryError string `json:"deliveryError,omitempty"`
}

// promptOutput is a prompt turn's output.
type promptOutput struct {
	Answer   json.RawMessage `json:"answer,omitempty"`
	Text     string          `json:"text,omitempty"`
	Finish   string          `json:"finish"`
	NoAnswer bool            `json:"noAnswer,omitempty"`
}

// submitted is what the submit step records.
type submitted struct {
	SubmissionID string `json:"submissionId"`
	EventType    string `json:"eventType"`
	Fingerprint  string `json:"fingerprint"`
}

// The runtime's named methods (agentseam.Host.HandleCall) behind the prompt
// step: the step's process calls them by name, and they run on whichever
// node of the cluster the Think agent is live on, so a workflow of any
// service can prompt its agent.
const (
	submitPromptMethod = "agentflow:think.submitPrompt"
	cancelPromptMethod = "agentflow:think.cancelPrompt"
)

// submitPromptArgs is submitPromptMethod's argument.
type submitPromptArgs struct {
	Prompt   string     `json:"prompt"`
	Key      string     `json:"key"`
	Spec     promptSpec `json:"spec"`
	Instance string     `json:"instance"`
	Event    string     `json:"event"`
}

// handlePromptCalls registers the prompt step's named methods on rt, once.
func handlePromptCalls(rt *agent.Runtime) error {
	var err error
	h := host(rt)
	h.Extension("think-prompt-calls", func() any {
		err = errors.Join(
			h.HandleCall(submitPromptMethod, func(ctx context.Context, self any, arg json.RawMessage) (any, error) {
				ps, ok := self.(promptSubmitter)
				if !ok {
					return nil, fmt.Errorf("think: prompt: agent class %T is not a Think class", self)
				}
				var a submitPromptArgs
				if err := json.Unmarshal(arg, &a); err != nil {
					return nil, fmt.Errorf("think: %s: %w", submitPromptMethod, err)
				}
				return ps.submitPrompt(ctx, a.Prompt, a.Key, a.Spec, a.Instance, a.Event)
			}),
			h.HandleCall(cancelPromptMethod, func(ctx context.Context, self any, arg json.RawMessage) (any, error) {
				ps, ok := self.(promptSubmitter)
				if !ok {
					return nil, fmt.Errorf("think: prompt: agent class %T is not a Think class", self)
				}
				var id string
				if err := json.Unmarshal(arg, &id); err != nil {
					return nil, fmt.Errorf("think: %s: %w", cancelPromptMethod, err)
				}
				return ps.CancelSubmission(ctx, id)
			}))
		return struct{}{}
	})
	return err
}

// promptSubmitter is implemented by every Think class (through Agent).
type promptSubmitter interface {
	submitPrompt(ctx context.Context, msg string, key string, spec promptSpec, instance, event string) (SubmitResult, error)
	CancelSubmission(ctx context.Context, id string) (bool, error)
}

// Prompt submits one prompt to the Think agent that started the workflow
// and waits durably for the turn's answer, a T checked against T's schema
// (DESIGN §4.3). It uses two steps, "<name>:submit" and "<name>:wait" (and
// "<name>:cancel" after a timeout). The submission is keyed by the run:
// replays of one run submit once, and a run after Instance.Restart submits
// a turn of its own.
func Prompt[T any](o *agent.Origin, name string, opts PromptOptions) (T, error) {
	var zero T
	step := o.Step()
	full, err := schema.For[T]()
	if err != nil {
		return zero, &SchemaError{Type: fmt.Sprintf("%T", zero), Err: err}
	}
	rt := o.Runtime()
	wire, err := strictWire(rt, full)
	if err != nil {
		return zero, &SchemaError{Type: fmt.Sprintf("%T", zero), Err: err}
	}
	if opts.Key == "" && step.Used(name+":submit") > 0 {
		return zero, &DuplicateStepError{Name: name}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = workflow.DefaultWaitTimeout
	}
	fp := sha256.Sum256(append(append([]byte(opts.Prompt), 0), wire...))
	// A restart runs the steps again, so a run after one submits a turn
	// of its own and waits for its own event type (an answer to the run
	// before that arrives late is not taken for it); every replay of one
	// run has the same key, so a crash never submits twice.
	run, eventType := step.InstanceID(), "agentflow:prompt:"
	if r := step.Restarts(); r > 0 {
		run += "/" + strconv.Itoa(r)
		eventType += "r" + strconv.Itoa(r) + ":"
	}
	idem := "think-workflow:" + step.Workflow() + ":" + run + ":" + name
	eventType += shortHash(name)
	if opts.Key != "" {
		idem += ":" + shortHash(opts.Key)
		eventType += ":" + shortHash(opts.Key)
	}
	key := o.Agent()
	sub, err := workflow.Do(step, name+":submit", func(ctx context.Context, _ workflow.Attempt) (submitted, error) {
		spec := promptSpec{Schema: wire, Fingerprint: hex.EncodeToString(fp[:8]), Step: name, Instance: step.InstanceID()}
		raw, err := rt.Ref(key.Class, key.Name).Call(ctx, submitPromptMethod, submitPromptArgs{
			Prompt: opts.Prompt, Key: idem, Spec: spec, Instance: step.InstanceID(), Event: eventType})
		if err != nil {
			return submitted{}, fmt.Errorf("think: prompt %q: submit to agent %s: %w", name, key, err)
		}
		var res SubmitResult
		if err := json.Unmarshal(raw, &res); err != nil {
			return submitted{}, fmt.Errorf("think: prompt %q: agent %s's answer to the submission: %w", name, key, err)
		}
		return submitted{SubmissionID: res.Submission.ID, EventType: eventType, Fingerprint: spec.Fingerprint}, nil
	})
	if err != nil {
		return zero, err
	}
	ev, err := workflow.WaitForEvent[promptEvent](step, name+":wait", workflow.WaitOptions{Type: sub.EventType, Timeout: opts.Timeout})
	if err != nil {
		if !errors.Is(err, workflow.ErrTimeout) {
			return zero, err
		}
		te := &TimeoutError{Name: name, SubmissionID: sub.SubmissionID, Timeout: opts.Timeout}
		if opts.CancelOnTimeout == nil || *opts.CancelOnTimeout {
			cancelled, err := workflow.Do(step, name+":cancel", func(ctx context.Context, _ workflow.Attempt) (bool, error) {
				ok, err := CancelSubmission(ctx, rt, key.Class, key.Name, sub.SubmissionID)
				if err != nil {
					return false, fmt.Errorf("think: prompt %q: %w", name, err)
				}
				return ok, nil
			})
			if err != nil {
				return zero, err
			}
			te.Cancelled = cancelled
		}
		return zero, te
	}
	if ev.DeliveryError != "" {
		return zero, &DeliveryError{Name: name, SubmissionID: sub.SubmissionID, Status: ev.Status, Reason: ev.DeliveryError}
	}
	var out promptOutput
	if ev.Status == store.SubmissionCompleted {
		_ = json.Unmarshal(ev.Output, &out)
	}
	if ev.Status != store.SubmissionCompleted || out.Answer == nil {
		return zero, &EndedError{Name: name, SubmissionID: sub.SubmissionID, Status: ev.Status,
			NoAnswer: ev.Status == store.SubmissionCompleted, Message: ev.Error}
	}
	if err := full.Validate(out.Answer); err != nil {
		return zero, &ValidationError{Name: name, Answer: out.Answer, Err: err}
	}
	var v T
	if err := json.Unmarshal(out.Answer, &v); err != nil {
		return zero, &ValidationError{Name: name, Answer: out.Answer, Err: err}
	}
	return v, nil
}

// strictWire returns the provider form of full (schema.Strict) as JSON,
// made once per runtime for each schema: Prompt needs it on every run and
// replay, and making it builds and checks a schema.
func strictWire(rt *agent.Runtime, full *schema.Schema) (json.RawMessage, error) {
	cache := host(rt).Extension("think-prompt-schemas", func() any { return new(sync.Map) }).(*sync.Map)
	if w, ok := cache.Load(full); ok {
		return w.(json.RawMessage), nil
	}
	strict, err := schema.Strict(full)
	if err != nil {
		return nil, err // not kept: the error is made again, as it was
	}
	w, _ := cache.LoadOrStore(full, strict.JSON())
	return w.(json.RawMessage), nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// submitPrompt submits a prompt turn whose end the outbox tells instance.
func (a *Agent[S]) submitPrompt(ctx context.Context, msg, key string, spec promptSpec, instance, event string) (SubmitResult, error) {
	meta := map[string]any{promptMetaKey: spec}
	return a.submit(ctx, []model.Message{{Role: model.RoleUser, Content: msg}},
		SubmitOptions{IdempotencyKey: key, Metadata: meta}, instance, event)
}

// promptOf returns the prompt spec a submission carries, if it is one.
func promptOf(s *store.Submission) *promptSpec {
	if s.Metadata == nil || s.NotifyInstance == "" {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(s.Metadata, &m) != nil || m[promptMetaKey] == nil {
		return nil
	}
	var p promptSpec
	if json.Unmarshal(m[promptMetaKey], &p) != nil || p.Schema == nil {
		return nil
	}
	return &p
}

// promptTurn is a prompt turn (think.Prompt): it answers through the
// final-answer tool, whose arguments are the answer's schema, and tool use
// is forced, the final-answer tool's when it is the only one or on the last
// step.
type promptTurn struct {
	spec  *promptSpec
	final string // the final-answer tool's name
}

func (p promptTurn) offer(offered []model.Tool) []model.Tool {
	return append(offered, model.Tool{Name: p.final, Parameters: p.spec.Schema,
		Description: "Give your final answer. Call this exactly once, when you are done; its arguments are the answer."})
}

func (p promptTurn) choice(tc *TurnConfig, step int, offered []model.Tool) model.ToolChoice {
	if len(offered) == 1 || step == tc.MaxSteps-1 {
		return model.ToolChoice{Mode: model.ToolChoiceTool, Name: p.final}
	}
	return model.ToolChoice{Mode: model.ToolChoiceRequired}
}

func (p promptTurn) isFinal(name string) bool { return name == p.final }

func (p promptTurn) output(text string, answer json.RawMessage, ended bool) json.RawMessage {
	finish := "max_steps"
	switch {
	case answer != nil:
		finish = "answered"
	case ended:
		finish = "no_answer" // the model ended the turn without answering
	}
	out, _ := json.Marshal(promptOutput{Answer: answer, Text: text, Finish: finish, NoAnswer: answer == nil})
	return out
}

// finalToolName is the final-answer tool's name for a turn: the reserved
// name, or with _1, _2… when a tool of the turn has it.
func finalToolName(tools []Tool) string {
	taken := map[string]bool{}
	for _, t := range tools {
		taken[t.Name] = true
	}
	name := FinalAnswerTool
	for i := 1; taken[name]; i++ {
		name = fmt.Sprintf("%s_%d", FinalAnswerTool, i)
	}
	return name
}
