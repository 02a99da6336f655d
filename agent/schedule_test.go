package agent_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/store"
)

// journal records what scheduled methods did, per agent name (each test
// uses names of its own), outside the instances, which may be evicted.
type journal struct {
	mu     sync.Mutex
	runs   map[string][]string
	errs   map[string][]error
	failed map[string]int // attempts made by Flaky, per agent
}

// uniq makes an agent name unique to one run of a test, so that repeated
// runs (-count) do not share journal entries.
func uniq(name string) string { return fmt.Sprintf("%s-%d", name, seq.Add(1)) }

var seq atomic.Int64

var sched = &journal{runs: map[string][]string{}, errs: map[string][]error{}, failed: map[string]int{}}

func (j *journal) add(name, s string) {
	j.mu.Lock()
	j.runs[name] = append(j.runs[name], s)
	j.mu.Unlock()
}

func (j *journal) get(name string) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.runs[name]...)
}

func (j *journal) errors(name string) []error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]error(nil), j.errs[name]...)
}

// Sched is a class whose methods are scheduled.
type Sched struct{ agent.Agent[struct{}] }

func (s *Sched) Ping(ctx context.Context, n int) error {
	sched.add(s.Name(), fmt.Sprint("ping ", n))
	return nil
}

func (s *Sched) Tick(ctx context.Context) error {
	sched.add(s.Name(), "tick")
	return nil
}

// Flaky fails its first two attempts of each run.
func (s *Sched) Flaky(ctx context.Context, tag string) error {
	sched.mu.Lock()
	sched.failed[s.Name()]++
	n := sched.failed[s.Name()]
	sched.mu.Unlock()
	if n%3 != 0 {
		return fmt.Errorf("flaky attempt %d", n)
	}
	sched.add(s.Name(), "flaky "+tag)
	return nil
}

func (s *Sched) Broken(ctx context.Context) error {
	sched.add(s.Name(), "broken")
	return errors.New("always broken")
}

func (s *Sched) OnError(ctx context.Context, err error) {
	sched.mu.Lock()
	sched.errs[s.Name()] = append(sched.errs[s.Name()], err)
	sched.mu.Unlock()
}

func registerSched(rt *agent.Runtime) { agent.MustRegister[Sched](rt, "Sched", agent.ClassOptions{}) }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func schedEnv(t *testing.T, clock *clockwork.FakeClock, st store.Store) *env {
	return newEnv(t, envOptions{clock: clock, store: st, setup: registerSched,
		rt: agent.Options{ScheduleRetry: agent.Retry{Attempts: 3, MinDelay: 100 * time.Millisecond, MaxDelay: time.Second}}})
}

// on runs fn on the Sched instance name.
func on[R any](t *testing.T, e *env, name string, fn func(ctx context.Context, s *Sched) (R, error)) R {
	t.Helper()
	r, err := agent.With(t.Context(), e.rt, name, fn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// advanceUntil moves the fake clock forward by step until cond holds.
func advanceUntil(t *testing.T, clock *clockwork.FakeClock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (fake clock at %s)", what, clock.Now().Format(time.RFC3339))
		}
		clock.Advance(step)
		time.Sleep(2 * time.Millisecond)
	}
}

func TestScheduleDelayedRunsOnceThenIsGone(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	e := schedEnv(t, clock, nil)
	name := uniq("delayed")
	info := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.After(300*time.Second), "ping", 7)
	})
	if !info.NextRunAt.Equal(t0.Add(300*time.Second)) || info.Kind != store.ScheduleDelayed || !info.Created {
		t.Fatalf("schedule = %+v", info)
	}
	clock.Advance(299 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if runs := sched.get(name); len(runs) != 0 {
		t.Fatalf("ran early: %v", runs)
	}
	advanceUntil(t, clock, 100*time.Millisecond, "the delayed run", func() bool { return len(sched.get(name)) == 1 })
	if got := sched.get(name)[0]; got != "ping 7" {
		t.Fatalf("run = %q, want ping 7", got)
	}
	eventually(t, 5*time.Second, "the one-shot schedule's removal", func() bool {
		return len(mustList(t, e, name, store.ScheduleFilter{})) == 0
	})
	_, err := agent.With(t.Context(), e.rt, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.GetSchedule(ctx, info.ID)
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSchedule after the run: err = %v, want ErrNotFound", err)
	}
	clock.Advance(time.Hour)
	time.Sleep(50 * time.Millisecond)
	if runs := sched.get(name); len(runs) != 1 {
		t.Fatalf("one-shot ran %d times", len(runs))
	}
}

// settle waits until none of the agent's schedules is due at now or
// running, so that a test advancing a fake clock does not outrun them.
func settle(t *testing.T, e *env, name string, now time.Time) {
	t.Helper()
	key := store.AgentKey{Class: "Sched", Name: name}
	eventually(t, 5*time.Second, "the schedules to settle", func() bool {
		ss, err := e.store.ListSchedules(t.Context(), key, store.ScheduleFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if s.Owner != "" || !s.NextRunAt.After(now) {
				return false
			}
		}
		return true
	})
}

