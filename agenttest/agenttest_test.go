package agenttest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/agenttest"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// log is a test's record of what agents and workflows did, shared by every
// incarnation of the engine and runtime.
type log struct {
	mu    sync.Mutex
	lines []string
}

func (l *log) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *log) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// fast fails the test when f took more than a few seconds of real time.
func fast(t *testing.T, what string, f func()) {
	t.Helper()
	begun := time.Now()
	f()
	if real := time.Since(begun); real > 10*time.Second {
		t.Errorf("%s took %s of real time", what, real)
	}
}

// Ticker runs its Tick method on a cron schedule.
type Ticker struct {
	agent.Agent[struct{}]
	log *log
}

func (k *Ticker) Start(ctx context.Context, expr string) (string, error) {
	s, err := k.Schedule(ctx, agent.Cron(expr), "tick", nil)
	return s.ID, err
}

func (k *Ticker) Tick(ctx context.Context) error {
	k.log.add("%s", k.Runtime().Clock().Now().Format("15:04"))
	return nil
}

func tickerEnv(t *testing.T, l *log) *agenttest.Env {
	return agenttest.New(t, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			return agent.Register[Ticker](rt, "Ticker", agent.ClassOptions{}, func(k *Ticker) { k.log = l })
		},
	})
}

func TestCronEveryFiveMinutesForAnHour(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := tickerEnv(t, l)
	if _, err := agent.Call(t.Context(), env.Runtime(), "a", (*Ticker).Start, "*/5 * * * *"); err != nil {
		t.Fatal(err)
	}
	start := env.Clock.Now()
	fast(t, "a virtual hour", func() { env.Advance(time.Hour) })
	want := []string{"00:05", "00:10", "00:15", "00:20", "00:25", "00:30", "00:35", "00:40", "00:45", "00:50", "00:55", "01:00"}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("ticks = %v, want %v", got, want)
	}
	if got := env.Clock.Since(start); got != time.Hour {
		t.Errorf("virtual time passed = %s, want 1h", got)
	}
}

// A crash after a schedule's callback returned, before the schedule moved
// on: the new runtime runs that occurrence again (at least once). A crash
// before the callback: it runs once, after the restart.
func TestCrashAroundScheduleRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		point agenttest.Point
		want  []string
	}{
		{agenttest.AfterSchedule("tick").Nth(2), []string{"00:05", "00:10", "00:10", "00:15"}},
		{agenttest.BeforeSchedule("tick").Nth(2), []string{"00:05", "00:10", "00:15"}},
	} {
		t.Run(tc.point.String(), func(t *testing.T) {
			t.Parallel()
			l := &log{}
			env := tickerEnv(t, l)
			if _, err := agent.Call(t.Context(), env.Runtime(), "a", (*Ticker).Start, "*/5 * * * *"); err != nil {
				t.Fatal(err)
			}
			env.CrashAt(tc.point)
			env.Advance(15 * time.Minute)
			if !env.Crashed() {
				t.Fatal("no crash")
			}
			if now := env.Clock.Now().Format("15:04"); now != "00:10" {
				t.Errorf("Advance stopped at %s, want the crash at 00:10", now)
			}
			crashed := env.Engine().NodeID()
			env.Restart()
			if env.Engine().NodeID() == crashed {
				t.Errorf("the restarted engine has the crashed one's node id %s", crashed)
			}
			env.AdvanceTo(time.Date(2026, 1, 1, 0, 15, 0, 0, time.UTC))
			if got := l.all(); !slices.Equal(got, tc.want) {
				t.Errorf("ticks = %v, want %v", got, tc.want)
			}
			cs := env.Crashes()
			if len(cs) != 1 || cs[0].Point != tc.point || cs[0].Node != crashed || !strings.Contains(cs[0].Detail, "(tick) of agent Ticker/a") {
				t.Errorf("crashes = %+v", cs)
			}
		})
	}
}

