package triage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// env is an engine, an agent runtime and TriageAgent on a SQLite store.
type env struct {
	rt  *agent.Runtime
	st  store.Store
	eng *workflow.Engine

	mu     sync.Mutex
	errs   map[string]error // the errors workflows ended with, by instance
	failed chan string
}

type envOptions struct {
	model    model.Provider
	clock    clockwork.Clock
	maxSteps int
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.clock == nil {
		o.clock = clockwork.NewRealClock()
	}
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "triage.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Clock: o.clock, Lease: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rt: rt, st: st, eng: eng, errs: map[string]error{}, failed: make(chan string, 16)}
	failed := func(id string, err error) {
		e.mu.Lock()
		e.errs[id] = err
		e.mu.Unlock()
		select {
		case e.failed <- id:
		default:
		}
	}
	if err := register(eng, rt, think.Options{Model: o.model, MaxSteps: o.maxSteps}, failed); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Stop(sctx)
		eng.Stop(sctx)
	})
	return e
}

func with[R any](t *testing.T, e *env, fn func(ctx context.Context, a *TriageAgent) (R, error)) R {
	t.Helper()
	r, err := agent.With(t.Context(), e.rt, "repo", fn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) triage(t *testing.T, issue int) string {
	t.Helper()
	id, err := agent.Call(t.Context(), e.rt, "repo", (*TriageAgent).TriageIssue, issue)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) state(t *testing.T) State {
	return with(t, e, func(ctx context.Context, a *TriageAgent) (State, error) { return a.State(), nil })
}

// waitFor polls cond (a real-time deadline) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finished waits for the instance to finish and returns it.
func (e *env) finished(t *testing.T, id string) *store.Instance {
	t.Helper()
	var in *store.Instance
	waitFor(t, "workflow "+id+" to finish", func() bool {
		var err error
		in, err = e.st.GetInstance(t.Context(), id)
		return err == nil && in.Status.Finished()
	})
	return in
}

// errOf returns the Go error the workflow ended with.
func (e *env) errOf(t *testing.T, id string) error {
	t.Helper()
	e.finished(t, id)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.errs[id]
}

// draftOf waits for the agent to hold the issue's draft.
func (e *env) draftOf(t *testing.T, issue int) Draft {
	t.Helper()
	var d Draft
	waitFor(t, "the draft", func() bool {
		var ok bool
		d, ok = e.state(t).Drafts[issue]
		return ok
	})
	return d
}

func (e *env) review(t *testing.T, id string, approved bool) {
	t.Helper()
	with(t, e, func(ctx context.Context, a *TriageAgent) (struct{}, error) {
		return struct{}{}, a.Review(ctx, id, approved)
	})
}

func TestTriageStory(t *testing.T) {
	t.Parallel()
	m := Scripted()
	e := newEnv(t, envOptions{model: m})
	id := e.triage(t, 42)

	d := e.draftOf(t, 42)
	if d.Title != LookupIssue(42).Title || !slices.Equal(d.Labels, []string{"bug", "crash"}) {
		t.Fatalf("draft = %+v", d)
	}
	if _, applied := e.state(t).Labels[42]; applied {
		t.Fatal("labels applied before approval")
	}
	e.review(t, id, true)
	in := e.finished(t, id)
	if in.Status != store.StatusComplete {
		t.Fatalf("workflow %s: %s %s", in.Status, in.ErrorName, in.ErrorMessage)
	}
	var r Result
	if err := json.Unmarshal(in.Output, &r); err != nil || r.IssueNumber != 42 || !slices.Equal(r.Labels, d.Labels) {
		t.Errorf("output = %s (%v)", in.Output, err)
	}
	s := e.state(t)
	if !slices.Equal(s.Labels[42], []string{"bug", "crash"}) || len(s.Drafts) != 0 {
		t.Errorf("state = %+v", s)
	}

	// The prompt step: forced tool use, get_issue then the final answer;
	// the final-answer call never enters the conversation.
	reqs := m.Requests()
	if len(reqs) != 2 || reqs[0].Messages[0].Content != "Triage issue #42" {
		t.Fatalf("requests = %+v", reqs)
	}
	names := func(ts []model.Tool) (out []string) {
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	if got := names(reqs[0].Tools); !slices.Equal(got, []string{"get_issue", think.FinalAnswerTool}) {
		t.Errorf("tools = %v", got)
	}
	if reqs[0].ToolChoice.Mode != model.ToolChoiceRequired {
		t.Errorf("tool choice = %+v", reqs[0].ToolChoice)
	}
	conv := with(t, e, func(ctx context.Context, a *TriageAgent) ([]model.Message, error) { return a.Conversation(ctx) })
	for _, msg := range conv {
		for _, c := range msg.ToolCalls {
			if strings.HasPrefix(c.Name, think.FinalAnswerTool) {
				t.Errorf("the final-answer call entered the conversation: %+v", conv)
			}
		}
	}
	// The agent tracks the workflow with its metadata.
	wf := with(t, e, func(ctx context.Context, a *TriageAgent) (agent.WorkflowInfo, error) { return a.GetWorkflow(ctx, id) })
	if wf.Binding != Binding || wf.Workflow != WorkflowClass || string(wf.Metadata) != `{"issueNumber":42}` {
		t.Errorf("tracked = %+v", wf)
	}
}

func TestTriageRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{model: Scripted()})
	id := e.triage(t, 7)
	if d := e.draftOf(t, 7); !slices.Equal(d.Labels, []string{"docs"}) {
		t.Fatalf("draft = %+v", d)
	}
	e.review(t, id, false)
	var re *RejectedError
	if err := e.errOf(t, id); !errors.As(err, &re) || re.IssueNumber != 7 {
		t.Fatalf("workflow error = %v, want a *RejectedError", err)
	}
	in := e.finished(t, id)
	if in.Status != store.StatusErrored || in.ErrorName != "RejectedError" || !strings.Contains(in.ErrorMessage, "issue #7: the draft was rejected") {
		t.Errorf("instance = %s %s %s", in.Status, in.ErrorName, in.ErrorMessage)
	}
	waitFor(t, "the agent to forget the draft", func() bool { return len(e.state(t).Drafts) == 0 })
	if s := e.state(t); len(s.Labels) != 0 {
		t.Errorf("labels applied after a rejection: %+v", s)
	}
}

