package model

import (
	"context"
	"errors"
	"iter"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Retry says how a provider call is retried: at most Attempts tries in all
// (the first included; 0 or 1 means no retry), waiting a jittered
// exponential backoff between MinDelay and MaxDelay between tries.
type Retry struct {
	Attempts int
	MinDelay time.Duration // default 500ms
	MaxDelay time.Duration // default 30s
}

// RetryAfterer is implemented by errors that carry the server's
// Retry-After; WithRetry waits that long (capped at MaxDelay) instead of
// its backoff.
type RetryAfterer interface {
	RetryAfter() time.Duration
}

// WithRetry wraps p so that a turn failing with a retryable *Error (a
// transport error, a 429 or a 5xx; see Error.Retryable) is sent again, but
// only while no event of that turn has been yielded: once the consumer has
// seen part of a turn, an error ends the stream as it is. Waits honour ctx.
func WithRetry(p Provider, r Retry) Provider {
	if r.Attempts <= 1 {
		return p
	}
	if r.MinDelay <= 0 {
		r.MinDelay = 500 * time.Millisecond
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = 30 * time.Second
	}
	if r.MaxDelay < r.MinDelay {
		r.MaxDelay = r.MinDelay
	}
	return &retrying{p: p, r: r}
}

type retrying struct {
	p Provider
	r Retry
}

func (rp *retrying) Stream(ctx context.Context, req Request) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for attempt := 1; ; attempt++ {
			yielded := false
			var failed error
			for ev, err := range rp.p.Stream(ctx, req) {
				if err != nil {
					failed = err
					break
				}
				yielded = true
				if !yield(ev, nil) {
					return
				}
			}
			if failed == nil {
				return
			}
			var pe *Error
			if yielded || attempt >= rp.r.Attempts || !errors.As(failed, &pe) || !pe.Retryable() || ctx.Err() != nil {
				yield(Event{}, failed)
				return
			}
			t := time.NewTimer(rp.delay(attempt, failed))
			select {
			case <-ctx.Done():
				t.Stop()
				yield(Event{}, errors.Join(ctx.Err(), failed))
				return
			case <-t.C:
			}
		}
	}
}

// delay is the wait after the attempt-th failed try: the error's
// Retry-After when it has one, else a jittered exponential backoff
// (between half and all of MinDelay·2^(attempt-1)), within MaxDelay.
func (rp *retrying) delay(attempt int, err error) time.Duration {
	var ra RetryAfterer
	if errors.As(err, &ra) {
		if d := ra.RetryAfter(); d > 0 {
			return min(d, rp.r.MaxDelay)
		}
	}
	d := rp.r.MinDelay
	for i := 1; i < attempt && d < rp.r.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, rp.r.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

// WithRetryAfter wraps err so that WithRetry waits d before the next try.
func WithRetryAfter(err error, d time.Duration) error {
	if d <= 0 {
		return err
	}
	return &retryAfterError{err: err, d: d}
}

type retryAfterError struct {
	err error
	d   time.Duration
}

func (e *retryAfterError) Error() string             { return e.err.Error() }
func (e *retryAfterError) Unwrap() error             { return e.err }
func (e *retryAfterError) RetryAfter() time.Duration { return e.d }

// RetryAfterHeader reads a response's retry-after-ms or Retry-After
// (seconds or an HTTP date); 0 when it has neither.
func RetryAfterHeader(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s > 0 {
			return time.Duration(s * float64(time.Second))
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
