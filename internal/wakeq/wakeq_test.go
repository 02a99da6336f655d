package wakeq

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestQueueClaimsWhenDue(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(start)
	var (
		mu     sync.Mutex
		stored []time.Time // what Load finds
		claims atomic.Int32
	)
	q := New(Options{
		Clock:        clock,
		Horizon:      5 * time.Second,
		PollInterval: time.Second,
		Load: func(_ context.Context, until time.Time) ([]time.Time, error) {
			mu.Lock()
			defer mu.Unlock()
			var out []time.Time
			for _, s := range stored {
				if !s.After(until) {
					out = append(out, s)
				}
			}
			return out, nil
		},
		// Claiming takes the due work, as a store's claim does.
		Claim: func(context.Context) {
			claims.Add(1)
			mu.Lock()
			defer mu.Unlock()
			stored = slices.DeleteFunc(stored, func(s time.Time) bool { return !s.After(clock.Now()) })
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (claims %d)", what, claims.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// A time added directly within the horizon fires when it is due, not before.
	q.Add(start.Add(2 * time.Second))
	clock.BlockUntilContext(ctx, 2) // the dispatch timer and the load timer
	clock.Advance(time.Second)
	time.Sleep(20 * time.Millisecond)
	if n := claims.Load(); n != 0 {
		t.Fatalf("claimed %d times before anything was due", n)
	}
	clock.Advance(time.Second)
	wait("the due claim", func() bool { return claims.Load() == 1 })

	// A stored time beyond the horizon is found by a later load.
	mu.Lock()
	stored = append(stored, start.Add(30*time.Second))
	mu.Unlock()
	for clock.Since(start) < 29*time.Second {
		clock.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	if n := claims.Load(); n != 1 {
		t.Fatalf("claims = %d before the stored time, want 1", n)
	}
	// The loader runs on the fake clock too: keep time moving until it has.
	wait("the stored time's claim", func() bool {
		clock.Advance(100 * time.Millisecond)
		// A load racing the claim may re-add the time once: a spare claim
		// that finds nothing, as with a real store.
		return claims.Load() >= 2
	})
	if late := clock.Since(start.Add(30 * time.Second)); late > 2*time.Second {
		t.Fatalf("the stored time was claimed %s late in fake time", late)
	}

	// Poke claims at once; Add of a future time does not.
	q.Add(clock.Now().Add(time.Hour)) // past the horizon: ignored
	time.Sleep(20 * time.Millisecond)
	before := claims.Load()
	q.Poke()
	wait("the poke", func() bool { return claims.Load() > before })
}