// Each restart's runtime is the one the Env watches and hooks: a crash
// point armed after a restart fires in the new runtime, and each time the
// Env settles only once that runtime's schedule run has finished.
func TestRestartedRuntimeIsWatched(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := tickerEnv(t, l)
	if _, err := agent.Call(t.Context(), env.Runtime(), "a", (*Ticker).Start, "*/5 * * * *"); err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for i := range 3 {
		env.CrashAt(agenttest.BeforeSchedule("tick"))
		env.Advance(5 * time.Minute)
		if !env.Crashed() {
			t.Fatalf("incarnation %d: no crash", i)
		}
		nodes = append(nodes, env.Engine().NodeID())
		env.Restart() // runs the tick that was due at the crash
		if got := len(l.all()); got != i+1 {
			t.Fatalf("incarnation %d: %d ticks after the restart settled, want %d", i, got, i+1)
		}
	}
	cs := env.Crashes()
	if len(cs) != 3 {
		t.Fatalf("crashes = %+v", cs)
	}
	for i, c := range cs {
		if c.Node != nodes[i] || c.Point != agenttest.BeforeSchedule("tick") {
			t.Errorf("crash %d = %+v, want before tick on node %s", i, c, nodes[i])
		}
	}
}

// Flaky fails its callback until the third attempt; the retries' backoff
// is on the virtual clock, and Advance passes it.
type Flaky struct {
	agent.Agent[struct{}]
	log   *log
	tries *atomic.Int32 // shared by activations: an idle agent is evicted between tries
}

func (f *Flaky) Arm(ctx context.Context) (string, error) {
	s, err := f.Schedule(ctx, agent.After(time.Minute), "work", nil)
	return s.ID, err
}

func (f *Flaky) Work(ctx context.Context) error {
	n := f.tries.Add(1)
	f.log.add("try %d at %s", n, f.Runtime().Clock().Now().Format("15:04:05.000"))
	if n < 3 {
		return errors.New("not yet")
	}
	return nil
}

func TestScheduleRetriesOnTheVirtualClock(t *testing.T) {
	t.Parallel()
	l, tries := &log{}, new(atomic.Int32)
	env := agenttest.New(t, agenttest.Options{
		Runtime: agent.Options{ScheduleRetry: agent.Retry{Attempts: 3, MinDelay: time.Minute, MaxDelay: time.Hour}},
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			return agent.Register[Flaky](rt, "Flaky", agent.ClassOptions{}, func(f *Flaky) { f.log, f.tries = l, tries })
		},
	})
	if _, err := agent.Call0(t.Context(), env.Runtime(), "a", (*Flaky).Arm); err != nil {
		t.Fatal(err)
	}
	env.Advance(time.Minute)
	if got := l.all(); len(got) != 1 {
		t.Fatalf("after a minute: %v, want one try (the next waits for its backoff)", got)
	}
	env.Advance(10 * time.Minute) // backoffs of 30–60 s, then 60–120 s
	got := l.all()
	if len(got) != 3 {
		t.Fatalf("tries = %v, want 3", got)
	}
	// Advance stopped at each backoff's end rather than jumping to the
	// end, when every backoff would have passed at once.
	at := func(i int) string { return got[i][len("try n at "):] }
	if !(at(0) < at(1) && at(1) < at(2) && at(1) <= "00:02:00.000" && at(2) <= "00:04:00.000") {
		t.Errorf("tries = %v, want each after its backoff, the third by 00:04", got)
	}
}

// Indexer reindexes items in a fiber, stashing its progress after each.
type Indexer struct {
	agent.Agent[struct{}]
	log *log
}

func (x *Indexer) Reindex(ctx context.Context, items int) (string, error) {
	info, err := x.StartFiber(ctx, "reindex", x.run(items), agent.FiberOptions{ID: "reindex"})
	return info.ID, err
}

