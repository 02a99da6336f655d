package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"agentflow/workflow"
	"agentflow/workflowtest"
)

// DESIGN §2.1 Do: retries with a limit, a base delay and a backoff; the
// virtual times at which attempts run show the delays exactly.
func TestDoRetries(t *testing.T) {
	t.Parallel()
	s := time.Second
	for _, tc := range []struct {
		name    string
		retries *workflow.Retries
		want    []time.Duration // when each attempt ran
	}{
		{"constant", &workflow.Retries{Limit: 3, Delay: 10 * s, Backoff: workflow.BackoffConstant}, []time.Duration{0, 10 * s, 20 * s, 30 * s}},
		{"linear", &workflow.Retries{Limit: 3, Delay: 10 * s, Backoff: workflow.BackoffLinear}, []time.Duration{0, 10 * s, 30 * s, 60 * s}},
		{"exponential", &workflow.Retries{Limit: 3, Delay: 10 * s, Backoff: workflow.BackoffExponential}, []time.Duration{0, 10 * s, 30 * s, 70 * s}},
		{"backoff defaults to exponential", &workflow.Retries{Limit: 2, Delay: 10 * s}, []time.Duration{0, 10 * s, 30 * s}},
		{"defaults: 5 retries, 1s, exponential", nil, []time.Duration{0, 1 * s, 3 * s, 7 * s, 15 * s, 31 * s}},
		{"empty Retries means no retry", &workflow.Retries{}, []time.Duration{0}},
		{"zero delay retries at once", &workflow.Retries{Limit: 2}, []time.Duration{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var times list[time.Duration]
			var numbers list[int]
			var runErr atomic.Pointer[workflow.StepError]
			var env *workflowtest.Env
			env = newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				v, err := workflow.DoWith(step, "flaky", workflow.StepConfig{Retries: tc.retries},
					func(ctx context.Context, a workflow.Attempt) (string, error) {
						times.add(elapsed(env))
						numbers.add(a.Number)
						return "", fmt.Errorf("upstream 503 on attempt %d", a.Number)
					})
				var se *workflow.StepError
				if errors.As(err, &se) {
					runErr.Store(se)
				}
				return v, err
			})
			run := env.Create("w", 0)
			st := run.Wait()
			n := len(tc.want)
			wantErrorInfo(t, st, "Error", fmt.Sprintf("upstream 503 on attempt %d", n))
			if got := times.get(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("attempts ran at %v, want %v", got, tc.want)
			}
			wantNumbers := make([]int, n)
			for i := range wantNumbers {
				wantNumbers[i] = i + 1
			}
			if got := numbers.get(); !reflect.DeepEqual(got, wantNumbers) {
				t.Errorf("attempt numbers = %v, want %v", got, wantNumbers)
			}
			se := runErr.Load()
			if se == nil {
				t.Fatal("Run did not get a *StepError")
			}
			want := workflow.StepError{Step: "flaky", Attempts: n, Name: "Error", Message: fmt.Sprintf("upstream 503 on attempt %d", n)}
			if *se != want {
				t.Errorf("StepError = %+v, want %+v", *se, want)
			}
			if !strings.Contains(se.Error(), fmt.Sprintf(`step "flaky" failed after %d attempt(s)`, n)) {
				t.Errorf("StepError text %q does not name the step and attempts", se)
			}
			if got := finishedAfter(t, env, run.ID); got != tc.want[n-1] {
				t.Errorf("instance finished at %s, want %s", got, tc.want[n-1])
			}
		})
	}
}

// A step that succeeds on a later attempt returns that attempt's result.
func TestDoSucceedsAfterRetries(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		return workflow.DoWith(step, "eventually", workflow.StepConfig{
			Retries: &workflow.Retries{Limit: 5, Delay: time.Minute, Backoff: workflow.BackoffConstant},
		}, func(ctx context.Context, a workflow.Attempt) (string, error) {
			if a.Number < 3 {
				return "", errors.New("not yet")
			}
			return fmt.Sprintf("ok on attempt %d", a.Number), nil
		})
	})
	run := env.Create("w", 0)
	wantOutput(t, run.Wait(), "ok on attempt 3")
	if got := finishedAfter(t, env, run.ID); got != 2*time.Minute {
		t.Errorf("finished at %s, want 2m", got)
	}
	steps := run.Steps()
	if len(steps) != 1 || steps[0].State != workflow.StepDone || steps[0].Attempt != 3 || string(steps[0].Result) != `"ok on attempt 3"` {
		t.Errorf("checkpoint = %+v, want done after 3 attempts", steps)
	}
}

