package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
	"agentflow/workflowtest"
)

// order is the params type of the classes below.
type order struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// newOrderEnv registers class "w", taking an order and returning its item,
// and counts how many times it ran.
func newOrderEnv(t *testing.T, opts workflowtest.Options) (*workflowtest.Env, *atomic.Int32) {
	t.Helper()
	var runs atomic.Int32
	env := newEnv(t, opts, func(ctx context.Context, ev workflow.Event[order], step *workflow.Step) (string, error) {
		return workflow.Do(step, "take", func(ctx context.Context, a workflow.Attempt) (string, error) {
			runs.Add(1)
			return fmt.Sprintf("%d x %s", ev.Payload.Qty, ev.Payload.Item), nil
		})
	})
	return env, &runs
}

// DESIGN §2.2: ids match ^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$; anything else is
// ErrInvalidID naming the id and the rule, and creates nothing.
func TestCreateID(t *testing.T) {
	t.Parallel()
	env, _ := newOrderEnv(t, workflowtest.Options{})
	e := env.Engine()
	const rule = `^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$`
	for _, tc := range []struct {
		id    string
		valid bool
	}{
		{"a", true},
		{"_", true},
		{"0", true},
		{"order-42", true},
		{"Order_42-b", true},
		{"_-_-", true},
		{strings.Repeat("x", 100), true},
		{"9" + strings.Repeat("-", 99), true},
		{"-leading-dash", false},
		{strings.Repeat("x", 101), false},
		{"has space", false},
		{"dot.ted", false},
		{"slash/ed", false},
		{"colon:ed", false},
		{"trailing-newline\n", false},
		{"tab\there", false},
		{"ümlaut", false},
		{"-", false},
	} {
		t.Run(fmt.Sprintf("%q", tc.id), func(t *testing.T) {
			inst, err := e.Create(bg, "w", workflow.CreateOptions{ID: tc.id, Params: order{"pen", 1}})
			if tc.valid {
				if err != nil {
					t.Fatalf("Create(%q) = %v", tc.id, err)
				}
				if inst.ID != tc.id {
					t.Errorf("id = %q, want %q", inst.ID, tc.id)
				}
				if _, err := e.Get(bg, tc.id); err != nil {
					t.Errorf("Get(%q) = %v", tc.id, err)
				}
				return
			}
			shown := fmt.Sprintf("%q", tc.id) // the error quotes the id,
			if len(tc.id) > 80 {              // shortened when long
				shown = `"` + tc.id[:77] + `..."`
			}
			wantErr(t, err, workflow.ErrInvalidID, "id "+shown+": must match "+rule)
			var ve *workflow.ValidationError
			if !errors.As(err, &ve) || ve.Field != "id" {
				t.Errorf("err = %#v, want a *ValidationError on field id", err)
			}
			if inst != nil {
				t.Errorf("Create returned an instance with an error")
			}
			if _, err := env.Store.GetInstance(bg, tc.id); !errors.Is(err, workflow.ErrNotFound) {
				t.Errorf("an instance with the invalid id exists: %v", err)
			}
		})
	}
}

