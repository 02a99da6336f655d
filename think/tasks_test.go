package think_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/model/scripted"
	"agentflow/recur"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

func TestTaskDeclarationErrors(t *testing.T) {
	t.Parallel()
	noop := func(ctx context.Context, self any, r think.TaskRun) error { return nil }
	for _, tc := range []struct {
		name  string
		tasks []think.Task
		want  string
	}{
		{"bad time", []think.Task{{ID: "a", Schedule: "every 25:00", Handler: noop}}, `"25:00"`},
		{"bad zone", []think.Task{{ID: "a", Schedule: "every day at 09:00 in Mars/Olympus", Handler: noop}}, `"Mars/Olympus"`},
		{"zone on interval", []think.Task{{ID: "a", Schedule: "every 5 minutes in Europe/London", Handler: noop}}, "in Europe/London"},
		{"both kinds", []think.Task{{ID: "a", Schedule: "every hour", Prompt: "x", Handler: noop}}, "exactly one of Prompt and Handler"},
		{"duplicate", []think.Task{{ID: "a", Schedule: "every hour", Prompt: "x"}, {ID: "a", Schedule: "every hour", Prompt: "y"}}, "declared twice"},
	} {
		st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "t.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnvWithoutClasses(t, st)
		err = think.Register[Helper](e, "Helper", think.Options{Model: scripted.New(), Tasks: tc.tasks})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %s", tc.name, err, tc.want)
		}
		st.Close()
	}
}

// taskLog records handler runs.
type taskLog struct {
	mu   sync.Mutex
	runs []think.TaskRun
	fail int // fail this many attempts first
}

func (l *taskLog) handler(ctx context.Context, self any, r think.TaskRun) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := self.(*Helper); !ok {
		return errors.New("handler got the wrong self")
	}
	if l.fail > 0 {
		l.fail--
		return errors.New("flaky")
	}
	l.runs = append(l.runs, r)
	return nil
}

func (l *taskLog) get() []think.TaskRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]think.TaskRun(nil), l.runs...)
}

func TestTasksRunAndReconcile(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 28, 23, 50, 0, 0, time.UTC) // the night London's clocks go forward
	clock := clockwork.NewFakeClockAt(start)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "tasks.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := &taskLog{fail: 1}
	tasks := []think.Task{
		{ID: "nightly", Schedule: "every day at 01:30 in Europe/London", Handler: log.handler, Retry: agent.Retry{Attempts: 2, MinDelay: time.Millisecond, MaxDelay: time.Millisecond}},
		{ID: "digest", Schedule: "every 15 minutes", Prompt: "Summarize the news."},
	}
	m := scripted.New(scripted.Say("done"))
	e := newEnvWith(t, envOptions{model: m, store: st, clock: clock, tasks: tasks})
	with(t, e, "tasker", func(ctx context.Context, h *Helper) (int, error) { return 0, nil }) // activate: reconcile
	ids := taskSchedules(t, st, "tasker")
	if len(ids) != 2 {
		t.Fatalf("task schedules after activation = %v, want 2", ids)
	}
	// 23:50 → 02:00Z: digests at 00:00, 00:15, …, 02:00Z; the nightly run at
	// 01:00Z (01:30 London does not exist that night: the gap's end).
	for clock.Since(start) < 2*time.Hour+10*time.Minute {
		clock.Advance(time.Minute)
		settle(t, st, clock, "tasker", clock.Now())
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(log.get()) < 1 || countSubs(t, e, "tasker") < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("runs = %+v, digest submissions = %d", log.get(), countSubs(t, e, "tasker"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	runs := log.get()
	if len(runs) != 1 || !runs[0].ScheduledAt.Equal(time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)) ||
		runs[0].Zone != "Europe/London" || runs[0].Kind != "handler" || runs[0].OccurrenceKey != recur.OccurrenceKey("nightly", runs[0].ScheduledAt) {
		t.Fatalf("nightly runs = %+v", runs)
	}
	subs := with(t, e, "tasker", func(ctx context.Context, h *Helper) ([]think.SubmissionInfo, error) { return h.ListSubmissions(ctx) })
	seen := map[string]bool{}
	for _, s := range subs {
		if !strings.HasPrefix(s.IdempotencyKey, "think-task:Helper:tasker:task:digest:") || seen[s.IdempotencyKey] {
			t.Fatalf("digest submission key %q (duplicate or wrong)", s.IdempotencyKey)
		}
		seen[s.IdempotencyKey] = true
	}

	// Reconciliation: a prompt-only edit keeps the schedule; a schedule
	// edit replaces it; a removed task is cancelled.
	e.stop()
	before := taskSchedules(t, st, "tasker")
	tasks2 := []think.Task{{ID: "digest", Schedule: "every 15 minutes", Prompt: "Summarize the news briefly."}}
	e2 := newEnvWith(t, envOptions{model: m, store: st, clock: clock, tasks: tasks2})
	with(t, e2, "tasker", func(ctx context.Context, h *Helper) (int, error) { return 0, nil })
	after := taskSchedules(t, st, "tasker")
	if len(after) != 1 || after["digest"] != before["digest"] {
		t.Fatalf("after a prompt-only edit and a removal: %v (before %v)", after, before)
	}
	e2.stop()
	tasks3 := []think.Task{{ID: "digest", Schedule: "every 30 minutes", Prompt: "Summarize."}}
	e3 := newEnvWith(t, envOptions{model: m, store: st, clock: clock, tasks: tasks3})
	with(t, e3, "tasker", func(ctx context.Context, h *Helper) (int, error) { return 0, nil })
	if again := taskSchedules(t, st, "tasker"); len(again) != 1 || again["digest"] == before["digest"] {
		t.Fatalf("after a schedule edit: %v, want a new schedule", again)
	}
}

// taskSchedules maps task ids to their schedule ids.
func taskSchedules(t *testing.T, st store.Store, name string) map[string]string {
	t.Helper()
	ss, err := st.ListSchedules(t.Context(), store.AgentKey{Class: "Helper", Name: name}, store.ScheduleFilter{Kind: store.ScheduleRecur})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range ss {
		id := strings.TrimSuffix(strings.TrimPrefix(string(s.Payload), `{"taskId":"`), `"}`)
		out[id] = s.ID
	}
	return out
}

func countSubs(t *testing.T, e *env, name string) int {
	return len(with(t, e, name, func(ctx context.Context, h *Helper) ([]think.SubmissionInfo, error) { return h.ListSubmissions(ctx) }))
}

// newEnvWithoutClasses returns a runtime (not started) to register on.
func newEnvWithoutClasses(t *testing.T, st store.Store) *agent.Runtime {
	t.Helper()
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// settle waits until none of the agent's task schedules is due or running,
// so that the fake clock does not outrun them (missed runs are skipped).
func settle(t *testing.T, st store.Store, clock *clockwork.FakeClock, name string, now time.Time) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss, err := st.ListSchedules(t.Context(), store.AgentKey{Class: "Helper", Name: name}, store.ScheduleFilter{Kind: store.ScheduleRecur})
		if err != nil {
			t.Fatal(err)
		}
		busy := false
		for _, s := range ss {
			busy = busy || s.Owner != "" || !s.NextRunAt.After(now)
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task schedules did not settle at %s", now)
		}
		time.Sleep(2 * time.Millisecond)
		clock.Advance(time.Millisecond) // a handler's retry backoff runs on the virtual clock
	}
}