// DESIGN §2.1 Do: Timeout bounds each attempt (default 10 min); a timed-out
// attempt fails with a TimeoutError and is retried like any failure.
func TestDoAttemptTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		timeout time.Duration // configured; 0 uses the default
		limit   int           // retries
	}{
		{"explicit timeout", time.Minute, 0},
		{"default timeout is 10 minutes", 0, 0},
		{"timed-out attempt is retried", 30 * time.Second, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			effective := tc.timeout
			if effective == 0 {
				effective = workflow.DefaultStepTimeout
			}
			started := make(chan int, 4)
			ctxErrs := make(chan error, 4)
			var stepErr atomic.Pointer[workflow.StepError]
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				v, err := workflow.DoWith(step, "slow", workflow.StepConfig{
					Timeout: tc.timeout,
					Retries: &workflow.Retries{Limit: tc.limit, Delay: time.Second, Backoff: workflow.BackoffConstant},
				}, func(ctx context.Context, a workflow.Attempt) (string, error) {
					if a.Number > 1 {
						return "fast enough", nil
					}
					if err := ctx.Err(); err != nil { // must not block before the deadline
						return "", err
					}
					started <- a.Number
					<-ctx.Done()
					ctxErrs <- ctx.Err()
					return "", ctx.Err()
				})
				var se *workflow.StepError
				if errors.As(err, &se) {
					stepErr.Store(se)
				}
				return v, err
			})
			run := env.Create("w", 0)
			recv(t, started, "the attempt to start")
			env.Advance(effective - time.Second)
			select {
			case err := <-ctxErrs:
				t.Fatalf("attempt context ended (%v) before its timeout", err)
			case <-time.After(20 * time.Millisecond):
			}
			env.Advance(time.Second)
			if err := recv(t, ctxErrs, "the attempt's context to end"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("attempt ctx.Err() = %v, want context.DeadlineExceeded", err)
			}
			st := run.Wait()
			if tc.limit > 0 {
				wantOutput(t, st, "fast enough")
				if got := finishedAfter(t, env, run.ID); got != effective+time.Second {
					t.Errorf("finished at %s, want %s", got, effective+time.Second)
				}
				return
			}
			msg := `step "slow" attempt ran longer than its timeout of ` + effective.String()
			wantErrorInfo(t, st, "TimeoutError", msg)
			if se := stepErr.Load(); se == nil || *se != (workflow.StepError{Step: "slow", Attempts: 1, Name: "TimeoutError", Message: msg}) {
				t.Errorf("StepError = %+v, want a TimeoutError after 1 attempt", se)
			}
			steps := run.Steps()
			if len(steps) != 1 || steps[0].State != workflow.StepFailed || steps[0].ErrorName != "TimeoutError" || steps[0].Attempt != 1 {
				t.Errorf("checkpoint = %+v, want a failed TimeoutError after 1 attempt", steps)
			}
		})
	}
}

type declinedError struct{ card string }

func (e *declinedError) Error() string     { return "card " + e.card + " declined" }
func (e *declinedError) ErrorName() string { return "CardDeclined" }

// DESIGN §2.1 Do: NonRetryable stops retrying at once; the StepError carries
// the error's name; Run may handle it and complete.
func TestDoNonRetryable(t *testing.T) {
	t.Parallel()
	errTransport := errors.New("connection reset")
	for _, tc := range []struct {
		name     string
		err      error
		handle   bool
		wantName string
		wantMsg  string
	}{
		{"plain error", workflow.NonRetryable(fmt.Errorf("bad request: %w", errTransport)), false, "NonRetryableError", "bad request: connection reset"},
		{"named error", workflow.NonRetryable(&declinedError{"4242"}), false, "CardDeclined", "card 4242 declined"},
		{"handled by Run", workflow.NonRetryable(&declinedError{"4242"}), true, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				_, err := workflow.Do(step, "charge", func(ctx context.Context, a workflow.Attempt) (int, error) {
					calls.Add(1)
					return 0, tc.err
				})
				var se *workflow.StepError
				if !errors.As(err, &se) {
					return "", fmt.Errorf("Do returned %T %v, want *StepError", err, err)
				}
				if tc.handle {
					return "refunded after " + se.Name, nil
				}
				return "", err
			})
			run := env.Create("w", 0)
			st := run.Wait()
			if calls.Load() != 1 {
				t.Errorf("fn ran %d times, want 1 (non-retryable)", calls.Load())
			}
			if got := finishedAfter(t, env, run.ID); got != 0 {
				t.Errorf("finished at %s, want at once", got)
			}
			if tc.handle {
				wantOutput(t, st, "refunded after CardDeclined")
				return
			}
			wantErrorInfo(t, st, tc.wantName, tc.wantMsg)
		})
	}
	if !workflow.IsNonRetryable(fmt.Errorf("wrapped: %w", workflow.NonRetryable(errTransport))) {
		t.Error("IsNonRetryable does not see through wrapping")
	}
	if !errors.Is(workflow.NonRetryable(errTransport), errTransport) {
		t.Error("NonRetryable hides the error it wraps")
	}
	if workflow.NonRetryable(nil) != nil {
		t.Error("NonRetryable(nil) != nil")
	}
}