// DESIGN §2.2: without an id one is generated, "wf_" and random characters,
// itself a valid id.
func TestGeneratedIDs(t *testing.T) {
	t.Parallel()
	env, _ := newOrderEnv(t, workflowtest.Options{})
	shape := regexp.MustCompile(`^wf_[0-9a-hjkmnp-tv-z]{24}$`)
	rule := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$`)
	seen := map[string]bool{}
	batch := make([]workflow.CreateOptions, 20)
	for i := range batch {
		batch[i].Params = order{"pen", i}
	}
	insts, err := env.Engine().CreateBatch(bg, "w", batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		insts = append(insts, env.Create("w", order{"cup", i}).Instance)
	}
	for _, inst := range insts {
		if !shape.MatchString(inst.ID) || !rule.MatchString(inst.ID) {
			t.Errorf("generated id %q does not look like wf_<24 random characters>", inst.ID)
		}
		if seen[inst.ID] {
			t.Errorf("id %q generated twice", inst.ID)
		}
		seen[inst.ID] = true
	}
	if id := workflow.NewInstanceID(); !shape.MatchString(id) {
		t.Errorf("NewInstanceID() = %q", id)
	}
}

// DESIGN §2.2: creating an existing id is an error that names it; the
// existing instance is untouched.
func TestCreateDuplicateID(t *testing.T) {
	t.Parallel()
	env, runs := newOrderEnv(t, workflowtest.Options{})
	run := env.CreateWith("w", workflow.CreateOptions{ID: "order-1", Params: order{"pen", 2}})
	wantOutput(t, run.Wait(), "2 x pen")
	before, err := env.Store.GetInstance(bg, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	steps := run.Steps()

	_, err = env.Engine().Create(bg, "w", workflow.CreateOptions{ID: "order-1", Params: order{"car", 9}})
	wantErr(t, err, workflow.ErrDuplicateID, `"order-1"`, "already exists")
	var ie *store.InstanceError
	if !errors.As(err, &ie) || ie.ID != "order-1" {
		t.Errorf("err = %#v, want an InstanceError naming order-1", err)
	}
	wantOutput(t, run.Settle(), "2 x pen")
	after, err := env.Store.GetInstance(bg, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("instance changed:\n%+v\n%+v", before, after)
	}
	if !reflect.DeepEqual(steps, run.Steps()) {
		t.Errorf("steps changed")
	}
	if runs.Load() != 1 {
		t.Errorf("the workflow ran %d times, want 1", runs.Load())
	}
}

// DESIGN §2.2 Create: unknown class, params that do not decode, params over
// the limit and params that are not JSON are refused, naming the value and
// the rule, and create nothing.
func TestCreateErrors(t *testing.T) {
	t.Parallel()
	env, runs := newOrderEnv(t, workflowtest.Options{Limits: workflow.Limits{MaxParamsBytes: 64}})
	e := env.Engine()
	for _, tc := range []struct {
		name   string
		class  string
		params any
		target error
		parts  []string
	}{
		{"unknown class", "nope", order{"pen", 1}, workflow.ErrUnknownWorkflow, []string{`workflow "nope"`, "is not registered"}},
		{"params of the wrong type", "w", "just a string", workflow.ErrInvalidParams, []string{`params "\"just a string\""`, "must decode into workflow_test.order"}},
		{"params with a wrong field type", "w", map[string]any{"qty": "three"}, workflow.ErrInvalidParams, []string{`params "{\"qty\":\"three\"}"`, "must decode into workflow_test.order"}},
		{"params too large", "w", order{strings.Repeat("p", 100), 1}, workflow.ErrTooLarge, []string{"params", "are 119 bytes", "the limit is 64 bytes"}},
		{"params a channel", "w", make(chan int), workflow.ErrNotJSON, []string{"params", "of type chan int"}},
		{"params a func", "w", func() {}, workflow.ErrNotJSON, []string{"params", "of type func()"}},
		{"params with a func inside", "w", map[string]any{"f": func() {}}, workflow.ErrNotJSON, []string{"params", "map[string]interface {}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "bad-" + strings.ReplaceAll(tc.name, " ", "-")
			inst, err := e.Create(bg, tc.class, workflow.CreateOptions{ID: id, Params: tc.params})
			wantErr(t, err, tc.target, tc.parts...)
			if inst != nil {
				t.Error("Create returned an instance with an error")
			}
			var ve *workflow.ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("err is %T, want *ValidationError", err)
			}
			if _, err := env.Store.GetInstance(bg, id); !errors.Is(err, workflow.ErrNotFound) {
				t.Errorf("instance %s was created: %v", id, err)
			}
		})
	}
	if runs.Load() != 0 {
		t.Errorf("the workflow ran %d times", runs.Load())
	}
	// Params within the limit are accepted.
	run := env.Create("w", order{"pen", 3})
	wantOutput(t, run.Wait(), "3 x pen")
}

// DESIGN §2.2 CreateBatch: up to 100, atomic.
func TestCreateBatch(t *testing.T) {
	t.Parallel()
	ids := func(prefix string, n int) []workflow.CreateOptions {
		b := make([]workflow.CreateOptions, n)
		for i := range b {
			b[i] = workflow.CreateOptions{ID: fmt.Sprintf("%s-%d", prefix, i), Params: order{"pen", i}}
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		batch  []workflow.CreateOptions
		target error
		parts  []string
	}{
		{"101 instances", ids("big", 101), workflow.ErrBatchTooLarge, []string{"batch", "has 101 instances", "at most 100"}},
		{"duplicate inside", append(ids("dup", 3), workflow.CreateOptions{ID: "dup-1"}), workflow.ErrDuplicateID, []string{`"dup-1"`}},
		{"duplicate of an existing instance", append(ids("clash", 3), workflow.CreateOptions{ID: "existing"}), workflow.ErrDuplicateID, []string{`"existing"`}},
		{"an invalid id", append(ids("inv", 3), workflow.CreateOptions{ID: "in valid"}), workflow.ErrInvalidID, []string{`"in valid"`}},
		{"invalid params", append(ids("par", 3), workflow.CreateOptions{ID: "par-x", Params: 5}), workflow.ErrInvalidParams, []string{"params", `"5"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, runs := newOrderEnv(t, workflowtest.Options{})
			existing := env.CreateWith("w", workflow.CreateOptions{ID: "existing", Params: order{"cup", 1}})
			wantOutput(t, existing.Wait(), "1 x cup")
			insts, err := env.Engine().CreateBatch(bg, "w", tc.batch)
			wantErr(t, err, tc.target, tc.parts...)
			if insts != nil {
				t.Errorf("CreateBatch returned %d instances with an error", len(insts))
			}
			for _, o := range tc.batch {
				if o.ID == "existing" {
					continue
				}
				if _, err := env.Store.GetInstance(bg, o.ID); !errors.Is(err, workflow.ErrNotFound) {
					t.Errorf("instance %s was created: %v", o.ID, err)
				}
			}
			wantOutput(t, existing.Settle(), "1 x cup")
			if runs.Load() != 1 {
				t.Errorf("workflow ran %d times, want 1 (only the existing instance)", runs.Load())
			}
		})
	}
	t.Run("100 instances", func(t *testing.T) {
		t.Parallel()
		env, runs := newOrderEnv(t, workflowtest.Options{})
		insts, err := env.Engine().CreateBatch(bg, "w", ids("ok", 100))
		if err != nil {
			t.Fatal(err)
		}
		if len(insts) != 100 {
			t.Fatalf("created %d instances", len(insts))
		}
		eventually(t, "all 100 complete", func() bool { return runs.Load() == 100 && env.Engine().Executing() == 0 })
		for i, inst := range insts {
			if inst.ID != fmt.Sprintf("ok-%d", i) {
				t.Errorf("instance %d has id %s", i, inst.ID)
			}
			wantOutput(t, status(t, inst), fmt.Sprintf("%d x pen", i))
		}
	})
}

