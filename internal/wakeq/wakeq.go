// Package wakeq keeps the wake-up times of durable timers that fall within a
// short horizon, so that work stored as rows (sleeping workflow instances,
// agent schedules) is claimed on time without a fast poll and without any
// memory for timers further out.
//
// A Queue holds the times of the next Horizon, loaded from the store every
// PollInterval and added directly by the process that stores a new timer.
// Its Run loop calls Claim whenever a time is due or Poke is called.
package wakeq

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// Options configure a Queue. Clock, Load and Claim are required.
type Options struct {
	Clock clockwork.Clock
	// Horizon is how far ahead times are held; default 5 s.
	Horizon time.Duration
	// PollInterval is how often Load is called; default 1 s.
	PollInterval time.Duration
	// Load returns the stored wake-up times due at or before until.
	Load func(ctx context.Context, until time.Time) ([]time.Time, error)
	// Claim claims and starts the work that is due now, or within Ahead.
	Claim func(ctx context.Context)
	// Ahead is how long before a time Claim is called for it: Claim may
	// then take work due that much later, which waits for its time in
	// memory, so that the claim's own latency is not added to the timer's.
	// Default 0: at the time.
	Ahead time.Duration
	// OnLoadError is told when Load fails; it may be nil.
	OnLoadError func(error)
}

// Queue is a min-heap of wake-up times within the horizon.
type Queue struct {
	o Options

	mu    sync.Mutex
	times timeHeap
	known map[int64]struct{} // times in the heap, in Unix microseconds

	wake  chan struct{}
	poked atomic.Bool // Claim was asked for, whatever is due
}

// New returns a Queue; start it with Run.
func New(o Options) *Queue {
	if o.Horizon <= 0 {
		o.Horizon = 5 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	return &Queue{o: o, known: make(map[int64]struct{}), wake: make(chan struct{}, 1)}
}

// Add notes that something is due at t. Times past the horizon are left to
// Load.
func (q *Queue) Add(t time.Time) {
	if t.After(q.o.Clock.Now().Add(q.o.Horizon)) {
		return
	}
	k := t.UnixMicro()
	q.mu.Lock()
	if _, ok := q.known[k]; !ok {
		q.known[k] = struct{}{}
		heap.Push(&q.times, k)
	}
	q.mu.Unlock()
	q.signal()
}

// Poke makes Run call Claim soon, whatever is due.
func (q *Queue) Poke() {
	q.poked.Store(true)
	q.signal()
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// popDue removes the times at or before now and reports whether there were
// any, and when the next one is.
func (q *Queue) popDue(now time.Time) (due bool, next time.Time, ok bool) {
	n := now.UnixMicro()
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.times) > 0 && q.times[0] <= n {
		delete(q.known, heap.Pop(&q.times).(int64))
		due = true
	}
	if len(q.times) > 0 {
		return due, time.UnixMicro(q.times[0]), true
	}
	return due, time.Time{}, false
}

// Run loads and dispatches until ctx ends.
func (q *Queue) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { q.loadLoop(ctx) })
	q.dispatchLoop(ctx)
	wg.Wait()
}

func (q *Queue) dispatchLoop(ctx context.Context) {
	clock := q.o.Clock
	for {
		due, next, ok := q.popDue(clock.Now().Add(q.o.Ahead))
		if q.poked.Swap(false) || due {
			q.o.Claim(ctx)
		}
		if due {
			continue // more may have become due while claiming
		}
		var (
			fire  <-chan time.Time
			timer clockwork.Timer
		)
		if ok {
			timer = clock.NewTimer(next.Add(-q.o.Ahead).Sub(clock.Now()))
			fire = timer.Chan()
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (q *Queue) loadLoop(ctx context.Context) {
	clock := q.o.Clock
	t := clock.NewTimer(q.o.PollInterval) // a timer, not a ticker: a fake clock's ticker fires once per Advance
	defer t.Stop()
	for {
		times, err := q.o.Load(ctx, clock.Now().Add(q.o.Horizon))
		if err != nil && ctx.Err() == nil && q.o.OnLoadError != nil {
			q.o.OnLoadError(err)
		}
		for _, w := range times {
			q.Add(w)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		t.Reset(q.o.PollInterval)
	}
}

// timeHeap is a min-heap of Unix microseconds.
type timeHeap []int64

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *timeHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