// DESIGN §2.1/§2.3: fn sees its attempt number and the idempotency key
// "<instance>:<step>:<occurrence>"; occurrences count per name, so a loop
// may reuse a name.
func TestDoAttemptAndIdempotencyKey(t *testing.T) {
	t.Parallel()
	type call struct {
		Key    string
		Number int
	}
	var calls list[call]
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
		sum := 0
		for i := range 3 {
			v, err := workflow.DoWith(step, "item", workflow.StepConfig{
				Retries: &workflow.Retries{Limit: 3, Delay: time.Second},
			}, func(ctx context.Context, a workflow.Attempt) (int, error) {
				calls.add(call{a.IdempotencyKey, a.Number})
				if i == 1 && a.Number < 3 {
					return 0, errors.New("retry me")
				}
				return i * 10, nil
			})
			if err != nil {
				return 0, err
			}
			sum += v
			if i == 0 {
				if _, err := workflow.Do(step, "other", func(ctx context.Context, a workflow.Attempt) (bool, error) {
					calls.add(call{a.IdempotencyKey, a.Number})
					return true, nil
				}); err != nil {
					return 0, err
				}
			}
		}
		return sum, nil
	})
	run := env.CreateWith("w", workflow.CreateOptions{ID: "order-7"})
	wantOutput(t, run.Wait(), 30)
	want := []call{
		{"order-7:item:0", 1},
		{"order-7:other:0", 1},
		{"order-7:item:1", 1}, {"order-7:item:1", 2}, {"order-7:item:1", 3},
		{"order-7:item:2", 1},
	}
	if got := calls.get(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %v\nwant    %v", got, want)
	}
	var got []string
	for _, s := range run.Steps() {
		got = append(got, fmt.Sprintf("%d %s#%d %s attempts=%d", s.Seq, s.Name, s.Occurrence, s.State, s.Attempt))
	}
	wantSteps := []string{"0 item#0 done attempts=1", "1 other#0 done attempts=1", "2 item#1 done attempts=3", "3 item#2 done attempts=1"}
	if !reflect.DeepEqual(got, wantSteps) {
		t.Errorf("checkpoints = %q, want %q", got, wantSteps)
	}
}

type quote struct {
	Price int    `json:"price"`
	Desk  string `json:"desk"`
}

// DESIGN §2.3: a step that returned is never run again; on replay its typed
// result comes from the checkpoint. A failed step returns the same
// StepError on replay, and Run may handle it and complete.
func TestDoReplay(t *testing.T) {
	t.Parallel()
	t.Run("result from checkpoint", func(t *testing.T) {
		t.Parallel()
		var priced, booked atomic.Int32
		var seen list[quote]
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
			q, err := workflow.Do(step, "price", func(ctx context.Context, a workflow.Attempt) (quote, error) {
				n := priced.Add(1) // a different price each time it would run
				return quote{Price: 100 * int(n), Desk: ev.Payload}, nil
			})
			if err != nil {
				return "", err
			}
			seen.add(q)
			if err := step.Sleep("settle", time.Hour); err != nil {
				return "", err
			}
			return workflow.Do(step, "book", func(ctx context.Context, a workflow.Attempt) (string, error) {
				booked.Add(1)
				return fmt.Sprintf("%s@%d", q.Desk, q.Price), nil
			})
		})
		env.StopAfter("price")
		run := env.Create("w", "fx")
		if st := run.Wait(); st.Status != workflow.StatusRunning {
			t.Fatalf("status after stop = %s, want running", st.Status)
		}
		if stops := env.Stops(); len(stops) != 1 || !stops[0].After || stops[0].Step.Name != "price" {
			t.Fatalf("stops = %+v", stops)
		}
		if got := stepNames(run); !reflect.DeepEqual(got, []string{"price/done"}) {
			t.Fatalf("checkpoints before restart = %v", got)
		}
		env.Restart()
		wantOutput(t, run.Wait(), "fx@100")
		if priced.Load() != 1 || booked.Load() != 1 {
			t.Errorf("price ran %d times, book %d times; want 1 and 1", priced.Load(), booked.Load())
		}
		// The stop came before "price" returned; both later executions
		// (after the restart, after the sleep) got the stored value.
		want := []quote{{100, "fx"}, {100, "fx"}}
		if got := seen.get(); !reflect.DeepEqual(got, want) {
			t.Errorf("Run saw %v, want %v (same typed value from the checkpoint)", got, want)
		}
	})
	t.Run("same StepError on replay", func(t *testing.T) {
		t.Parallel()
		var charges atomic.Int32
		var errs list[workflow.StepError]
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
			_, err := workflow.DoWith(step, "charge", workflow.StepConfig{Retries: &workflow.Retries{}},
				func(ctx context.Context, a workflow.Attempt) (string, error) {
					n := charges.Add(1)
					return "", fmt.Errorf("declined (call %d)", n)
				})
			var se *workflow.StepError
			if !errors.As(err, &se) {
				return "", fmt.Errorf("Do returned %T %v, want *StepError", err, err)
			}
			errs.add(*se)
			if err := step.Sleep("before-notify", time.Hour); err != nil {
				return "", err
			}
			return workflow.Do(step, "notify", func(ctx context.Context, a workflow.Attempt) (string, error) {
				return "handled: " + se.Message, nil
			})
		})
		env.StopBefore("notify")
		run := env.Create("w", "x")
		run.Wait()
		env.Restart()
		wantOutput(t, run.Wait(), "handled: declined (call 1)")
		if charges.Load() != 1 {
			t.Errorf("failed step ran %d times, want 1", charges.Load())
		}
		want := workflow.StepError{Step: "charge", Attempts: 1, Name: "Error", Message: "declined (call 1)"}
		got := errs.get()
		if len(got) != 3 { // first run, after the sleep, after the restart
			t.Fatalf("Run saw %d StepErrors, want 3: %+v", len(got), got)
		}
		for i, e := range got {
			if e != want {
				t.Errorf("execution %d saw %+v, want %+v", i, e, want)
			}
		}
	})
}

