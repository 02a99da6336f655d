// Package triage is the prompt-step walkthrough of docs/DESIGN.md §4.3 end to end: a
// Think agent, TriageAgent, whose TriageIssue starts TRIAGE_WORKFLOW; the
// workflow hands one reasoning step back to the agent with think.Prompt —
// "Triage issue #N", answered as a typed Draft through the final-answer
// tool — waits for a human's approval, sent with the agent's
// SendWorkflowEvent, and then applies the draft's labels through the agent
// in a step.
//
//	triage.Register(eng, rt, think.Options{Model: provider}) // TriageAgent, TriageWorkflow, TRIAGE_WORKFLOW
//	id, err := agent.Call(ctx, rt, "repo", (*triage.TriageAgent).TriageIssue, 42)
//	// … the draft appears in the agent's state (Drafts[42]); a human approves:
//	agent.With(ctx, rt, "repo", func(ctx context.Context, a *triage.TriageAgent) (struct{}, error) {
//		return struct{}{}, a.SendWorkflowEvent(ctx, id, triage.ApprovalEvent, triage.Approval{Approved: true})
//	})
//	// … the labels are applied: the agent's state has Labels[42].
//
// The workflow may run in a service of its own: RegisterAgent binds it to
// WorkflowService, and a process of that service calls RegisterWorkflow
// with an agent runtime of no classes but the cluster's secret. The two
// binaries of examples/triage/cmd are that variant; TriageAgent also
// serves plain HTTP for it (OnRequest).
package triage

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"agentflow/agent"
	"agentflow/think"
	"agentflow/workflow"
)

// Names of the example's class, workflow, binding and event.
const (
	AgentClass    = "TriageAgent"
	WorkflowClass = "TriageWorkflow"
	Binding       = "TRIAGE_WORKFLOW"
	// ApprovalEvent is the type of the human's approval event.
	ApprovalEvent = "approval"
	// PromptStep is the prompt step's name.
	PromptStep = "triage-issue"
)

// PromptTimeout is how long the workflow waits for the model's draft, as
// in the seed.
const PromptTimeout = 3 * 24 * time.Hour

// ApprovalTimeout is how long the workflow waits for a human's approval.
const ApprovalTimeout = 7 * 24 * time.Hour

// System is TriageAgent's default system prompt.
const System = "You triage GitHub issues. Read the issue with the get_issue tool, then answer with a " +
	"short title, a one-sentence summary and the labels to apply (bug, feature, docs, question, " +
	"crash, needs-info, good-first-issue)."

// Params are the workflow's params (and the tracking row's metadata).
type Params struct {
	IssueNumber int `json:"issueNumber"`
}

// Draft is the prompt step's typed answer.
type Draft struct {
	Title   string   `json:"title" jsonschema:"a short title for the issue"`
	Summary string   `json:"summary" jsonschema:"one sentence saying what the issue is about"`
	Labels  []string `json:"labels" jsonschema:"the labels to apply"`
}

// Approval is the payload of the approval event.
type Approval struct {
	Approved bool   `json:"approved"`
	Reason   string `json:"reason,omitempty"`
}

// Result is the workflow's output.
type Result struct {
	IssueNumber int      `json:"issueNumber"`
	Draft       Draft    `json:"draft"`
	Labels      []string `json:"labels"` // the labels applied
}

// Progress is what the workflow reports to the agent once the draft is
// ready (OnWorkflowProgress).
type Progress struct {
	IssueNumber int   `json:"issueNumber"`
	Draft       Draft `json:"draft"`
}

// RejectedError fails the workflow when the human rejects the draft.
type RejectedError struct {
	IssueNumber int
	Reason      string
}

func (e *RejectedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("triage of issue #%d: the draft was rejected", e.IssueNumber)
	}
	return fmt.Sprintf("triage of issue #%d: the draft was rejected: %s", e.IssueNumber, e.Reason)
}

// ErrorName is the name the workflow's error is stored under.
func (e *RejectedError) ErrorName() string { return "RejectedError" }

// State is TriageAgent's state.
type State struct {
	// Drafts are the drafts waiting for approval, by issue number.
	Drafts map[int]Draft `json:"drafts"`
	// Labels are the labels applied, by issue number.
	Labels map[int][]string `json:"labels"`
}

// TriageAgent is the seed's Think agent.
type TriageAgent struct {
	think.Agent[State]
	observe func(agent, line string) // AgentOptions.Observe
}

// InitialState gives empty maps.
func (a *TriageAgent) InitialState() State {
	return State{Drafts: map[int]Draft{}, Labels: map[int][]string{}}
}