func mustList(t *testing.T, e *env, name string, f store.ScheduleFilter) []agent.ScheduleInfo {
	return on(t, e, name, func(ctx context.Context, s *Sched) ([]agent.ScheduleInfo, error) {
		return s.ListSchedules(ctx, f)
	})
}

func TestScheduleCronAndEvery(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0.Add(90 * time.Second)) // 12:01:30
	e := schedEnv(t, clock, nil)
	name := uniq("cron")
	cron := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.Cron("*/5 * * * *"), "ping", 5)
	})
	if want := t0.Add(5 * time.Minute); !cron.NextRunAt.Equal(want) {
		t.Fatalf("cron next = %s, want %s", cron.NextRunAt, want)
	}
	again := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.Cron("*/5 * * * *"), "ping", 5)
	})
	if again.ID != cron.ID || again.Created {
		t.Fatalf("same cron again = %+v, want the existing %s", again, cron.ID)
	}
	other := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.Cron("*/5 * * * *"), "ping", 6)
	})
	if other.ID == cron.ID {
		t.Fatal("a cron with another payload is the same schedule")
	}
	every := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.ScheduleEvery(ctx, 2*time.Minute, "tick", nil)
	})
	if again := on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.ScheduleEvery(ctx, 2*time.Minute, "tick", nil)
	}); again.ID != every.ID {
		t.Fatal("ScheduleEvery is not idempotent")
	}
	// 12:01:30 → 12:11:30: crons at 12:05 and 12:10 (two payloads), ticks
	// at 12:03:30, 12:05:30, … 12:11:30.
	for clock.Now().Before(t0.Add(11*time.Minute + 30*time.Second)) {
		clock.Advance(10 * time.Second)
		settle(t, e, name, clock.Now())
	}
	if n := count(sched.get(name), "tick"); n != 5 {
		t.Fatalf("ticks = %d, want 5", n)
	}
	runs := sched.get(name)
	if count(runs, "ping 5") != 2 || count(runs, "ping 6") != 2 {
		t.Fatalf("cron runs = %v, want ping 5 and ping 6 twice each", runs)
	}
	all := mustList(t, e, name, store.ScheduleFilter{})
	crons := mustList(t, e, name, store.ScheduleFilter{Kind: store.ScheduleCron})
	if len(all) != 3 || len(crons) != 2 {
		t.Fatalf("list: %d schedules, %d crons; want 3 and 2", len(all), len(crons))
	}
	window := mustList(t, e, name, store.ScheduleFilter{From: t0.Add(15 * time.Minute), To: t0.Add(15 * time.Minute)})
	if len(window) != 2 {
		t.Fatalf("schedules due at 12:15: %d, want the 2 crons", len(window))
	}
	ok := on(t, e, name, func(ctx context.Context, s *Sched) (bool, error) { return s.CancelSchedule(ctx, every.ID) })
	again2 := on(t, e, name, func(ctx context.Context, s *Sched) (bool, error) { return s.CancelSchedule(ctx, every.ID) })
	if !ok || again2 {
		t.Fatalf("cancel = %v then %v, want true then false", ok, again2)
	}
}

func TestScheduleCronTimeZone(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC))
	e := schedEnv(t, clock, nil)
	// 01:30 London on the day clocks go forward (2026-03-29) is 01:30 GMT.
	for _, tc := range []struct {
		cron string
		opts agent.ScheduleOptions
	}{
		{"30 1 * * *", agent.ScheduleOptions{TimeZone: "Europe/London"}},
		{"CRON_TZ=Europe/London 30 1 * * *", agent.ScheduleOptions{}},
	} {
		info := on(t, e, "tz", func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
			return s.Schedule(ctx, agent.Cron(tc.cron), "tick", nil, tc.opts)
		})
		if want := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC); !info.NextRunAt.Equal(want) {
			t.Errorf("%s: next = %s, want %s", tc.cron, info.NextRunAt, want)
		}
	}
}

func TestScheduleIdempotentOneShots(t *testing.T) {
	t.Parallel()
	e := schedEnv(t, clockwork.NewFakeClockAt(t0), nil)
	name := uniq("idem")
	mk := func(when agent.When, payload int, idem bool) string {
		return on(t, e, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
			return s.Schedule(ctx, when, "ping", payload, agent.ScheduleOptions{Idempotent: idem})
		}).ID
	}
	if a, b := mk(agent.After(time.Minute), 1, false), mk(agent.After(time.Minute), 1, false); a == b {
		t.Error("non-idempotent delayed schedules share an id")
	}
	if a, b := mk(agent.After(time.Minute), 2, true), mk(agent.After(2*time.Minute), 2, true); a != b {
		t.Error("idempotent delayed schedules with one payload differ")
	}
	if a, b := mk(agent.At(t0.Add(time.Hour)), 3, true), mk(agent.At(t0.Add(time.Hour)), 3, true); a != b {
		t.Error("idempotent timed schedules for one time differ")
	}
	if a, b := mk(agent.At(t0.Add(time.Hour)), 4, true), mk(agent.At(t0.Add(2*time.Hour)), 4, true); a == b {
		t.Error("idempotent timed schedules for two times share an id")
	}
}