// A panic in a step is a failed attempt and is retried; a panic in Run
// errors the instance with the name PanicError.
func TestPanics(t *testing.T) {
	t.Parallel()
	t.Run("step panic is retried", func(t *testing.T) {
		t.Parallel()
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
			return workflow.Do(step, "shaky", func(ctx context.Context, a workflow.Attempt) (int, error) {
				if a.Number == 1 {
					var m map[string]int
					m["boom"] = 1 // nil map write panics
				}
				return a.Number, nil
			})
		})
		run := env.Create("w", 0)
		wantOutput(t, run.Wait(), 2)
		if got := finishedAfter(t, env, run.ID); got != time.Second {
			t.Errorf("finished at %s, want 1s (default first retry delay)", got)
		}
	})
	t.Run("step panics every time", func(t *testing.T) {
		t.Parallel()
		var se atomic.Pointer[workflow.StepError]
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
			v, err := workflow.DoWith(step, "doomed", workflow.StepConfig{Retries: &workflow.Retries{Limit: 1}},
				func(ctx context.Context, a workflow.Attempt) (int, error) { panic("boom") })
			var e *workflow.StepError
			if errors.As(err, &e) {
				se.Store(e)
			}
			return v, err
		})
		run := env.Create("w", 0)
		wantErrorInfo(t, run.Wait(), "PanicError", "panic: boom")
		if e := se.Load(); e == nil || e.Attempts != 2 || e.Name != "PanicError" || e.Message != "panic: boom" {
			t.Errorf("StepError = %+v, want PanicError after 2 attempts", e)
		}
	})
	t.Run("panic in Run", func(t *testing.T) {
		t.Parallel()
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
			if _, err := workflow.Do(step, "fine", func(ctx context.Context, a workflow.Attempt) (int, error) { return 1, nil }); err != nil {
				return 0, err
			}
			panic(fmt.Sprintf("kaboom %d", ev.Payload))
		})
		run := env.Create("w", 7)
		st := run.Wait()
		wantErrorInfo(t, st, "PanicError")
		if st.Error.Message != "panic: kaboom 7" {
			t.Errorf("message = %q, want %q", st.Error.Message, "panic: kaboom 7")
		}
		if got := stepNames(run); !reflect.DeepEqual(got, []string{"fine/done"}) {
			t.Errorf("checkpoints = %v", got)
		}
	})
}

// DESIGN §2.1 Sleep/SleepUntil: durable, up to 365 days; a long sleep passes
// at once in virtual time.
func TestSleep(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name  string
		sleep func(ev workflow.Event[int], step *workflow.Step) error
		want  time.Duration // virtual time at which the step after it runs
	}{
		{"3 days", func(ev workflow.Event[int], step *workflow.Step) error { return step.Sleep("nap", 3*day) }, 3 * day},
		{"365 days is the limit", func(ev workflow.Event[int], step *workflow.Step) error { return step.Sleep("nap", 365*day) }, 365 * day},
		{"zero", func(ev workflow.Event[int], step *workflow.Step) error { return step.Sleep("nap", 0) }, 0},
		{"until a time", func(ev workflow.Event[int], step *workflow.Step) error {
			return step.SleepUntil("nap", ev.Timestamp.Add(50*time.Hour))
		}, 50 * time.Hour},
		{"until the past", func(ev workflow.Event[int], step *workflow.Step) error {
			return step.SleepUntil("nap", ev.Timestamp.Add(-time.Hour))
		}, 0},
		{"two sleeps with one name", func(ev workflow.Event[int], step *workflow.Step) error {
			if err := step.Sleep("nap", day); err != nil {
				return err
			}
			return step.Sleep("nap", 2*day)
		}, 3 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var env *workflowtest.Env
			env = newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (time.Duration, error) {
				if err := tc.sleep(ev, step); err != nil {
					return 0, err
				}
				return workflow.Do(step, "after", func(ctx context.Context, a workflow.Attempt) (time.Duration, error) {
					return elapsed(env), nil
				})
			})
			begun := time.Now()
			run := env.Create("w", 0)
			wantOutput(t, run.Wait(), tc.want)
			if real := time.Since(begun); real > 5*time.Second {
				t.Errorf("took %s of real time", real)
			}
			for _, s := range run.Steps() {
				if s.State != workflow.StepDone {
					t.Errorf("checkpoint %s is %s, want done", s.Name, s.State)
				}
			}
		})
	}
}

