package agenttest_test

import (
	"context"
	"fmt"
	"os"

	"time"

	"agentflow/agent"
	"agentflow/agenttest"
	"agentflow/workflow"
)

// WatchState is a Watch's state: how many checks ran, and the scheduled
// time of the last one.
type WatchState struct {
	Runs int    `json:"runs"`
	Last string `json:"last"`
}

// Watch checks a site on a cron schedule.
type Watch struct{ agent.Agent[WatchState] }

// Begin schedules Check on expr.
func (w *Watch) Begin(ctx context.Context, expr string) (string, error) {
	s, err := w.Schedule(ctx, agent.Cron(expr), "check", nil)
	return s.ID, err
}

// Check is the scheduled callback.
func (w *Watch) Check(ctx context.Context) error {
	run, _ := agent.ScheduleFromContext(ctx)
	s := w.State()
	s.Runs++
	s.Last = run.NextRunAt.Format("15:04")
	return w.SetState(ctx, s)
}

// A cron agent tested on a virtual clock: an hour of five-minute checks in
// milliseconds, then a crash right after a check, and a new process that
// takes over and runs that check again.
func Example() {
	tb := &exampleTB{}
	defer tb.done()
	env := agenttest.New(tb, agenttest.Options{
		Setup: func(eng *workflow.Engine, rt *agent.Runtime) error { // run again by each Restart
			return agent.Register[Watch](rt, "Watch", agent.ClassOptions{})
		},
	})
	ctx := context.Background()
	state := func() WatchState {
		s, err := agent.With(ctx, env.Runtime(), "site", func(ctx context.Context, w *Watch) (WatchState, error) {
			return w.State(), nil
		})
		if err != nil {
			panic(err)
		}
		return s
	}

	if _, err := agent.Call(ctx, env.Runtime(), "site", (*Watch).Begin, "*/5 * * * *"); err != nil {
		panic(err)
	}
	env.Advance(time.Hour) // runs each check at its time, and waits for it
	fmt.Printf("%+v\n", state())

	env.CrashAt(agenttest.AfterSchedule("check")) // kill -9 once the next check's callback returned
	env.Advance(time.Hour)                        // stops at the crash
	fmt.Println("crashed at", env.Clock.Now().Format("15:04"), env.Crashed())
	env.Restart() // a new engine and runtime take over; the 01:05 check runs again
	fmt.Printf("%+v\n", state())
	// Output:
	// {Runs:12 Last:01:00}
	// crashed at 01:05 true
	// {Runs:14 Last:01:05}
}

// exampleTB is what agenttest.New needs of a test, for an Example, which
// has no *testing.T.
type exampleTB struct{ cleanups []func() }

func (e *exampleTB) Helper() {}

func (e *exampleTB) TempDir() string {
	dir, err := os.MkdirTemp("", "agenttest")
	if err != nil {
		panic(err)
	}
	e.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (e *exampleTB) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }

func (e *exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// done runs the cleanups, last first, as a test's end would.
func (e *exampleTB) done() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}