// TriageIssue starts the triage workflow for an issue and returns its id.
func (a *TriageAgent) TriageIssue(ctx context.Context, issueNumber int) (string, error) {
	return a.RunWorkflow(ctx, Binding, Params{IssueNumber: issueNumber},
		agent.RunOptions{Metadata: map[string]any{"issueNumber": issueNumber}})
}

// Review sends a triage workflow the human's verdict on its draft (the
// seed's sendWorkflowEvent with {type: "approval", payload: {approved}}).
func (a *TriageAgent) Review(ctx context.Context, workflowID string, approved bool) error {
	return a.SendWorkflowEvent(ctx, workflowID, ApprovalEvent, Approval{Approved: approved})
}

// ApplyLabels records the labels applied to an issue (a real agent would
// call the tracker's API here). It sets rather than adds, so a retried step
// applies them once.
func (a *TriageAgent) ApplyLabels(ctx context.Context, issue int, labels []string) error {
	err := a.change(ctx, func(s *State) {
		s.Labels[issue] = append([]string{}, labels...)
		delete(s.Drafts, issue)
	})
	if err == nil {
		a.tell("labels applied to issue #%d: %s", issue, strings.Join(labels, ", "))
	}
	return err
}

// BeforeTurn tells Observe of each turn the agent starts (a prompt step's
// among them); it changes nothing.
func (a *TriageAgent) BeforeTurn(ctx context.Context, s think.SubmissionInfo, c *think.TurnConfig) error {
	prompt := ""
	if len(s.Messages) > 0 {
		prompt = s.Messages[len(s.Messages)-1].Content
	}
	a.tell("turn %s started: %q", s.ID, prompt)
	return nil
}

// OnWorkflowProgress records a draft waiting for approval.
func (a *TriageAgent) OnWorkflowProgress(ctx context.Context, wf agent.WorkflowInfo, progress json.RawMessage) {
	var p Progress
	if err := json.Unmarshal(progress, &p); err != nil {
		a.Logger().Error("triage progress", "workflow", wf.ID, "err", err)
		return
	}
	if err := a.change(ctx, func(s *State) { s.Drafts[p.IssueNumber] = p.Draft }); err != nil {
		a.Logger().Error("recording a draft", "workflow", wf.ID, "err", err)
		return
	}
	a.tell("draft for issue #%d from %s %s: %q [labels: %s]", p.IssueNumber, wf.Workflow, wf.ID,
		p.Draft.Title, strings.Join(p.Draft.Labels, ", "))
}

// OnWorkflowComplete tells Observe of a triage workflow that completed.
func (a *TriageAgent) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	var r Result
	_ = json.Unmarshal(output, &r)
	a.tell("%s %s%s complete: issue #%d labelled %s", wf.Workflow, wf.ID, serviceOf(wf), r.IssueNumber, strings.Join(r.Labels, ", "))
}

// OnWorkflowError forgets the draft of a triage that failed (rejected,
// timed out, or the model gave no valid answer).
func (a *TriageAgent) OnWorkflowError(ctx context.Context, wf agent.WorkflowInfo, e *workflow.ErrorInfo) {
	var p Params
	if json.Unmarshal(wf.Metadata, &p) != nil {
		return
	}
	if err := a.change(ctx, func(s *State) { delete(s.Drafts, p.IssueNumber) }); err != nil {
		a.Logger().Error("forgetting a draft", "workflow", wf.ID, "err", err)
	}
	a.tell("%s %s%s failed: %s: %s", wf.Workflow, wf.ID, serviceOf(wf), e.Name, e.Message)
}

// serviceOf names a workflow's service when it is another service's.
func serviceOf(wf agent.WorkflowInfo) string {
	if wf.Service == "" {
		return ""
	}
	return " (service " + wf.Service + ")"
}

// tell hands a line to AgentOptions.Observe.
func (a *TriageAgent) tell(format string, args ...any) {
	if a.observe != nil {
		a.observe(a.Name(), fmt.Sprintf(format, args...))
	}
}

func (a *TriageAgent) change(ctx context.Context, fn func(*State)) error {
	s := a.State()
	next := State{Drafts: maps.Clone(s.Drafts), Labels: maps.Clone(s.Labels)}
	if next.Drafts == nil {
		next.Drafts = map[int]Draft{}
	}
	if next.Labels == nil {
		next.Labels = map[int][]string{}
	}
	fn(&next)
	return a.SetState(ctx, next)
}