// Sleeps longer than the limit are refused with ErrInvalidDuration, which
// Run may handle; nothing is stored for them, and the instance replays
// cleanly afterwards.
func TestSleepTooLong(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name  string
		sleep func(ev workflow.Event[int], step *workflow.Step) error
		parts []string
	}{
		{"Sleep", func(ev workflow.Event[int], step *workflow.Step) error { return step.Sleep("nap", 366*day) },
			[]string{`sleep "8784h0m0s"`, "must be at most 8760h0m0s"}},
		{"SleepUntil", func(ev workflow.Event[int], step *workflow.Step) error {
			return step.SleepUntil("nap", ev.Timestamp.Add(400*day))
		}, []string{`sleep until "2027-02-05T00:00:00Z"`, "must be at most 8760h0m0s ahead"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var errs list[error]
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
				err := tc.sleep(ev, step)
				errs.add(err)
				if err == nil {
					return "", errors.New("sleep accepted")
				}
				// Later steps, with a suspension so that Run is replayed.
				if _, err := workflow.Do(step, "a", func(ctx context.Context, a workflow.Attempt) (int, error) { return 1, nil }); err != nil {
					return "", err
				}
				if err := step.Sleep("short", time.Hour); err != nil {
					return "", err
				}
				return "handled", nil
			})
			run := env.Create("w", 0)
			wantOutput(t, run.Wait(), "handled")
			got := errs.get()
			if len(got) != 2 {
				t.Fatalf("Run ran %d times, want 2", len(got))
			}
			for _, err := range got {
				wantErr(t, err, workflow.ErrInvalidDuration, tc.parts...)
				var ve *workflow.ValidationError
				if !errors.As(err, &ve) {
					t.Errorf("err is %T, want *ValidationError", err)
				}
			}
			if got := stepNames(run); !reflect.DeepEqual(got, []string{"a/done", "short/done"}) {
				t.Errorf("checkpoints = %v, want only a and short", got)
			}
		})
	}
}

