package workflow

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// claimBatch caps how many instances one ClaimDue takes.
const claimBatch = 128

// scheduler decides when to claim due instances. It keeps in memory only the
// wake-up times of the next TimerHorizon, loaded from the store every
// PollInterval and added directly when this engine suspends an instance, so
// timers fire on time without a fast poll and without any per-instance
// memory for instances that sleep longer than the horizon.
type scheduler struct {
	e *Engine

	mu    sync.Mutex
	times timeHeap
	known map[int64]struct{} // times in the heap, in Unix microseconds

	wake    chan struct{}
	starved atomic.Bool // due work was left behind because every slot was busy
}

func newScheduler(e *Engine) *scheduler {
	return &scheduler{e: e, known: make(map[int64]struct{}), wake: make(chan struct{}, 1)}
}

// add notes that something is due at t. Times past the horizon are left to
// the loader.
func (s *scheduler) add(t time.Time) {
	if t.After(s.e.clock.Now().Add(s.e.opts.TimerHorizon)) {
		return
	}
	k := t.UnixMicro()
	s.mu.Lock()
	if _, ok := s.known[k]; !ok {
		s.known[k] = struct{}{}
		heap.Push(&s.times, k)
	}
	s.mu.Unlock()
	s.poke()
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// slotFreed lets work left behind for lack of slots be claimed.
func (s *scheduler) slotFreed() {
	if s.starved.Load() {
		s.poke()
	}
}

// popDue removes the times at or before now and reports whether there were
// any, and when the next one is.
func (s *scheduler) popDue(now time.Time) (due bool, next time.Time, ok bool) {
	n := now.UnixMicro()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.times) > 0 && s.times[0] <= n {
		delete(s.known, heap.Pop(&s.times).(int64))
		due = true
	}
	if len(s.times) > 0 {
		return due, time.UnixMicro(s.times[0]), true
	}
	return due, time.Time{}, false
}

func (s *scheduler) dispatchLoop(ctx context.Context) {
	clock := s.e.clock
	for {
		due, next, ok := s.popDue(clock.Now())
		if due || s.starved.Load() {
			s.claim(ctx)
		}
		if due {
			continue // more may have become due while claiming
		}
		var (
			fire  <-chan time.Time
			timer interface{ Stop() bool }
		)
		if ok {
			t := clock.NewTimer(next.Sub(clock.Now()))
			fire, timer = t.Chan(), t
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// claim claims due instances while there are free slots and due instances.
func (s *scheduler) claim(ctx context.Context) {
	e := s.e
	for !e.stopping.Load() && e.leaseValid(e.clock.Now()) {
		n := 0
		for n < claimBatch && e.tryAcquire() {
			n++
		}
		if n == 0 {
			s.starved.Store(true)
			if e.freeSlots() > 0 {
				continue // a slot was freed before starved was set; its wake-up may be lost
			}
			return
		}
		s.starved.Store(false)
		got, err := e.store.ClaimDue(ctx, e.nodeID, e.service, e.clock.Now(), n)
		for range n - len(got) {
			<-e.slots
		}
		for _, inst := range got {
			// Fence 1 is an instance's first claim: it has no checkpoints to read.
			e.launch(inst, inst.Fence == 1)
		}
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("claiming due instances failed", "err", err)
			}
			return
		}
		if len(got) < n {
			return
		}
	}
}

// loadLoop loads the wake-up times of the next horizon from the store.
func (s *scheduler) loadLoop(ctx context.Context) {
	const limit = 10_000
	e := s.e
	t := e.clock.NewTimer(e.opts.PollInterval) // not a ticker: see nodeLoop
	defer t.Stop()
	for {
		now := e.clock.Now()
		times, err := e.store.NextWakeTimes(ctx, e.service, now.Add(e.opts.TimerHorizon), limit)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("loading timers failed", "err", err)
		}
		for _, w := range times {
			s.add(w)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		t.Reset(e.opts.PollInterval)
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