func (x *Indexer) run(items int) agent.FiberFunc {
	return func(ctx context.Context, f *agent.Fiber) error {
		next := 0
		if _, err := f.Stashed(&next); err != nil {
			return err
		}
		for i := next; i < items; i++ {
			x.log.add("item %d", i)
			if err := f.Stash(ctx, i+1); err != nil {
				return err
			}
		}
		return nil
	}
}

func (x *Indexer) OnFiberRecovered(ctx context.Context, f agent.FiberInfo) error {
	x.log.add("recovered %s at %s", f.ID, f.Stash)
	_, err := x.ResumeFiber(ctx, f.ID, x.run(5), false)
	return err
}

func TestFiberStashCrashRecover(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := agenttest.New(t, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			return agent.Register[Indexer](rt, "Indexer", agent.ClassOptions{}, func(x *Indexer) { x.log = l })
		},
	})
	env.CrashAt(agenttest.AfterStash("reindex").Nth(3))
	if _, err := agent.Call(t.Context(), env.Runtime(), "docs", (*Indexer).Reindex, 5); err != nil {
		t.Fatal(err)
	}
	env.Settle()
	if !env.Crashed() {
		t.Fatalf("no crash; log %v", l.all())
	}
	fib, err := env.Store.GetFiber(t.Context(), store.AgentKey{Class: "Indexer", Name: "docs"}, "reindex")
	if err != nil || fib.Status != store.FiberRunning || string(fib.Stash) != "3" {
		t.Fatalf("fiber after the crash = %+v, %v; want running (its node died) with stash 3", fib, err)
	}
	env.Restart()
	want := []string{"item 0", "item 1", "item 2", "recovered reindex at 3", "item 3", "item 4"}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
	fib, err = env.Store.GetFiber(t.Context(), store.AgentKey{Class: "Indexer", Name: "docs"}, "reindex")
	if err != nil || fib.Status != store.FiberCompleted || string(fib.Stash) != "5" {
		t.Errorf("fiber = %+v, %v; want completed with stash 5", fib, err)
	}
}

// TripParams are a Trip workflow's params.
type TripParams struct {
	City string `json:"city"`
}

// Trip books, waits three days and checks in.
type Trip struct{ log *log }

func (w Trip) Run(ctx context.Context, ev workflow.Event[TripParams], step *workflow.Step) (string, error) {
	if _, err := workflow.Do(step, "book", func(ctx context.Context, a workflow.Attempt) (bool, error) {
		w.log.add("booked %s", ev.Payload.City)
		return true, nil
	}); err != nil {
		return "", err
	}
	if err := step.Sleep("wait", 72*time.Hour); err != nil {
		return "", err
	}
	return workflow.Do(step, "check-in", func(ctx context.Context, a workflow.Attempt) (string, error) {
		w.log.add("checked in")
		return "checked in to " + ev.Payload.City, nil
	})
}

// Traveller starts Trip workflows and hears back from them.
type Traveller struct {
	agent.Agent[struct{}]
	log *log
}

func (v *Traveller) Go(ctx context.Context, city string) (string, error) {
	return v.RunWorkflow(ctx, "TRIP", TripParams{City: city})
}

func (v *Traveller) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	v.log.add("complete %s %s at %s", wf.Workflow, output, v.Runtime().Clock().Now().Format(time.RFC3339))
}

func travelEnv(t *testing.T, l *log) *agenttest.Env {
	return agenttest.New(t, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			if err := workflow.Register(eng, "Trip", workflow.Workflow[TripParams, string](Trip{log: l})); err != nil {
				return err
			}
			if err := rt.Bind("TRIP", agent.Binding{Workflow: "Trip"}); err != nil {
				return err
			}
			return agent.Register[Traveller](rt, "Traveller", agent.ClassOptions{}, func(v *Traveller) { v.log = l })
		},
	})
}