// DESIGN §2.1 WaitForEvent: events are buffered per type and consumed first
// in, first out by later waits of that type.
func TestWaitForEventBuffering(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) ([]string, error) {
		if err := step.Sleep("first", time.Hour); err != nil {
			return nil, err
		}
		var got []string
		for _, w := range []struct{ name, typ string }{{"w1", "x"}, {"w2", "y"}, {"w3", "x"}} {
			msg, err := step.WaitForEvent(w.name, workflow.WaitOptions{Type: w.typ})
			if err != nil {
				return nil, err
			}
			got = append(got, msg.Type+"="+string(msg.Payload))
		}
		return got, nil
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	for _, e := range []struct {
		typ     string
		payload any
	}{{"x", 1}, {"y", "Y"}, {"x", 2}, {"x", 3}} {
		if err := run.SendEvent(bg, e.typ, e.payload); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, run.Settle(), workflow.StatusWaiting) // still asleep
	wantOutput(t, run.Wait(), []string{"x=1", `y="Y"`, "x=2"})
	if got := finishedAfter(t, env, run.ID); got != time.Hour {
		t.Errorf("finished at %s, want 1h (no waiting for buffered events)", got)
	}
	evs, err := env.Store.ListEvents(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	var consumed []bool
	for _, e := range evs {
		consumed = append(consumed, e.Consumed)
	}
	if want := []bool{true, true, true, false}; !reflect.DeepEqual(consumed, want) {
		t.Errorf("events consumed = %v, want %v (the last x stays buffered)", consumed, want)
	}
}

type approval struct {
	By    string `json:"by"`
	Level int    `json:"level"`
}

// A waiting instance is woken by its own type only, receives the typed
// payload, and does not wait for virtual time to pass.
func TestWaitForEventWakesOnItsType(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (approval, error) {
		return workflow.WaitForEvent[approval](step, "approval", workflow.WaitOptions{Type: "approved"})
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	if err := run.SendEvent(bg, "rejected", approval{By: "bob"}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	if got := stepNames(run); !reflect.DeepEqual(got, []string{"approval/pending"}) {
		t.Errorf("checkpoints = %v", got)
	}
	if err := run.SendEvent(bg, "approved", approval{By: "alice", Level: 2}); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, run.Settle(), approval{By: "alice", Level: 2})
	if got := finishedAfter(t, env, run.ID); got != 0 {
		t.Errorf("finished at %s, want at once", got)
	}
}

// DESIGN §2.1 WaitForEvent: the default timeout is 24 h; a timeout is a
// *WaitTimeoutError matching ErrTimeout that Run may handle, the same on
// every replay.
func TestWaitForEventTimeout(t *testing.T) {
	t.Parallel()
	t.Run("default 24h, handled", func(t *testing.T) {
		t.Parallel()
		var errs list[workflow.WaitTimeoutError]
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
			_, err := step.WaitForEvent("approval", workflow.WaitOptions{Type: "approved"})
			var wt *workflow.WaitTimeoutError
			if !errors.As(err, &wt) || !errors.Is(err, workflow.ErrTimeout) {
				return "", fmt.Errorf("WaitForEvent returned %T %v, want *WaitTimeoutError", err, err)
			}
			errs.add(*wt)
			if err := step.Sleep("grace", time.Hour); err != nil {
				return "", err
			}
			return "escalated after " + wt.Timeout.String(), nil
		})
		run := env.Create("w", 0)
		wantOutput(t, run.Wait(), "escalated after 24h0m0s")
		if got := finishedAfter(t, env, run.ID); got != 25*time.Hour {
			t.Errorf("finished at %s, want 25h", got)
		}
		want := workflow.WaitTimeoutError{Step: "approval", Type: "approved", Timeout: 24 * time.Hour}
		got := errs.get()
		if len(got) != 2 {
			t.Fatalf("Run saw %d timeouts, want 2 (timeout, then replay)", len(got))
		}
		for _, e := range got {
			if e != want {
				t.Errorf("timeout = %+v, want %+v", e, want)
			}
		}
	})
	t.Run("unhandled", func(t *testing.T) {
		t.Parallel()
		env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
			_, err := step.WaitForEvent("approval", workflow.WaitOptions{Type: "approved", Timeout: 2 * time.Hour})
			return "", err
		})
		run := env.Create("w", 0)
		st := run.Wait()
		wantErrorInfo(t, st, "WaitTimeoutError")
		if want := `step "approval": no "approved" event within 2h0m0s`; st.Error.Message != want {
			t.Errorf("message = %q, want %q", st.Error.Message, want)
		}
		if got := finishedAfter(t, env, run.ID); got != 2*time.Hour {
			t.Errorf("finished at %s, want 2h", got)
		}
		if got := stepNames(run); !reflect.DeepEqual(got, []string{"approval/failed"}) {
			t.Errorf("checkpoints = %v", got)
		}
	})
}

// Bad WaitForEvent arguments and undecodable payloads are errors Run sees;
// nothing is stored for a refused wait.
func TestWaitForEventErrors(t *testing.T) {
	t.Parallel()
	var errs list[error]
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		_, err := step.WaitForEvent("bad-type", workflow.WaitOptions{Type: "has space"})
		errs.add(err)
		_, err = step.WaitForEvent("too-long", workflow.WaitOptions{Type: "x", Timeout: 366 * 24 * time.Hour})
		errs.add(err)
		_, err = workflow.WaitForEvent[approval](step, "typed", workflow.WaitOptions{Type: "x"})
		errs.add(err)
		return "done", nil
	})
	run := env.Create("w", 0)
	wantStatus(t, run.Settle(), workflow.StatusWaiting)
	if err := run.SendEvent(bg, "x", "not an object"); err != nil {
		t.Fatal(err)
	}
	wantOutput(t, run.Settle(), "done")
	got := errs.get()
	if len(got) != 5 { // two before the wait suspends, three after the event
		t.Fatalf("got %d errors, want 5: %v", len(got), got)
	}
	for _, i := range []int{0, 2} {
		wantErr(t, got[i], workflow.ErrInvalidEvent, `event type "has space"`, "must match")
		wantErr(t, got[i+1], workflow.ErrInvalidDuration, `wait timeout "8784h0m0s"`, "must be at most 8760h0m0s")
	}
	if got[4] == nil || !strings.Contains(got[4].Error(), `step "typed": decode "x" event payload into workflow_test.approval`) {
		t.Errorf("typed decode error = %v", got[4])
	}
	if got := stepNames(run); !reflect.DeepEqual(got, []string{"typed/done"}) {
		t.Errorf("checkpoints = %v, want only the valid wait", got)
	}
}