// Get on a missing id is ErrNotFound naming it.
func TestGetMissing(t *testing.T) {
	t.Parallel()
	env, _ := newOrderEnv(t, workflowtest.Options{})
	inst, err := env.Engine().Get(bg, "nobody-here")
	wantErr(t, err, workflow.ErrNotFound, `"nobody-here"`)
	if inst != nil {
		t.Error("Get returned an instance with an error")
	}
	run := env.Create("w", order{"pen", 1})
	run.Wait()
	got, err := env.Engine().Get(bg, run.ID)
	if err != nil || got.ID != run.ID {
		t.Fatalf("Get(%s) = %v, %v", run.ID, got, err)
	}
	wantOutput(t, status(t, got), "1 x pen")
}

// An instance created before its engine starts is queued, and runs once the
// engine starts.
func TestQueuedUntilStarted(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "q.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := workflow.NewEngine(workflow.Options{Store: st, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(e, "w", workflow.Func[string, string](func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
		return "hello " + ev.Payload, nil
	}))
	inst, err := e.Create(bg, "w", workflow.CreateOptions{Params: "queue"})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, status(t, inst), workflow.StatusQueued)
	if err := e.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(bg)
	eventually(t, "the queued instance completes", func() bool { return status(t, inst).Status == workflow.StatusComplete })
	wantOutput(t, status(t, inst), "hello queue")
}