func TestAgentWorkflowSleepsThreeDaysAndReports(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := travelEnv(t, l)
	id, err := agent.Call(t.Context(), env.Runtime(), "ada", (*Traveller).Go, "Lisbon")
	if err != nil {
		t.Fatal(err)
	}
	env.Settle()
	if got := l.all(); !slices.Equal(got, []string{"booked Lisbon"}) {
		t.Fatalf("log = %v, want only the booking before the three days", got)
	}
	fast(t, "three virtual days", func() { env.Advance(72 * time.Hour) })
	want := []string{"booked Lisbon", "checked in", `complete Trip "checked in to Lisbon" at 2026-01-04T00:00:00Z`}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
	wf, err := agent.With(t.Context(), env.Runtime(), "ada", func(ctx context.Context, v *Traveller) (agent.WorkflowInfo, error) {
		return v.GetWorkflow(ctx, id)
	})
	if err != nil || wf.Status != workflow.StatusComplete {
		t.Errorf("tracked workflow = %+v, %v; want complete", wf, err)
	}
}

// A crash right after a step's checkpoint, with the workflow started by an
// agent: the new engine replays the instance and does not run the step
// again, and the agent still hears of the completion.
func TestCrashAfterStepThenRestart(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := travelEnv(t, l)
	env.CrashAt(agenttest.AfterStep("book"))
	if _, err := agent.Call(t.Context(), env.Runtime(), "ada", (*Traveller).Go, "Oslo"); err != nil {
		t.Fatal(err)
	}
	env.Settle()
	if !env.Crashed() {
		t.Fatal("no crash")
	}
	if cs := env.Crashes(); len(cs) != 1 || !strings.Contains(cs[0].Detail, `step "book"`) {
		t.Errorf("crashes = %+v", cs)
	}
	env.Restart()
	env.Advance(72 * time.Hour)
	want := []string{"booked Oslo", "checked in", `complete Trip "checked in to Oslo" at 2026-01-04T00:00:00Z`}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
}

// A crash before a step: the step runs once, after the restart.
func TestCrashBeforeStep(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := travelEnv(t, l)
	env.CrashAt(agenttest.BeforeStep("check-in"))
	if _, err := agent.Call(t.Context(), env.Runtime(), "ada", (*Traveller).Go, "Rome"); err != nil {
		t.Fatal(err)
	}
	env.Advance(80 * time.Hour)
	if !env.Crashed() || env.Clock.Now() != time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("crashed %v at %s, want a crash when the sleep ended", env.Crashed(), env.Clock.Now())
	}
	env.Restart()
	want := []string{"booked Rome", "checked in", `complete Trip "checked in to Rome" at 2026-01-04T00:00:00Z`}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
}

// Helper is a Think agent.
type Helper struct{ think.Agent[struct{}] }

func (h *Helper) Ask(ctx context.Context, q string) (string, error) {
	res, err := h.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: q}}, think.SubmitOptions{})
	return res.Submission.ID, err
}

func TestThinkAgentAnswers(t *testing.T) {
	t.Parallel()
	m := scripted.New(scripted.Say("Hello, Ada."))
	env := agenttest.New(t, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			return think.Register[Helper](rt, "Helper", think.Options{Model: m, System: "Be brief."})
		},
	})
	id, err := agent.Call(t.Context(), env.Runtime(), "ada", (*Helper).Ask, "Hi!")
	if err != nil {
		t.Fatal(err)
	}
	env.Settle()
	sub, err := agent.With(t.Context(), env.Runtime(), "ada", func(ctx context.Context, h *Helper) (think.SubmissionInfo, error) {
		return h.InspectSubmission(ctx, id)
	})
	if err != nil || sub.Status != store.SubmissionCompleted || !strings.Contains(string(sub.Output), "Hello, Ada.") {
		t.Fatalf("submission = %+v, %v", sub, err)
	}
	if reqs := m.Requests(); len(reqs) != 1 || reqs[0].System != "Be brief." {
		t.Errorf("model requests = %+v", reqs)
	}
}

