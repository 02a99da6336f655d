package model_test

import (
	"context"
	"errors"
	"iter"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/model"
)

// flaky fails with errs[i] on its i-th try (after yielding events[i] text
// events), and succeeds once errs run out.
type flaky struct {
	errs   []error
	events []int
	tries  atomic.Int32
}

func (f *flaky) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	return func(yield func(model.Event, error) bool) {
		i := int(f.tries.Add(1)) - 1
		if i < len(f.errs) {
			for range f.events[i] {
				if !yield(model.Event{Kind: model.EventText, Text: "x"}, nil) {
					return
				}
			}
			yield(model.Event{}, f.errs[i])
			return
		}
		if yield(model.Event{Kind: model.EventText, Text: "ok"}, nil) {
			yield(model.Event{Kind: model.EventFinish, FinishReason: model.FinishStop}, nil)
		}
	}
}

func perr(k model.ErrorKind) error {
	return &model.Error{Kind: k, Provider: "test", Err: errors.New(string(k))}
}

func TestWithRetry(t *testing.T) {
	t.Parallel()
	fast := model.Retry{Attempts: 3, MinDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
	cases := []struct {
		name  string
		f     *flaky
		retry model.Retry
		tries int32
		kind  model.ErrorKind
		plain bool // a non-provider error
		text  string
	}{
		{"rate limit then transient then ok", &flaky{errs: []error{perr(model.ErrorRateLimit), perr(model.ErrorTransient)}, events: []int{0, 0}}, fast, 3, "", false, "ok"},
		{"fatal not retried", &flaky{errs: []error{perr(model.ErrorFatal)}, events: []int{0}}, fast, 1, model.ErrorFatal, false, ""},
		{"overflow not retried", &flaky{errs: []error{perr(model.ErrorContextOverflow)}, events: []int{0}}, fast, 1, model.ErrorContextOverflow, false, ""},
		{"not after events", &flaky{errs: []error{perr(model.ErrorTransient)}, events: []int{2}}, fast, 1, model.ErrorTransient, false, "xx"},
		{"plain error not retried", &flaky{errs: []error{errors.New("boom")}, events: []int{0}}, fast, 1, "", true, ""},
		{"attempts run out", &flaky{errs: []error{perr(model.ErrorTransient), perr(model.ErrorTransient), perr(model.ErrorTransient)}, events: []int{0, 0, 0}}, fast, 3, model.ErrorTransient, false, ""},
		{"no retry configured", &flaky{errs: []error{perr(model.ErrorTransient)}, events: []int{0}}, model.Retry{}, 1, model.ErrorTransient, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := model.Collect(context.Background(), model.WithRetry(tc.f, tc.retry), model.Request{}, nil)
			if got := model.KindOf(err); got != tc.kind || (tc.plain != (err != nil && got == "")) {
				t.Errorf("error = %v, want kind %q", err, tc.kind)
			}
			if n := tc.f.tries.Load(); n != tc.tries {
				t.Errorf("%d tries, want %d", n, tc.tries)
			}
			if r.Text != tc.text {
				t.Errorf("text = %q, want %q", r.Text, tc.text)
			}
		})
	}
}

func TestWithRetryHonoursContext(t *testing.T) {
	t.Parallel()
	f := &flaky{errs: []error{perr(model.ErrorTransient), perr(model.ErrorTransient)}, events: []int{0, 0}}
	p := model.WithRetry(f, model.Retry{Attempts: 5, MinDelay: time.Hour, MaxDelay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := model.Collect(ctx, p, model.Request{}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || model.KindOf(err) != model.ErrorTransient {
		t.Errorf("error = %v, want the deadline and the last provider error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %v", d)
	}
	if n := f.tries.Load(); n != 1 {
		t.Errorf("%d tries", n)
	}
}

func TestWithRetryAfter(t *testing.T) {
	t.Parallel()
	e := &model.Error{Kind: model.ErrorRateLimit, Provider: "test", Err: model.WithRetryAfter(errors.New("slow"), 30*time.Millisecond)}
	f := &flaky{errs: []error{e}, events: []int{0}}
	p := model.WithRetry(f, model.Retry{Attempts: 2, MinDelay: time.Millisecond, MaxDelay: time.Second})
	start := time.Now()
	if _, err := model.Collect(context.Background(), p, model.Request{}, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("retried after %v, before Retry-After", d)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After-Ms": {"150"}, "Retry-After": {"2"}}, 150 * time.Millisecond},
		{http.Header{"Retry-After": {"soon"}}, 0},
		{http.Header{}, 0},
		{nil, 0},
	} {
		if got := model.RetryAfterHeader(tc.h); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestNormalizeArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		invalid  bool
	}{
		{"", "{}", false},
		{"  \n", "{}", false},
		{"null", "{}", false},
		{"{}", "{}", false},
		{` {"a":1} `, `{"a":1}`, false},
		{`{"a":`, "", true},
		{`[1,2]`, "", true},
		{`"x"`, "", true},
		{`{"a":1}{"b":2}`, "", true},
	} {
		got, invalid := model.NormalizeArguments(tc.in)
		if string(got) != tc.want || (invalid != "") != tc.invalid {
			t.Errorf("%q: %q %q", tc.in, got, invalid)
		}
	}
}