// silent is a model that never answers: its turn lasts until cancelled.
type silent struct{ started chan struct{} }

func (s silent) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	return func(yield func(model.Event, error) bool) {
		select {
		case s.started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		yield(model.Event{}, ctx.Err())
	}
}

func TestTriagePromptTimeout(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	m := silent{started: make(chan struct{}, 1)}
	e := newEnv(t, envOptions{model: m, clock: clock})
	id := e.triage(t, 42)
	select {
	case <-m.started:
	case <-time.After(15 * time.Second):
		t.Fatal("the turn never started")
	}
	waiting := func() bool {
		steps, err := e.st.ListSteps(t.Context(), id)
		return err == nil && len(steps) > 0 && steps[len(steps)-1].Name == PromptStep+":wait"
	}
	waitFor(t, "the prompt step to wait", waiting)
	// Just short of three days: still waiting.
	for range 71 {
		clock.Advance(time.Hour)
		time.Sleep(2 * time.Millisecond)
	}
	if in, _ := e.st.GetInstance(t.Context(), id); in.Status.Finished() {
		t.Fatalf("workflow finished after 71 h: %s %s", in.Status, in.ErrorMessage)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		in, err := e.st.GetInstance(t.Context(), id)
		if err == nil && in.Status.Finished() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workflow did not end after three days")
		}
		clock.Advance(10 * time.Minute)
		time.Sleep(5 * time.Millisecond)
	}
	var te *think.TimeoutError
	err := e.errOf(t, id)
	if !errors.As(err, &te) || !te.Cancelled || te.Timeout != PromptTimeout || te.Name != PromptStep {
		t.Fatalf("workflow error = %#v, want a cancelled *think.TimeoutError", err)
	}
	if !errors.Is(err, think.ErrPrompt) {
		t.Errorf("%v does not match think.ErrPrompt", err)
	}
	sub := with(t, e, func(ctx context.Context, a *TriageAgent) (think.SubmissionInfo, error) {
		return a.InspectSubmission(ctx, te.SubmissionID)
	})
	waitFor(t, "the submission to be aborted", func() bool {
		sub = with(t, e, func(ctx context.Context, a *TriageAgent) (think.SubmissionInfo, error) {
			return a.InspectSubmission(ctx, te.SubmissionID)
		})
		return sub.Status == store.SubmissionAborted
	})
	if s := e.state(t); len(s.Labels) != 0 || len(s.Drafts) != 0 {
		t.Errorf("state = %+v", s)
	}
}

// TestScriptedUnknownIssue: the scripted model drafts any issue.
func TestScriptedUnknownIssue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{model: scripted.New(scripted.Turn{Respond: scriptedTurn})})
	e.triage(t, 1234)
	if d := e.draftOf(t, 1234); d.Title != "Issue #1234" || !slices.Equal(d.Labels, []string{"needs-info"}) {
		t.Errorf("draft = %+v", d)
	}
}