// TriageWorkflow is TRIAGE_WORKFLOW: prompt for a draft, wait for approval,
// apply the labels.
type TriageWorkflow struct {
	rt *agent.Runtime
	// failed, when set, is told the error Run ends with (tests).
	failed func(instance string, err error)
}

// Run implements workflow.Workflow.
func (w TriageWorkflow) Run(ctx context.Context, ev workflow.Event[Params], step *workflow.Step) (res Result, err error) {
	defer func() {
		if err != nil && w.failed != nil {
			w.failed(step.InstanceID(), err)
		}
	}()
	n := ev.Payload.IssueNumber
	o, err := agent.OriginOf(w.rt, step)
	if err != nil {
		return Result{}, err
	}
	draft, err := think.Prompt[Draft](o, PromptStep, think.PromptOptions{
		Prompt:  fmt.Sprintf("Triage issue #%d", n),
		Timeout: PromptTimeout,
	})
	if err != nil {
		return Result{}, err
	}
	if err := o.ReportProgress(Progress{IssueNumber: n, Draft: draft}); err != nil {
		return Result{}, err
	}
	ap, err := workflow.WaitForEvent[Approval](step, "approval", workflow.WaitOptions{Type: ApprovalEvent, Timeout: ApprovalTimeout})
	if err != nil {
		return Result{}, err
	}
	if !ap.Approved {
		return Result{}, &RejectedError{IssueNumber: n, Reason: ap.Reason}
	}
	if _, err := o.Call("apply-labels", "ApplyLabels", n, draft.Labels); err != nil {
		return Result{}, err
	}
	return Result{IssueNumber: n, Draft: draft, Labels: draft.Labels}, nil
}

// WorkflowService is the service whose engines run TriageWorkflow in the
// example's two-service variant (examples/triage/cmd): the agent's
// binding names it, and the workflows run in a process of their own that
// reaches the agent through the cluster.
const WorkflowService = "triage-workflows"

// AgentOptions are RegisterAgent's options.
type AgentOptions struct {
	// Service is the service whose engines run TriageWorkflow (see
	// RegisterWorkflow): "" for the agent runtime's own engine, or
	// WorkflowService for the two-service variant.
	Service string
	// Observe, when set, is told what the agent does, as a line: each
	// turn it starts, each draft it receives, the labels it applies and
	// how each triage workflow ended.
	Observe func(agent, line string)
}

// Register registers TriageAgent with o (its model; the example's
// get_issue tool is added to o.Tools, and System is the default system
// prompt when o.System is empty), the workflow class TriageWorkflow, and
// the binding TRIAGE_WORKFLOW: RegisterAgent and RegisterWorkflow on one
// engine and its runtime.
func Register(eng *workflow.Engine, rt *agent.Runtime, o think.Options) error {
	return register(eng, rt, o, nil)
}

func register(eng *workflow.Engine, rt *agent.Runtime, o think.Options, failed func(string, error)) error {
	if err := RegisterAgent(rt, o, AgentOptions{}); err != nil {
		return err
	}
	return registerWorkflow(eng, rt, failed)
}

// RegisterAgent registers TriageAgent with o (as Register does) and the
// binding TRIAGE_WORKFLOW to TriageWorkflow of service ao.Service.
func RegisterAgent(rt *agent.Runtime, o think.Options, ao AgentOptions) error {
	tool, err := IssueTool()
	if err != nil {
		return err
	}
	o.Tools = append([]think.Tool{tool}, o.Tools...)
	if o.System == "" {
		o.System = System
	}
	if o.Class.Callable == nil {
		o.Class.Callable = []string{"triageIssue", "review"}
	}
	if err := think.Register[TriageAgent](rt, AgentClass, o, func(a *TriageAgent) { a.observe = ao.Observe }); err != nil {
		return err
	}
	return rt.Bind(Binding, agent.Binding{Workflow: WorkflowClass, Service: ao.Service})
}

// RegisterWorkflow registers TriageWorkflow on eng, whose workflows reach
// their agent through rt: the runtime of the process the engine runs in.
// In a service of its own that hosts no agents, rt is a runtime with no
// classes and the cluster's ClusterSecret, so that the prompt step and
// the calls to the agent are sent to the node the agent is live on.
func RegisterWorkflow(eng *workflow.Engine, rt *agent.Runtime) error {
	return registerWorkflow(eng, rt, nil)
}

func registerWorkflow(eng *workflow.Engine, rt *agent.Runtime, failed func(string, error)) error {
	return workflow.Register(eng, WorkflowClass, workflow.Workflow[Params, Result](TriageWorkflow{rt: rt, failed: failed}))
}