// DESIGN §2.1: a step whose name or kind differs from the checkpoint at its
// position fails the instance with a NonDeterminismError naming both.
func TestNonDeterminism(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		changed     func(step *workflow.Step) error
		want, saved string
	}{
		{"renamed step", func(step *workflow.Step) error {
			_, err := workflow.Do(step, "c", func(ctx context.Context, a workflow.Attempt) (int, error) { return 3, nil })
			return err
		}, `Do("c")`, `Do("b")`},
		{"other kind", func(step *workflow.Step) error { return step.Sleep("b", time.Minute) }, `Sleep("b")`, `Do("b")`},
		{"wait instead", func(step *workflow.Step) error {
			_, err := step.WaitForEvent("b", workflow.WaitOptions{Type: "b"})
			return err
		}, `WaitForEvent("b")`, `Do("b")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var changed atomic.Bool
			var ran atomic.Int32
			env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
				if _, err := workflow.Do(step, "a", func(ctx context.Context, a workflow.Attempt) (int, error) { return 1, nil }); err != nil {
					return 0, err
				}
				if changed.Load() { // the code was changed between runs
					if err := tc.changed(step); err != nil {
						return 0, err
					}
					ran.Add(1)
					return 0, nil
				}
				return workflow.Do(step, "b", func(ctx context.Context, a workflow.Attempt) (int, error) { return 2, nil })
			})
			env.StopAfter("b")
			run := env.Create("w", 0)
			run.Wait()
			changed.Store(true)
			env.Restart()
			st := run.Wait()
			wantErrorInfo(t, st, "NonDeterminismError", tc.want, tc.saved)
			var err error = &workflow.NonDeterminismError{Position: 1, Want: tc.want, Stored: tc.saved}
			if st.Error.Message != err.Error() {
				t.Errorf("message = %q, want %q", st.Error.Message, err.Error())
			}
			var nd *workflow.NonDeterminismError
			if !errors.Is(err, workflow.ErrNonDeterministic) || !errors.As(err, &nd) || workflow.ErrorName(err) != st.Error.Name {
				t.Errorf("NonDeterminismError does not match ErrNonDeterministic or its name")
			}
			if ran.Load() != 0 {
				t.Error("Run went on past the mismatch")
			}
			if got := stepNames(run); !reflect.DeepEqual(got, []string{"a/done", "b/done"}) {
				t.Errorf("checkpoints = %v, want them unchanged", got)
			}
		})
	}
}

// DESIGN §2.2 limits on steps: result size, JSON, step names, step count.
// A refused step stores nothing.
func TestStepLimits(t *testing.T) {
	t.Parallel()
	type ch chan int
	for _, tc := range []struct {
		name   string
		limits workflow.Limits
		bad    func(step *workflow.Step) error // runs after one good step
		// the instance errors with this name and message parts
		errName string
		parts   []string
		steps   []string // checkpoints afterwards
	}{
		{"result too large", workflow.Limits{MaxResultBytes: 64}, func(step *workflow.Step) error {
			_, err := workflow.Do(step, "big", func(ctx context.Context, a workflow.Attempt) (string, error) {
				return strings.Repeat("x", 100), nil
			})
			return err
		}, "NonRetryableError", []string{"result is 102 bytes", workflow.ErrTooLarge.Error(), "the limit is 64 bytes"}, []string{"ok/done", "big/failed"}},
		{"result not JSON", workflow.Limits{}, func(step *workflow.Step) error {
			_, err := workflow.Do(step, "chan", func(ctx context.Context, a workflow.Attempt) (ch, error) {
				return make(ch), nil
			})
			return err
		}, "NonRetryableError", []string{"workflow_test.ch", workflow.ErrNotJSON.Error()}, []string{"ok/done", "chan/failed"}},
		{"result is a func", workflow.Limits{}, func(step *workflow.Step) error {
			_, err := workflow.Do(step, "func", func(ctx context.Context, a workflow.Attempt) (func(), error) {
				return func() {}, nil
			})
			return err
		}, "NonRetryableError", []string{"func()", workflow.ErrNotJSON.Error()}, []string{"ok/done", "func/failed"}},
		{"empty step name", workflow.Limits{}, func(step *workflow.Step) error {
			_, err := workflow.Do(step, "", func(ctx context.Context, a workflow.Attempt) (int, error) { return 1, nil })
			return err
		}, "Error", []string{"step name", "must be 1 to 256 characters"}, []string{"ok/done"}},
		{"step name of 257 characters", workflow.Limits{}, func(step *workflow.Step) error {
			return step.Sleep(strings.Repeat("n", 257), time.Second)
		}, "Error", []string{`step name "nnnn`, "must be 1 to 256 characters"}, []string{"ok/done"}},
		{"step name of 257 two-byte characters", workflow.Limits{}, func(step *workflow.Step) error {
			return step.Sleep(strings.Repeat("é", 257), time.Second)
		}, "Error", []string{`step name "` + strings.Repeat("é", 77) + `..."`, "must be 1 to 256 characters"}, []string{"ok/done"}},
		{"configured step name limit", workflow.Limits{MaxStepName: 4}, func(step *workflow.Step) error {
			_, err := step.WaitForEvent("abcde", workflow.WaitOptions{Type: "x"})
			return err
		}, "Error", []string{`step name "abcde"`, "must be 1 to 4 characters"}, []string{"ok/done"}},
		{"too many steps", workflow.Limits{MaxSteps: 3}, func(step *workflow.Step) error {
			for i := range 5 {
				if _, err := workflow.Do(step, "loop", func(ctx context.Context, a workflow.Attempt) (int, error) { return i, nil }); err != nil {
					return err
				}
			}
			return nil
		}, "Error", []string{`step "loop" would be step 4`, workflow.ErrTooManySteps.Error(), "the limit is 3 steps"}, []string{"ok/done", "loop/done", "loop/done"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var errs list[error]
			env := newEnv(t, workflowtest.Options{Limits: tc.limits}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
				if _, err := workflow.Do(step, "ok", func(ctx context.Context, a workflow.Attempt) (int, error) { return 1, nil }); err != nil {
					return 0, err
				}
				err := tc.bad(step)
				errs.add(err)
				return 0, err
			})
			run := env.Create("w", 0)
			st := run.Wait()
			wantErrorInfo(t, st, tc.errName, tc.parts...)
			if !utf8.ValidString(st.Error.Message) {
				t.Errorf("error message is not valid UTF-8: %q", st.Error.Message)
			}
			if got := stepNames(run); !reflect.DeepEqual(got, tc.steps) {
				t.Errorf("checkpoints = %v, want %v", got, tc.steps)
			}
			if tc.errName != "NonRetryableError" {
				if errs.len() != 0 {
					t.Errorf("Run saw %v; the instance should fail at the step", errs.get())
				}
				return
			}
			// Result errors reach Run as a StepError after one attempt.
			var se *workflow.StepError
			if got := errs.get(); len(got) != 1 || !errors.As(got[0], &se) || se.Attempts != 1 {
				t.Errorf("Run saw %v, want one StepError after 1 attempt", got)
			}
			for _, s := range run.Steps() {
				if s.State == workflow.StepFailed && s.Result != nil {
					t.Errorf("failed step %s stored a result %s", s.Name, s.Result)
				}
			}
		})
	}
}