// SendEvent refuses invalid types, payloads over the limit and payloads
// that are not JSON, storing nothing and leaving the instance waiting.
func TestSendEventErrors(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{Limits: workflow.Limits{MaxEventBytes: 32}}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		return workflow.WaitForEvent[string](step, "go", workflow.WaitOptions{Type: "go"})
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	steps := run.Steps()
	for _, tc := range []struct {
		name, typ string
		payload   any
		target    error
		parts     []string
	}{
		{"empty type", "", "x", workflow.ErrInvalidEvent, []string{"event type", "must match"}},
		{"type with a space", "go now", "x", workflow.ErrInvalidEvent, []string{`event type "go now"`, "must match"}},
		{"type with a slash", "go/now", "x", workflow.ErrInvalidEvent, []string{`event type "go/now"`, "must match"}},
		{"type starting with a dash", "-go", "x", workflow.ErrInvalidEvent, []string{`event type "-go"`}},
		{"type of 101 characters", strings.Repeat("g", 101), "x", workflow.ErrInvalidEvent, []string{`event type "ggg`}},
		{"payload too large", "go", strings.Repeat("x", 40), workflow.ErrTooLarge, []string{"event payload", "is 42 bytes", "the limit is 32 bytes"}},
		{"payload a channel", "go", make(chan int), workflow.ErrNotJSON, []string{"event payload", "of type chan int"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, run.SendEvent(bg, tc.typ, tc.payload), tc.target, tc.parts...)
			if evs, err := env.Store.ListEvents(bg, run.ID); err != nil || len(evs) != 0 {
				t.Errorf("events stored: %+v, %v", evs, err)
			}
			wantStatus(t, status(t, run.Instance), workflow.StatusWaiting)
			if got := run.Steps(); !reflect.DeepEqual(got, steps) {
				t.Errorf("steps changed: %+v", got)
			}
		})
	}
	// Types the rule allows, and a payload at the limit.
	for _, typ := range []string{"go.now", "go:now", "go_now-1", strings.Repeat("g", 100)} {
		if err := run.SendEvent(bg, typ, nil); err != nil {
			t.Errorf("SendEvent(%q) = %v", typ, err)
		}
	}
	if err := run.SendEvent(bg, "go", strings.Repeat("x", 30)); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, run.Settle(), strings.Repeat("x", 30))
}

