package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"agentflow/store"
)

// workers is how many goroutines the concurrency cases run at once: enough
// to make writes overlap, few enough for a database's connection limit
// when many cases run in parallel.
const workers = 6

// claimConcurrently has workers (owners node-0 … node-N) call claim, three at
// a time, until it returns nothing, and fails the test if any id is claimed
// twice or a claim returns more than three. It returns who claimed what.
func claimConcurrently(t *testing.T, what string, claim func(owner string) ([]string, error)) map[string]string {
	t.Helper()
	var (
		mu      sync.Mutex
		claimed = map[string]string{} // id -> owner
		errs    []error
		wg      sync.WaitGroup
	)
	for w := range workers {
		owner := fmt.Sprintf("node-%d", w)
		wg.Go(func() {
			for {
				got, err := claim(owner)
				mu.Lock()
				if err == nil && len(got) > 3 {
					err = fmt.Errorf("%s(limit 3) claimed %d", what, len(got))
				}
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				for _, id := range got {
					if prev, ok := claimed[id]; ok {
						errs = append(errs, fmt.Errorf("%s claimed by %s and %s", id, prev, owner))
					}
					claimed[id] = owner
				}
				mu.Unlock()
				if len(got) == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return claimed
}

var concurrencyCases = []testCase{
	{"ClaimDueClaimsEachInstanceOnce", func(t *testing.T, s store.Store) {
		const n = 40
		var batch []*store.Instance
		for i := range n {
			batch = append(batch, newInstance(fmt.Sprintf("i%02d", i), at(-time.Duration(i)*time.Second)))
		}
		create(t, s, batch...)

		claimed := claimConcurrently(t, "ClaimDue", func(owner string) ([]string, error) {
			got, err := s.ClaimDue(t.Context(), owner, "", t0, 3)
			ids := make([]string, len(got))
			for i, in := range got {
				ids[i] = in.ID
			}
			return ids, err
		})
		if len(claimed) != n {
			t.Errorf("%d instances claimed, want %d", len(claimed), n)
		}
		for id, owner := range claimed {
			if in := get(t, s, id); in.Owner != owner || in.Fence != 1 {
				t.Errorf("%s: owner %q fence %d, want %s and 1", id, in.Owner, in.Fence, owner)
			}
		}
	}},
	{"WritersDoNotInterfere", func(t *testing.T, s store.Store) {
		const stepsEach = 8
		leases := make([]store.Lease, workers)
		for w := range workers {
			leases[w] = start(t, s, fmt.Sprintf("i%d", w), "node-1")
		}
		errc := make(chan error, workers)
		var wg sync.WaitGroup
		for _, l := range leases {
			wg.Go(func() {
				for i := range stepsEach {
					if _, err := s.SaveStep(t.Context(), l, doStep(i, "x", fmt.Sprint(i)), at(time.Duration(i)*time.Second)); err != nil {
						errc <- err
						return
					}
				}
				errc <- s.Finish(t.Context(), l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Minute))
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Error(err)
			}
		}
		for _, l := range leases {
			if got := steps(t, s, l.InstanceID); len(got) != stepsEach {
				t.Errorf("%s has %d steps, want %d", l.InstanceID, len(got), stepsEach)
			}
			wantStatus(t, l.InstanceID, get(t, s, l.InstanceID).Status, store.StatusComplete)
		}
	}},
	{"CreateSameIDOnce", func(t *testing.T, s store.Store) {
		errc := make(chan error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				in := newInstance("contested", t0)
				in.Workflow = fmt.Sprintf("wf-%d", w)
				errc <- s.CreateInstances(t.Context(), []*store.Instance{in, newInstance(fmt.Sprintf("own-%d", w), t0)})
			})
		}
		wg.Wait()
		close(errc)
		ok := 0
		for err := range errc {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrDuplicateID):
				t.Errorf("CreateInstances: %v, want nil or ErrDuplicateID", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d concurrent creations of one id succeeded, want 1", ok)
		}
		if got := claim(t, s, "node-1", "", t0, 100); len(got) != 2 {
			t.Errorf("%d instances exist, want 2 (the contested one and its batch mate): %q", len(got), instanceIDs(got))
		}
	}},
	{"SendEventRacingSuspend", func(t *testing.T, s store.Store) {
		// Whichever of SendEvent and Suspend commits first, the waiting
		// instance must end up due at once, never left until its deadline.
		const n = 12
		deadline := at(24 * time.Hour)
		now := at(time.Minute)
		leases := make([]store.Lease, n)
		for i := range n {
			leases[i] = start(t, s, fmt.Sprintf("i%02d", i), "node-1")
		}
		errc := make(chan error, 2*n)
		var wg sync.WaitGroup
		for _, l := range leases {
			wg.Go(func() {
				errc <- s.SendEvent(t.Context(), store.Event{InstanceID: l.InstanceID, Type: "approve", Payload: []byte(`1`), CreatedAt: now})
			})
			wg.Go(func() {
				wait := waitStep(0, deadline)
				errc <- s.Suspend(t.Context(), l, store.Suspension{Step: &wait, Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"}, now)
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range leases {
			if in := get(t, s, l.InstanceID); in.Status != store.StatusWaiting || !in.WakeAt.Equal(now) {
				t.Errorf("%s: status %s WakeAt %s, want waiting, due at %s", l.InstanceID, in.Status, fmtTime(in.WakeAt), fmtTime(now))
			}
		}
	}},
	{"CheckpointsRacingRestartAndTerminate", func(t *testing.T, s store.Store) {
		// A fenced write racing a Restart either lands first, and Restart
		// then discards it, or fails with ErrLeaseLost: no step may be left
		// behind by a write of the run Restart ended. Racing a Terminate,
		// it either lands first or fails; the instance ends terminated.
		const n = 12
		restarted := make([]store.Lease, n)
		terminated := make([]store.Lease, n)
		for i := range n {
			restarted[i] = start(t, s, fmt.Sprintf("r%02d", i), "node-1")
			terminated[i] = start(t, s, fmt.Sprintf("t%02d", i), "node-1")
		}
		now := at(time.Minute)
		errc := make(chan error, 4*n)
		fenced := func(err error) error {
			if errors.Is(err, store.ErrLeaseLost) {
				return nil
			}
			return err
		}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, err := s.SaveStep(t.Context(), restarted[i], doStep(0, "a", "1"), now)
				if err == nil {
					sl := sleepStep(1, at(time.Hour))
					err = s.Suspend(t.Context(), restarted[i], store.Suspension{Step: &sl, Status: store.StatusWaiting, WakeAt: at(time.Hour)}, now)
				}
				errc <- fenced(err)
			})
			wg.Go(func() { errc <- s.Restart(t.Context(), restarted[i].InstanceID, now) })
			wg.Go(func() {
				_, err := s.SaveStep(t.Context(), terminated[i], doStep(0, "a", "1"), now)
				if err == nil {
					err = s.Finish(t.Context(), terminated[i], store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, now)
				}
				errc <- fenced(err)
			})
			wg.Go(func() {
				err := s.Terminate(t.Context(), terminated[i].InstanceID, now)
				if errors.Is(err, store.ErrFinished) {
					err = nil // Finish came first
				}
				errc <- err
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range restarted {
			in := get(t, s, l.InstanceID)
			if in.Status != store.StatusQueued || in.Owner != "" || in.WakeAt.IsZero() {
				t.Errorf("%s: status %s owner %q WakeAt %s, want queued and due", l.InstanceID, in.Status, in.Owner, fmtTime(in.WakeAt))
			}
			if got := steps(t, s, l.InstanceID); len(got) != 0 {
				t.Errorf("%s has %d steps after Restart, want none", l.InstanceID, len(got))
			}
		}
		for _, l := range terminated {
			in := get(t, s, l.InstanceID)
			if in.Status != store.StatusTerminated && in.Status != store.StatusComplete {
				t.Errorf("%s: status %s, want terminated or complete", l.InstanceID, in.Status)
			}
			if in.Owner != "" {
				t.Errorf("%s: owner %q after Terminate", l.InstanceID, in.Owner)
			}
		}
	}},
	{"PauseRacingSuspend", func(t *testing.T, s store.Store) {
		// Whichever of Pause and Suspend commits first, the instance ends
		// paused and not claimable.
		const n = 12
		leases := make([]store.Lease, n)
		for i := range n {
			leases[i] = start(t, s, fmt.Sprintf("i%02d", i), "node-1")
		}
		errc := make(chan error, 2*n)
		var wg sync.WaitGroup
		for _, l := range leases {
			wg.Go(func() {
				status, err := s.Pause(t.Context(), l.InstanceID, at(time.Second))
				if err == nil && status != store.StatusPaused && status != store.StatusWaitingForPause {
					err = fmt.Errorf("Pause(%s) = %s", l.InstanceID, status)
				}
				errc <- err
			})
			wg.Go(func() {
				errc <- s.Suspend(t.Context(), l, store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)}, at(time.Second))
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range leases {
			if in := get(t, s, l.InstanceID); in.Status != store.StatusPaused || !in.WakeAt.IsZero() || in.Owner != "" {
				t.Errorf("%s: status %s WakeAt %s owner %q, want paused", l.InstanceID, in.Status, fmtTime(in.WakeAt), in.Owner)
			}
		}
		if got := claim(t, s, "node-2", "", farFuture, 100); len(got) != 0 {
			t.Errorf("paused instances were claimed: %q", instanceIDs(got))
		}
	}},
}