// Draft is what a Triage workflow's prompt step asks for.
type Draft struct {
	Title string `json:"title"`
}

// Triage asks its agent for a draft, giving it three days.
type Triage struct {
	rt  *agent.Runtime
	log *log
}

func (w Triage) Run(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (string, error) {
	o, err := agent.OriginOf(w.rt, step)
	if err != nil {
		return "", err
	}
	d, err := think.Prompt[Draft](o, "draft", think.PromptOptions{Prompt: "Draft a title.", Timeout: 72 * time.Hour})
	var te *think.TimeoutError
	if errors.As(err, &te) {
		w.log.add("timed out after %s, cancelled %v, at %s", te.Timeout, te.Cancelled, w.rt.Clock().Now().Format(time.RFC3339))
	}
	if err != nil {
		return "", err
	}
	return d.Title, nil
}

// Triager is a Think agent that starts Triage workflows.
type Triager struct {
	think.Agent[struct{}]
	log *log
}

func (a *Triager) Triage(ctx context.Context) (string, error) {
	return a.RunWorkflow(ctx, "TRIAGE", struct{}{})
}

func (a *Triager) OnWorkflowError(ctx context.Context, wf agent.WorkflowInfo, err *workflow.ErrorInfo) {
	a.log.add("error %s", err.Name)
}

func triageEnv(t *testing.T, l *log, m model.Provider) *agenttest.Env {
	return agenttest.New(t, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error {
			if err := workflow.Register(eng, "Triage", workflow.Workflow[struct{}, string](Triage{rt: rt, log: l})); err != nil {
				return err
			}
			if err := rt.Bind("TRIAGE", agent.Binding{Workflow: "Triage"}); err != nil {
				return err
			}
			return think.Register[Triager](rt, "Triager", think.Options{Model: m}, func(a *Triager) { a.log = l })
		},
	})
}

// A prompt step whose model never answers times out after three virtual
// days, in milliseconds: the stalled turn is waiting, not busy.
func TestPromptTimesOutOnAStalledModel(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := triageEnv(t, l, scripted.New(scripted.Stall()))
	id, err := agent.Call0(t.Context(), env.Runtime(), "ada", (*Triager).Triage)
	if err != nil {
		t.Fatal(err)
	}
	fast(t, "three virtual days", func() {
		env.Advance(72*time.Hour - time.Minute)
		if got := l.all(); len(got) != 0 {
			t.Fatalf("before three days: %v", got)
		}
		env.Advance(time.Minute)
	})
	want := []string{"timed out after 72h0m0s, cancelled true, at 2026-01-04T00:00:00Z", "error PromptTimeoutError"}
	if got := l.all(); !slices.Equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
	in, err := env.Store.GetInstance(t.Context(), id)
	if err != nil || in.Status != store.StatusErrored || in.ErrorName != "PromptTimeoutError" {
		t.Errorf("instance = %+v, %v", in, err)
	}
	subs, err := env.Store.ListSubmissions(t.Context(), store.AgentKey{Class: "Triager", Name: "ada"}, store.SubmissionFilter{})
	if err != nil || len(subs) != 1 || subs[0].Status != store.SubmissionAborted {
		t.Errorf("submissions = %+v, %v; want the stalled one aborted", subs, err)
	}
}

// The same workflow with a model that answers completes at once.
func TestPromptAnswered(t *testing.T) {
	t.Parallel()
	l := &log{}
	env := triageEnv(t, l, scripted.New(scripted.Call(think.FinalAnswerTool, `{"title":"Crash on start"}`)))
	id, err := agent.Call0(t.Context(), env.Runtime(), "ada", (*Triager).Triage)
	if err != nil {
		t.Fatal(err)
	}
	env.Settle()
	in, err := env.Store.GetInstance(t.Context(), id)
	if err != nil || in.Status != store.StatusComplete || string(in.Output) != `"Crash on start"` {
		t.Errorf("instance = %+v, %v", in, err)
	}
}