// DESIGN §2.2: finished instances are removed after the retention period;
// unfinished ones are kept however old.
func TestRetention(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		retention time.Duration // 0: the default
		want      time.Duration
	}{
		{"default 30 days", 0, 30 * 24 * time.Hour},
		{"configured", 48 * time.Hour, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newEnv(t, workflowtest.Options{Retention: tc.retention}, func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
				switch ev.Payload {
				case "fail":
					return "", errors.New("failed on purpose")
				case "sleep":
					if err := step.Sleep("long", 300*24*time.Hour); err != nil {
						return "", err
					}
				case "wait":
					return workflow.WaitForEvent[string](step, "never", workflow.WaitOptions{Type: "never", Timeout: 300 * 24 * time.Hour})
				}
				return ev.Payload, nil
			})
			finished := map[string]workflow.Status{}
			for _, p := range []string{"done", "fail", "sleep"} {
				run := env.CreateWith("w", workflow.CreateOptions{ID: "finished-" + p, Params: p})
				if p == "sleep" {
					run.Settle()
					if err := run.Terminate(bg); err != nil {
						t.Fatal(err)
					}
				}
				finished[run.ID] = run.Settle().Status
			}
			var kept []*workflowtest.Run
			for _, p := range []string{"sleep", "wait"} {
				run := env.CreateWith("w", workflow.CreateOptions{ID: p, Params: p})
				wantStatus(t, run.Settle(), workflow.StatusWaiting)
				kept = append(kept, run)
			}
			paused := env.CreateWith("w", workflow.CreateOptions{ID: "paused", Params: "sleep"})
			paused.Settle()
			if err := paused.Pause(bg); err != nil {
				t.Fatal(err)
			}
			kept = append(kept, paused)
			if !reflect.DeepEqual(finished, map[string]workflow.Status{"finished-done": "complete", "finished-fail": "errored", "finished-sleep": "terminated"}) {
				t.Fatalf("finished = %v", finished)
			}

			exists := func(id string) bool {
				_, err := env.Store.GetInstance(bg, id)
				if err != nil && !errors.Is(err, workflow.ErrNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}
			// Up to the retention nothing may go, however often the sweep runs.
			env.Advance(tc.want - time.Second)
			time.Sleep(20 * time.Millisecond)
			for id := range finished {
				if !exists(id) {
					t.Fatalf("%s removed before its retention of %s", id, tc.want)
				}
			}
			// Past it, the next sweep removes every finished instance.
			env.Advance(2 * time.Second)
			deadline := time.Now().Add(10 * time.Second)
			for {
				gone := 0
				for id := range finished {
					if !exists(id) {
						gone++
					}
				}
				if gone == len(finished) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d finished instances removed after the retention", gone, len(finished))
				}
				env.Advance(time.Hour) // the sweep runs at most hourly
				time.Sleep(5 * time.Millisecond)
			}
			for id := range finished {
				if steps, _ := env.Store.ListSteps(bg, id); len(steps) != 0 {
					t.Errorf("steps of removed %s remain: %v", id, steps)
				}
			}
			for _, run := range kept {
				if !exists(run.ID) {
					t.Errorf("unfinished instance %s was removed", run.ID)
					continue
				}
				if st := status(t, run.Instance); st.Status.Finished() {
					t.Errorf("%s is %s", run.ID, st.Status)
				}
				if len(run.Steps()) != 1 {
					t.Errorf("steps of %s = %v", run.ID, stepNames(run))
				}
			}
		})
	}
}

// DESIGN §2.1: a suspended instance holds no goroutine. Two thousand
// instances sleeping for an hour leave the goroutine count where it was.
//
// Not parallel: it counts the process's goroutines.
func TestSuspendedInstancesHoldNoGoroutine(t *testing.T) {
	const n = 2000
	st, err := sqlite.Open(bg, filepath.Join(t.TempDir(), "g.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(e, "sleeper", workflow.Func[int, int](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
		v, err := workflow.Do(step, "pick", func(ctx context.Context, a workflow.Attempt) (int, error) { return ev.Payload, nil })
		if err != nil {
			return 0, err
		}
		if err := step.Sleep("nap", time.Hour); err != nil {
			return 0, err
		}
		return v, nil
	}))
	if err := e.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(bg)
	baseline := runtime.NumGoroutine()

	for i := 0; i < n; i += 100 {
		batch := make([]workflow.CreateOptions, 100)
		for j := range batch {
			batch[j].Params = i + j
		}
		if _, err := e.CreateBatch(bg, "sleeper", batch); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, fmt.Sprintf("all %d instances sleep", n), func() bool {
		if e.Executing() != 0 {
			return false
		}
		now := time.Now()
		ts, err := st.NextWakeTimes(bg, "", now.Add(2*time.Hour), 2*n)
		if err != nil {
			t.Fatal(err)
		}
		asleep := 0
		for _, w := range ts {
			if w.After(now.Add(30 * time.Minute)) {
				asleep++
			}
		}
		return asleep == n
	})
	const slack = 10
	var got int
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = runtime.NumGoroutine()
		if got <= baseline+slack || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got > baseline+slack {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines with %d instances asleep, baseline %d\n%s", got, n, baseline, buf[:runtime.Stack(buf, true)])
	}
	t.Logf("goroutines: baseline %d, with %d instances asleep %d", baseline, n, got)
}
