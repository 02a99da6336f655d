package admin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/store"
)

func TestCountCache(t *testing.T) {
	t.Parallel()
	errDB := errors.New("database is down")
	type call struct {
		key     string
		advance time.Duration // moved on the clock before the call
		fail    bool          // the count fails
		counted bool          // want: this call counted (not served from memory)
	}
	tests := []struct {
		name   string
		maxAge time.Duration
		calls  []call
	}{
		{"fresh counts are served from memory", 2 * time.Second, []call{
			{key: "a", counted: true},
			{key: "a", advance: time.Second},
			{key: "a", advance: 999 * time.Millisecond},
			{key: "a", advance: time.Millisecond, counted: true},
		}},
		{"each filter has its own counts", 2 * time.Second, []call{
			{key: "a", counted: true},
			{key: "b", counted: true},
			{key: "a"},
		}},
		{"a failed count is not kept", 2 * time.Second, []call{
			{key: "a", fail: true, counted: true},
			{key: "a", counted: true},
			{key: "a"},
		}},
		{"negative max age counts every time", -1, []call{
			{key: "a", counted: true},
			{key: "a", counted: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
			c := newCountCache(tt.maxAge, func() time.Time { return now })
			for i, cl := range tt.calls {
				now = now.Add(cl.advance)
				counted := false
				got, err := c.get(t.Context(), cl.key, func(context.Context) (map[store.Status]int, error) {
					counted = true
					if cl.fail {
						return nil, errDB
					}
					return map[store.Status]int{store.StatusComplete: i}, nil
				})
				if counted != cl.counted {
					t.Errorf("call %d (%s): counted = %v, want %v", i, cl.key, counted, cl.counted)
				}
				if cl.fail {
					if !errors.Is(err, errDB) {
						t.Errorf("call %d: err = %v, want %v", i, err, errDB)
					}
					continue
				}
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if cl.counted && (got.counts[store.StatusComplete] != i || !got.at.Equal(now)) {
					t.Errorf("call %d: got %v at %v, want its own count at %v", i, got.counts, got.at, now)
				}
			}
		})
	}
}

// TestCountCacheShares checks that concurrent requests for the same
// counts wait for one count, and that a caller that gives up does not
// cancel it for the others.
func TestCountCacheShares(t *testing.T) {
	t.Parallel()
	c := newCountCache(-1, time.Now)
	release := make(chan struct{})
	var runs atomic.Int32
	count := func(ctx context.Context) (map[store.Status]int, error) {
		runs.Add(1)
		select {
		case <-release:
			return map[store.Status]int{store.StatusQueued: 7}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	quitter, quit := context.WithCancel(t.Context())
	quitErr := make(chan error, 1)
	go func() {
		_, err := c.get(quitter, "k", count)
		quitErr <- err
	}()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	results := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			got, err := c.get(t.Context(), "k", count)
			if err != nil {
				t.Error(err)
				return
			}
			results <- got.counts[store.StatusQueued]
		})
	}
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Errorf("the caller that gave up got %v, want context.Canceled", err)
	}
	time.Sleep(100 * time.Millisecond) // let the others join the count in flight
	close(release)
	wg.Wait()
	close(results)
	for n := range results {
		if n != 7 {
			t.Errorf("a waiter got %d, want 7", n)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("counted %d times, want once", n)
	}
}