// Step names may be up to 256 characters, not bytes.
func TestStepNameLength(t *testing.T) {
	t.Parallel()
	names := []string{strings.Repeat("a", 256), strings.Repeat("é", 256), "x"}
	env := newEnv(t, workflowtest.Options{}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
		for i, n := range names {
			if _, err := workflow.Do(step, n, func(ctx context.Context, a workflow.Attempt) (int, error) { return i, nil }); err != nil {
				return 0, err
			}
		}
		return len(names), nil
	})
	run := env.Create("w", 0)
	wantOutput(t, run.Wait(), 3)
}

// The output of Run is bounded like a step result.
func TestOutputTooLarge(t *testing.T) {
	t.Parallel()
	env := newEnv(t, workflowtest.Options{Limits: workflow.Limits{MaxResultBytes: 10}}, func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		return "this output is longer than ten bytes", nil
	})
	run := env.Create("w", 0)
	wantErrorInfo(t, run.Wait(), "Error", "output is 38 bytes", workflow.ErrTooLarge.Error(), "the limit is 10 bytes")
}

func TestInvalidStepConfigFailsTheInstance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  workflow.StepConfig
		want string
	}{
		{"unknown backoff", workflow.StepConfig{Retries: &workflow.Retries{Limit: 1, Backoff: "fibonacci"}}, `backoff of step "s": must be constant, linear or exponential, got "fibonacci"`},
		{"negative limit", workflow.StepConfig{Retries: &workflow.Retries{Limit: -1}}, `retry limit of step "s": must not be negative`},
		{"negative timeout", workflow.StepConfig{Timeout: -time.Second}, `timeout of step "s": must not be negative`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := workflowtest.New(t, workflowtest.Options{})
			var ran atomic.Bool
			workflowtest.Register(env, "w", workflow.Func[int, int](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
				return workflow.DoWith(step, "s", tc.cfg, func(ctx context.Context, a workflow.Attempt) (int, error) {
					ran.Store(true)
					return 1, nil
				})
			}))
			st := env.Create("w", 0).Wait()
			if st.Status != workflow.StatusErrored || st.Error == nil || !strings.Contains(st.Error.Message, tc.want) {
				t.Fatalf("status = %+v, want errored with %q", st, tc.want)
			}
			if ran.Load() {
				t.Error("the step function ran despite its invalid config")
			}
		})
	}
}
