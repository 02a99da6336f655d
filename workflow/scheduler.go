package workflow

import (
	"context"
	"sync/atomic"
	"time"

	"agentflow/internal/wakeq"
)

// claimBatch caps how many instances one ClaimDue takes.
const claimBatch = 128

// scheduler decides when to claim due instances. Its wake-up queue keeps in
// memory only the wake-up times of the next TimerHorizon, loaded from the
// store every PollInterval and added directly when this engine suspends an
// instance, so timers fire on time without a fast poll and without any
// per-instance memory for instances that sleep longer than the horizon.
type scheduler struct {
	e       *Engine
	q       *wakeq.Queue
	starved atomic.Bool // due work was left behind because every slot was busy
}

func newScheduler(e *Engine) *scheduler {
	s := &scheduler{e: e}
	s.q = wakeq.New(wakeq.Options{
		Clock:        e.clock,
		Horizon:      e.opts.TimerHorizon,
		PollInterval: e.opts.PollInterval,
		Load: func(ctx context.Context, until time.Time) ([]time.Time, error) {
			return e.store.NextWakeTimes(ctx, e.service, until, 10_000)
		},
		Claim:       s.claim,
		Ahead:       e.opts.ClaimAhead,
		OnLoadError: func(err error) { e.log.Warn("loading timers failed", "err", err) },
	})
	return s
}

// add notes that something is due at t.
func (s *scheduler) add(t time.Time) { s.q.Add(t) }

// poke makes the scheduler claim due work now.
func (s *scheduler) poke() { s.q.Poke() }

// slotFreed lets work left behind for lack of slots be claimed.
func (s *scheduler) slotFreed() {
	if s.starved.Load() {
		s.q.Poke()
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
		got, err := e.store.ClaimDue(ctx, e.nodeID, e.service, e.clock.Now().Add(e.opts.ClaimAhead), n)
		for range n - len(got) {
			<-e.slots
		}
		// Fence 1 is an instance's first claim: it has no checkpoints to read.
		e.launchClaimed(got)
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
