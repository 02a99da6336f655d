package think_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"path/filepath"
	"strings"
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

// Helper is a Think class with a weather tool.
type Helper struct {
	think.Agent[struct{}]
}

type weatherArgs struct {
	City string `json:"city"`
}

func weatherTool(t *testing.T) think.Tool {
	tool, err := think.NewTool("get_weather", "Current weather in a city",
		func(ctx context.Context, a weatherArgs) (map[string]string, error) {
			if a.City == "Atlantis" {
				return nil, errors.New("no such city")
			}
			return map[string]string{"city": a.City, "sky": "sunny"}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return tool
}

type env struct {
	rt    *agent.Runtime
	st    store.Store
	model *scripted.Model
	eng   *workflow.Engine
	stop  func()
}

func newEnv(t *testing.T, m *scripted.Model, st store.Store) *env {
	t.Helper()
	return newEnvWith(t, envOptions{model: m, store: st})
}

type envOptions struct {
	model *scripted.Model
	store store.Store
	clock clockwork.Clock
	tasks []think.Task
	// limits are the engine's (the defaults when zero).
	limits workflow.Limits
	// setup registers more on the engine and runtime before they start.
	setup func(eng *workflow.Engine, rt *agent.Runtime)
	// advertise and secret make the runtime a node of a cluster
	// (agent.Options' AdvertiseURL and ClusterSecret).
	advertise, secret string
	// hooks are the engine's.
	hooks workflow.Hooks
	// gate, when set, holds every model call until it is closed.
	gate <-chan struct{}
}

// gatedModel holds each call of its model until gate is closed.
type gatedModel struct {
	model.Provider
	gate <-chan struct{}
}

func (g gatedModel) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	return func(yield func(model.Event, error) bool) {
		select {
		case <-g.gate:
		case <-ctx.Done():
			yield(model.Event{}, ctx.Err())
			return
		}
		for ev, err := range g.Provider.Stream(ctx, req) {
			if !yield(ev, err) {
				return
			}
		}
	}
}

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	m, st := o.model, o.store
	if o.clock == nil {
		o.clock = clockwork.NewRealClock()
	}
	ctx := t.Context()
	if st == nil {
		var err error
		st, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "think.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Clock: o.clock, Lease: time.Hour, Limits: o.limits, Hooks: o.hooks})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, PollInterval: 50 * time.Millisecond,
		AdvertiseURL: o.advertise, ClusterSecret: o.secret})
	if err != nil {
		t.Fatal(err)
	}
	var provider model.Provider = m
	if o.gate != nil {
		provider = gatedModel{m, o.gate}
	}
	think.MustRegister[Helper](rt, "Helper", think.Options{Model: provider, System: "You help.", Tools: []think.Tool{weatherTool(t)}, MaxSteps: 4, Tasks: o.tasks})
	if o.setup != nil {
		o.setup(eng, rt)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{rt: rt, st: st, model: m, eng: eng}
	e.stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Stop(sctx)
		eng.Stop(sctx)
	}
	t.Cleanup(e.stop)
	return e
}

func with[R any](t *testing.T, e *env, name string, fn func(ctx context.Context, h *Helper) (R, error)) R {
	t.Helper()
	r, err := agent.With(t.Context(), e.rt, name, fn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func user(text string) []model.Message { return []model.Message{{Role: model.RoleUser, Content: text}} }

func waitStatus(t *testing.T, e *env, name, id string, want store.SubmissionStatus) think.SubmissionInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := with(t, e, name, func(ctx context.Context, h *Helper) (think.SubmissionInfo, error) {
			return h.InspectSubmission(ctx, id)
		})
		if s.Status == want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("submission %s is %s, want %s (error %q)", id, s.Status, want, s.Error)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTurnWithToolRound(t *testing.T) {
	t.Parallel()
	m := scripted.New(scripted.Call("get_weather", `{"city":"Oslo"}`), scripted.Say("It is sunny in Oslo."))
	e := newEnv(t, m, nil)
	res := with(t, e, "h1", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("Weather in Oslo?"), think.SubmitOptions{IdempotencyKey: "q1"})
	})
	if !res.Accepted || res.Submission.Status != store.SubmissionPending {
		t.Fatalf("submit = %+v", res)
	}
	done := waitStatus(t, e, "h1", res.Submission.ID, store.SubmissionCompleted)
	if string(done.Output) != `{"finish":"answered","text":"It is sunny in Oslo."}` || done.Usage.InputTokens != 20 {
		t.Errorf("completed submission = %+v", done)
	}
	conv := with(t, e, "h1", func(ctx context.Context, h *Helper) ([]model.Message, error) { return h.Conversation(ctx) })
	var roles []string
	for _, msg := range conv {
		roles = append(roles, string(msg.Role))
	}
	if got := strings.Join(roles, ","); got != "user,assistant,tool,assistant" {
		t.Fatalf("conversation roles = %s", got)
	}
	if conv[2].Content != `{"city":"Oslo","sky":"sunny"}` || conv[2].ToolCallID != conv[1].ToolCalls[0].ID {
		t.Errorf("tool result = %+v", conv[2])
	}
	reqs := m.Requests()
	if len(reqs) != 2 || reqs[0].System != "You help." || len(reqs[0].Tools) != 1 || len(reqs[1].Messages) != 3 {
		t.Errorf("requests = %+v", reqs)
	}
	// Resubmitting the key returns the same submission.
	again := with(t, e, "h1", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("Weather in Oslo?"), think.SubmitOptions{IdempotencyKey: "q1"})
	})
	if again.Accepted || again.Submission.ID != res.Submission.ID {
		t.Errorf("resubmission = %+v", again)
	}
}

func TestSubmissionsRunInOrderAndCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	m := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		last := req.Messages[len(req.Messages)-1].Content
		if last == "slow" {
			<-release
		}
		return scripted.Say("re: " + last)
	}})
	m.Loop = true
	e := newEnv(t, m, nil)
	var ids []string
	for _, text := range []string{"slow", "second", "cancel me", "third"} {
		r := with(t, e, "h2", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
			return h.SubmitMessages(ctx, user(text), think.SubmitOptions{})
		})
		ids = append(ids, r.Submission.ID)
	}
	waitStatus(t, e, "h2", ids[0], store.SubmissionRunning)
	ok := with(t, e, "h2", func(ctx context.Context, h *Helper) (bool, error) { return h.CancelSubmission(ctx, ids[2]) })
	if !ok {
		t.Fatal("cancel of a pending submission reported nothing to cancel")
	}
	close(release)
	waitStatus(t, e, "h2", ids[3], store.SubmissionCompleted)
	waitStatus(t, e, "h2", ids[2], store.SubmissionAborted)
	conv := with(t, e, "h2", func(ctx context.Context, h *Helper) ([]model.Message, error) { return h.Conversation(ctx) })
	var got []string
	for _, msg := range conv {
		got = append(got, msg.Content)
	}
	want := "slow|re: slow|second|re: second|third|re: third"
	if strings.Join(got, "|") != want {
		t.Fatalf("conversation = %q, want %q (the cancelled one never entered it)", strings.Join(got, "|"), want)
	}
	n := with(t, e, "h2", func(ctx context.Context, h *Helper) (int, error) { return h.DeleteSubmissions(ctx) })
	if n != 4 {
		t.Errorf("deleted %d finished submissions, want 4", n)
	}
}

// TestCancelSubmissionByName: think.CancelSubmission reaches a running
// turn by the agent's name alone, as an operator API does through it.
func TestCancelSubmissionByName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, scripted.New(scripted.Stall()), nil)
	r := with(t, e, "h9", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("hang"), think.SubmitOptions{})
	})
	waitStatus(t, e, "h9", r.Submission.ID, store.SubmissionRunning)
	got, err := think.CancelSubmission(t.Context(), e.rt, "Helper", "h9", r.Submission.ID)
	if err != nil || !got {
		t.Fatalf("CancelSubmission of the running one = %v, %v; want true", got, err)
	}
	waitStatus(t, e, "h9", r.Submission.ID, store.SubmissionAborted)
	// Once its turn has let go (just after it recorded the end), there is
	// nothing left to cancel.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := think.CancelSubmission(t.Context(), e.rt, "Helper", "h9", r.Submission.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("CancelSubmission of the aborted submission still reports it unfinished")
		}
	}
	if _, err := think.CancelSubmission(t.Context(), e.rt, "Helper", "h9", "sub_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancel of an unknown submission: %v, want store.ErrNotFound", err)
	}
}

func TestTurnErrorsAndInvalidCalls(t *testing.T) {
	t.Parallel()
	m := scripted.New(
		scripted.Call("get_weather", `{"city":"Atl`), // truncated: never executed
		scripted.Call("get_weather", `{"town":"Oslo"}`),
		scripted.Call("get_weather", `{"city":"Atlantis"}`),
		scripted.Call("nope", `{}`),
		scripted.Say("gave up"),
	)
	e := newEnv(t, m, nil)
	r := with(t, e, "h3", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("weather?"), think.SubmitOptions{})
	})
	// MaxSteps is 4: the turn stops after four model calls.
	done := waitStatus(t, e, "h3", r.Submission.ID, store.SubmissionCompleted)
	conv := with(t, e, "h3", func(ctx context.Context, h *Helper) ([]model.Message, error) { return h.Conversation(ctx) })
	var results []string
	for _, msg := range conv {
		if msg.Role == model.RoleTool {
			results = append(results, fmt.Sprintf("%v:%s", msg.IsError, msg.Content))
		}
	}
	for i, want := range []string{"not valid JSON", "invalid arguments", "no such city", `no tool named "nope"`} {
		if i >= len(results) || !strings.Contains(results[i], want) || !strings.HasPrefix(results[i], "true:") {
			t.Errorf("tool result %d = %v, want an error containing %q", i, results, want)
		}
	}
	if len(m.Requests()) != 4 {
		t.Errorf("model called %d times, want MaxSteps 4 (%+v)", len(m.Requests()), done)
	}
	if _, err := think.NewTool("think_final_answer", "", func(ctx context.Context, a weatherArgs) (int, error) { return 0, nil }); err == nil {
		t.Error("a user tool took the reserved name")
	}
	if _, err := think.NewTool("bad", "", func(ctx context.Context, a map[string]int) (int, error) { return 0, nil }); err == nil {
		t.Error("a tool with a map root was accepted")
	}
	_, err := agent.With(t.Context(), e.rt, "h3", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, nil, think.SubmitOptions{})
	})
	if !errors.Is(err, think.ErrNoMessages) {
		t.Errorf("empty submission: err = %v", err)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