func TestScheduleBadInput(t *testing.T) {
	t.Parallel()
	e := schedEnv(t, clockwork.NewFakeClockAt(t0), nil)
	for _, tc := range []struct {
		name    string
		when    agent.When
		method  string
		payload any
		opts    agent.ScheduleOptions
		want    error
		text    string
	}{
		{"invalid cron", agent.Cron("*/5 * *"), "tick", nil, agent.ScheduleOptions{}, agent.ErrInvalidSchedule, `cron "*/5 * *"`},
		{"cron out of range", agent.Cron("61 * * * *"), "tick", nil, agent.ScheduleOptions{}, agent.ErrInvalidSchedule, "61"},
		{"unknown zone", agent.Cron("0 * * * *"), "tick", nil, agent.ScheduleOptions{TimeZone: "Mars/Olympus"}, agent.ErrInvalidSchedule, "Mars/Olympus"},
		{"two zones", agent.Cron("CRON_TZ=UTC 0 * * * *"), "tick", nil, agent.ScheduleOptions{TimeZone: "UTC"}, agent.ErrInvalidSchedule, "give one"},
		{"missing method", agent.After(time.Second), "fly", nil, agent.ScheduleOptions{}, agent.ErrMethodNotFound, "Method fly does not exist"},
		{"wrong payload", agent.After(time.Second), "ping", "seven", agent.ScheduleOptions{}, agent.ErrBadArguments, "argument 1"},
		{"payload for none", agent.After(time.Second), "tick", 1, agent.ScheduleOptions{}, agent.ErrBadArguments, "takes no payload"},
		{"negative delay", agent.After(-time.Second), "tick", nil, agent.ScheduleOptions{}, agent.ErrInvalidSchedule, "negative"},
		{"no time", agent.When{}, "tick", nil, agent.ScheduleOptions{}, agent.ErrInvalidSchedule, "no time given"},
	} {
		_, err := agent.With(t.Context(), e.rt, "bad", func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
			return s.Schedule(ctx, tc.when, tc.method, tc.payload, tc.opts)
		})
		if !errors.Is(err, tc.want) || !contains(err.Error(), tc.text) {
			t.Errorf("%s: err = %v, want %v mentioning %q", tc.name, err, tc.want, tc.text)
		}
	}
	if _, err := agent.With(t.Context(), e.rt, "bad", func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.ScheduleEvery(ctx, 0, "tick", nil)
	}); !errors.Is(err, agent.ErrInvalidSchedule) {
		t.Errorf("zero interval: err = %v", err)
	}
	if got := mustList(t, e, "bad", store.ScheduleFilter{}); len(got) != 0 {
		t.Errorf("bad input stored %d schedules", len(got))
	}
}

func TestScheduleRetries(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	e := schedEnv(t, clock, nil)
	flaky, broken, brokenEvery := uniq("flaky"), uniq("broken"), uniq("broken-every")
	on(t, e, flaky, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.After(time.Second), "flaky", "x")
	})
	oneShot := on(t, e, broken, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.After(time.Second), "broken", nil)
	})
	every := on(t, e, brokenEvery, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.ScheduleEvery(ctx, time.Minute, "broken", nil)
	})
	advanceUntil(t, clock, 50*time.Millisecond, "retried runs", func() bool {
		return len(sched.get(flaky)) == 1 && len(sched.errors(broken)) == 1 && len(sched.errors(brokenEvery)) == 1
	})
	if runs := sched.get(broken); len(runs) != 3 {
		t.Errorf("broken one-shot ran %d times, want 3 attempts", len(runs))
	}
	var se *agent.ScheduleError
	if err := sched.errors(broken)[0]; !errors.As(err, &se) || se.Attempts != 3 || se.Schedule.ID != oneShot.ID {
		t.Errorf("reported error = %v, want a ScheduleError for %s after 3 attempts", err, oneShot.ID)
	}
	if len(sched.errors(flaky)) != 0 {
		t.Errorf("flaky reported errors %v though its third attempt succeeded", sched.errors(flaky))
	}
	eventually(t, 5*time.Second, "the failed one-shot's removal", func() bool {
		return len(mustList(t, e, broken, store.ScheduleFilter{})) == 0
	})
	// The recurring one goes on.
	left := mustList(t, e, brokenEvery, store.ScheduleFilter{})
	if len(left) != 1 || left[0].ID != every.ID || !left[0].NextRunAt.After(every.NextRunAt) {
		t.Fatalf("recurring schedule after failing = %+v", left)
	}
}

func TestSchedulesSurviveRestart(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	e1 := schedEnv(t, clock, nil)
	name := uniq("restart")
	on(t, e1, name, func(ctx context.Context, s *Sched) (agent.ScheduleInfo, error) {
		return s.Schedule(ctx, agent.At(t0.Add(time.Hour)), "ping", 1)
	})
	if err := e1.rt.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e1.eng.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour) // down while it was due
	e2 := schedEnv(t, clock, e1.store)
	eventually(t, 5*time.Second, "the overdue run", func() bool { return len(sched.get(name)) == 1 })
	_ = e2
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}
