package storetest

import (
	"fmt"
	"testing"
	"time"

	"agentflow/store"
)

// finishedKinds make an instance finished in each of the ways there are.
var finishedKinds = []struct {
	status store.Status
	make   func(t *testing.T, s store.Store, id string)
}{
	{store.StatusComplete, func(t *testing.T, s store.Store, id string) {
		finish(t, s, start(t, s, id, "node-1"), store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, t0)
	}},
	{store.StatusErrored, func(t *testing.T, s store.Store, id string) {
		finish(t, s, start(t, s, id, "node-1"), store.Outcome{Status: store.StatusErrored, ErrorName: "E", ErrorMessage: "m"}, t0)
	}},
	{store.StatusTerminated, func(t *testing.T, s store.Store, id string) {
		create(t, s, newInstance(id, t0))
		terminate(t, s, id, t0)
	}},
}

// waitingFor starts instance id and suspends it waiting for an event of
// type typ until deadline. It returns the pending wait step.
func waitingFor(t *testing.T, s store.Store, id, typ string, deadline, now time.Time) store.Step {
	t.Helper()
	l := start(t, s, id, "node-1")
	saveStep(t, s, l, doStep(0, "prepare", `"ready"`), now)
	wait := waitStep(1, deadline)
	suspend(t, s, l, store.Suspension{Step: &wait, Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: typ}, now)
	return wait
}

var sendEventCases = []testCase{
	{"NotFound", func(t *testing.T, s store.Store) {
		err := s.SendEvent(t.Context(), store.Event{InstanceID: "missing", Type: "x", Payload: []byte(`1`), CreatedAt: t0})
		wantErrNaming(t, "SendEvent to a missing instance", err, store.ErrNotFound, "missing")
	}},
	{"Finished", func(t *testing.T, s store.Store) {
		for _, f := range finishedKinds {
			t.Run(string(f.status), func(t *testing.T) {
				id := string(f.status)
				f.make(t, s, id)
				before := snap(t, s, id)
				err := s.SendEvent(t.Context(), store.Event{InstanceID: id, Type: "x", Payload: []byte(`1`), CreatedAt: at(time.Second)})
				wantErrNaming(t, "SendEvent to a "+id+" instance", err, store.ErrFinished, id)
				checkUnchanged(t, "SendEvent to a "+id+" instance", s, before)
			})
		}
	}},
	{"WakesWaitingInstanceForItsType", func(t *testing.T, s store.Store) {
		deadline := at(24 * time.Hour)
		waitingFor(t, s, "a", "approve", deadline, t0)

		send(t, s, "a", "reject", `"no"`, at(time.Minute))
		if in := get(t, s, "a"); !in.WakeAt.Equal(deadline) || in.Status != store.StatusWaiting {
			t.Errorf("after an event of another type: status %s WakeAt %s, want waiting until the deadline",
				in.Status, fmtTime(in.WakeAt))
		}
		send(t, s, "a", "approve", `"yes"`, at(2*time.Minute))
		in := get(t, s, "a")
		if !in.WakeAt.Equal(at(2*time.Minute)) || in.Status != store.StatusWaiting || in.Owner != "" {
			t.Errorf("after the awaited event: status %s WakeAt %s owner %q, want waiting, t0+2m, none",
				in.Status, fmtTime(in.WakeAt), in.Owner)
		}
		l := claimID(t, s, "a", "node-2", at(2*time.Minute))
		ev, err := s.TakeEvent(t.Context(), l, "approve", waitStep(1, deadline), at(2*time.Minute))
		if err != nil || ev == nil || string(ev.Payload) != `"yes"` {
			t.Fatalf("TakeEvent = %+v, %v; want the approve event", ev, err)
		}
	}},
	{"DoesNotWakeSleepingInstance", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		suspend(t, s, l, store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)}, t0)
		send(t, s, "a", "approve", `1`, at(time.Minute))
		if in := get(t, s, "a"); !in.WakeAt.Equal(at(time.Hour)) {
			t.Errorf("a sleeping instance's WakeAt moved to %s", fmtTime(in.WakeAt))
		}
	}},
	{"BuffersWithoutWaking", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("queued", at(time.Hour)))
		start(t, s, "running", "node-1")
		l := start(t, s, "backoff", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusRunning, WakeAt: at(time.Hour)}, t0)
		waitingFor(t, s, "paused", "approve", at(time.Hour), t0)
		pause(t, s, "paused", t0)
		start(t, s, "pausing", "node-1")
		pause(t, s, "pausing", t0)

		for _, id := range []string{"queued", "running", "backoff", "paused", "pausing"} {
			want := get(t, s, id)
			send(t, s, id, "approve", `"yes"`, at(time.Minute))
			got := get(t, s, id)
			want.UpdatedAt = got.UpdatedAt // may or may not change
			checkInstance(t, "SendEvent to a "+id+" instance", got, want)
			evs := events(t, s, id)
			if len(evs) != 1 || evs[0].Type != "approve" || string(evs[0].Payload) != `"yes"` || evs[0].Consumed ||
				!evs[0].CreatedAt.Equal(at(time.Minute)) {
				t.Errorf("events of %s = %+v, want the buffered event", id, evs)
			}
		}
	}},
	{"AfterWakeTheRestAreBuffered", func(t *testing.T, s store.Store) {
		waitingFor(t, s, "a", "approve", at(time.Hour), t0)
		send(t, s, "a", "approve", `1`, at(time.Minute))
		send(t, s, "a", "approve", `2`, at(2*time.Minute))
		l := claimID(t, s, "a", "node-2", at(2*time.Minute))
		for _, want := range []string{`1`, `2`} {
			ev, err := s.TakeEvent(t.Context(), l, "approve", waitStep(1, at(time.Hour)), at(3*time.Minute))
			if err != nil || ev == nil || string(ev.Payload) != want {
				t.Fatalf("TakeEvent = %+v, %v; want payload %s", ev, err, want)
			}
		}
	}},
}

var pauseCases = []testCase{
	{"Executing", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		before := get(t, s, "a")
		wantStatus(t, "Pause", pause(t, s, "a", at(time.Second)), store.StatusWaitingForPause)
		want := *before
		want.Status, want.UpdatedAt = store.StatusWaitingForPause, at(time.Second)
		checkInstance(t, "after Pause", get(t, s, "a"), &want)
		// Asking again changes nothing.
		wantStatus(t, "second Pause", pause(t, s, "a", at(2*time.Second)), store.StatusWaitingForPause)
		wantStatus(t, "after second Pause", get(t, s, "a").Status, store.StatusWaitingForPause)
		// The worker keeps its lease until it stops.
		wantStatus(t, "SaveStep", saveStep(t, s, l, doStep(0, "x", `1`), at(3*time.Second)), store.StatusWaitingForPause)
	}},
	{"OwnedQueued", func(t *testing.T, s store.Store) {
		create(t, s, newOwned("a", "node-1", store.StatusQueued))
		wantStatus(t, "Pause", pause(t, s, "a", at(time.Second)), store.StatusWaitingForPause)
		wantStatus(t, "SaveStep", saveStep(t, s, store.Lease{InstanceID: "a", Owner: "node-1", Fence: 1}, doStep(0, "x", `1`), at(2*time.Second)),
			store.StatusWaitingForPause)
	}},
	{"Suspended", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("queued", at(time.Hour)))
		waitingFor(t, s, "waiting", "approve", at(time.Hour), t0)
		l := start(t, s, "sleeping", "node-1")
		suspend(t, s, l, store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)}, t0)
		l = start(t, s, "backoff", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusRunning, WakeAt: at(time.Hour)}, t0)

		for _, id := range []string{"queued", "waiting", "sleeping", "backoff"} {
			before := get(t, s, id)
			wantStatus(t, "Pause of "+id, pause(t, s, id, at(time.Minute)), store.StatusPaused)
			got := get(t, s, id)
			want := *before
			want.Status, want.PausedAt, want.WakeAt, want.UpdatedAt = store.StatusPaused, at(time.Minute), time.Time{}, at(time.Minute)
			want.WaitingEvent = got.WaitingEvent // not specified while paused
			checkInstance(t, "after Pause of "+id, got, &want)

			wantStatus(t, "second Pause of "+id, pause(t, s, id, at(2*time.Minute)), store.StatusPaused)
			if in := get(t, s, id); !in.PausedAt.Equal(at(time.Minute)) || in.Status != store.StatusPaused {
				t.Errorf("second Pause of %s: status %s PausedAt %s, want paused at t0+1m", id, in.Status, fmtTime(in.PausedAt))
			}
		}
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("paused instances were claimed: %q", instanceIDs(got))
		}
		if got := nextWakes(t, s, "", farFuture, 10); len(got) != 0 {
			t.Errorf("NextWakeTimes lists paused instances: %s", fmtTimes(got))
		}
	}},
	{"Finished", func(t *testing.T, s store.Store) {
		for _, f := range finishedKinds {
			t.Run(string(f.status), func(t *testing.T) {
				id := string(f.status)
				f.make(t, s, id)
				before := snap(t, s, id)
				_, err := s.Pause(t.Context(), id, at(time.Second))
				wantErrNaming(t, "Pause of a "+id+" instance", err, store.ErrFinished, id)
				checkUnchanged(t, "Pause of a "+id+" instance", s, before)
			})
		}
	}},
	{"NotFound", func(t *testing.T, s store.Store) {
		_, err := s.Pause(t.Context(), "missing", t0)
		wantErrNaming(t, "Pause of a missing instance", err, store.ErrNotFound, "missing")
	}},
}

var resumeCases = []testCase{
	{"ShiftsTimersByPausedTime", func(t *testing.T, s store.Store) {
		// a sleeps until t0+1h and b backs off until t0+5m; both are paused
		// at t0+10s and resumed at t0+40s, so both timers move by 30 s.
		la := start(t, s, "a", "node-1")
		done := doStep(0, "x", `1`)
		saveStep(t, s, la, done, t0)
		nap := sleepStep(1, at(time.Hour))
		suspend(t, s, la, store.Suspension{Step: &nap, Status: store.StatusWaiting, WakeAt: nap.WakeAt}, t0)

		lb := start(t, s, "b", "node-1")
		retry := store.Step{Seq: 0, Name: "charge", Kind: store.KindDo, State: store.StepPending, Attempt: 3, WakeAt: at(5 * time.Minute)}
		suspend(t, s, lb, store.Suspension{Step: &retry, Status: store.StatusRunning, WakeAt: retry.WakeAt}, t0)

		// c is not paused: its timers stay put.
		lc := start(t, s, "c", "node-1")
		cNap := sleepStep(0, at(time.Hour))
		suspend(t, s, lc, store.Suspension{Step: &cNap, Status: store.StatusWaiting, WakeAt: cNap.WakeAt}, t0)

		pause(t, s, "a", at(10*time.Second))
		pause(t, s, "b", at(10*time.Second))
		resume(t, s, "a", at(40*time.Second))
		resume(t, s, "b", at(40*time.Second))

		wantA := newOwned("a", "", store.StatusWaiting)
		wantA.WakeAt, wantA.UpdatedAt, wantA.Fence = at(time.Hour+30*time.Second), at(40*time.Second), 1
		checkInstance(t, "a after Resume", get(t, s, "a"), wantA)
		shifted := nap
		shifted.WakeAt = at(time.Hour + 30*time.Second)
		checkSteps(t, "a after Resume", steps(t, s, "a"), []store.Step{stored(done, t0), stored(shifted, t0)})

		wantB := newOwned("b", "", store.StatusRunning)
		wantB.WakeAt, wantB.UpdatedAt, wantB.Fence = at(5*time.Minute+30*time.Second), at(40*time.Second), 1
		checkInstance(t, "b after Resume", get(t, s, "b"), wantB)
		retry.WakeAt = at(5*time.Minute + 30*time.Second)
		checkSteps(t, "b after Resume", steps(t, s, "b"), []store.Step{stored(retry, t0)})

		checkSteps(t, "c (never paused)", steps(t, s, "c"), []store.Step{stored(cNap, t0)})
		if in := get(t, s, "c"); !in.WakeAt.Equal(at(time.Hour)) {
			t.Errorf("c (never paused): WakeAt %s, want t0+1h", fmtTime(in.WakeAt))
		}
	}},
	{"Queued", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", at(time.Minute)))
		pause(t, s, "a", t0)
		resume(t, s, "a", at(time.Hour))
		want := newInstance("a", at(time.Hour+time.Minute))
		want.UpdatedAt = at(time.Hour)
		checkInstance(t, "after Resume", get(t, s, "a"), want)
		if got := claim(t, s, "node-1", "", at(time.Hour+time.Minute-time.Microsecond), 10); len(got) != 0 {
			t.Errorf("claimed before the shifted WakeAt: %q", instanceIDs(got))
		}
		claimID(t, s, "a", "node-1", at(time.Hour+time.Minute))
	}},
	{"EventArrivedWhilePaused", func(t *testing.T, s store.Store) {
		deadline := at(24 * time.Hour)
		waitingFor(t, s, "a", "approve", deadline, t0)
		pause(t, s, "a", at(time.Minute))
		send(t, s, "a", "approve", `"yes"`, at(2*time.Minute))
		if in := get(t, s, "a"); in.Status != store.StatusPaused || !in.WakeAt.IsZero() {
			t.Fatalf("SendEvent woke a paused instance: status %s WakeAt %s", in.Status, fmtTime(in.WakeAt))
		}
		resume(t, s, "a", at(3*time.Minute))
		in := get(t, s, "a")
		if in.Status != store.StatusWaiting || !in.WakeAt.Equal(at(3*time.Minute)) {
			t.Errorf("after Resume: status %s WakeAt %s, want waiting, due at the resume time t0+3m", in.Status, fmtTime(in.WakeAt))
		}
	}},
	{"AfterPendingPause", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		pause(t, s, "a", t0)
		nap := sleepStep(0, at(time.Hour))
		suspend(t, s, l, store.Suspension{Step: &nap, Status: store.StatusWaiting, WakeAt: nap.WakeAt}, at(time.Minute))
		resume(t, s, "a", at(11*time.Minute))
		in := get(t, s, "a")
		if in.Status != store.StatusWaiting || !in.WakeAt.Equal(at(time.Hour+10*time.Minute)) || !in.PausedAt.IsZero() {
			t.Errorf("after Resume: status %s WakeAt %s PausedAt %s, want waiting, t0+1h10m, zero",
				in.Status, fmtTime(in.WakeAt), fmtTime(in.PausedAt))
		}
		if got := steps(t, s, "a"); len(got) != 1 || !got[0].WakeAt.Equal(at(time.Hour+10*time.Minute)) {
			t.Errorf("steps after Resume = %+v, want the sleep shifted to t0+1h10m", got)
		}
	}},
	{"AfterPendingPauseWithBufferedEvent", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "approve", `1`, t0)
		pause(t, s, "a", t0)
		wait := waitStep(0, at(time.Hour))
		suspend(t, s, l, store.Suspension{Step: &wait, Status: store.StatusWaiting, WakeAt: wait.WakeAt, WaitingEvent: "approve"}, at(time.Minute))
		if in := get(t, s, "a"); in.Status != store.StatusPaused || !in.WakeAt.IsZero() {
			t.Fatalf("after Suspend with a pending pause: status %s WakeAt %s, want paused", in.Status, fmtTime(in.WakeAt))
		}
		resume(t, s, "a", at(2*time.Minute))
		if in := get(t, s, "a"); in.Status != store.StatusWaiting || !in.WakeAt.Equal(at(2*time.Minute)) {
			t.Errorf("after Resume: status %s WakeAt %s, want waiting, due at t0+2m", in.Status, fmtTime(in.WakeAt))
		}
	}},
	{"ForcedPause", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusPaused, WakeAt: at(time.Minute)}, at(time.Minute))
		resume(t, s, "a", at(time.Hour))
		in := get(t, s, "a")
		if in.Status != store.StatusRunning || !in.WakeAt.Equal(at(time.Hour)) {
			t.Errorf("after Resume: status %s WakeAt %s, want running, due at t0+1h", in.Status, fmtTime(in.WakeAt))
		}
		claimID(t, s, "a", "node-2", at(time.Hour))
	}},
	{"ForcedPauseWithoutWakeAt", func(t *testing.T, s store.Store) {
		// A paused instance needs no worker until it is resumed, so a
		// paused suspension may leave WakeAt zero; once resumed, the
		// instance must be due, not stranded unowned with no WakeAt.
		l := start(t, s, "a", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusPaused}, at(time.Minute))
		wantStatus(t, "after Suspend", get(t, s, "a").Status, store.StatusPaused)
		resume(t, s, "a", at(time.Hour))
		if in := get(t, s, "a"); in.Status != store.StatusRunning || !in.WakeAt.Equal(at(time.Hour)) {
			t.Errorf("after Resume: status %s WakeAt %s, want running, due at t0+1h", in.Status, fmtTime(in.WakeAt))
		}
		claimID(t, s, "a", "node-2", at(time.Hour))
	}},
	{"CancelsPendingPause", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		pause(t, s, "a", t0)
		resume(t, s, "a", at(time.Second))
		in := get(t, s, "a")
		if in.Status != store.StatusRunning || in.Owner != "node-1" || in.Fence != 1 || !in.WakeAt.IsZero() || !in.PausedAt.IsZero() {
			t.Errorf("after Resume: status %s owner %q fence %d WakeAt %s PausedAt %s, want running, still owned, not paused",
				in.Status, in.Owner, in.Fence, fmtTime(in.WakeAt), fmtTime(in.PausedAt))
		}
		wantStatus(t, "SaveStep", saveStep(t, s, l, doStep(0, "x", `1`), at(2*time.Second)), store.StatusRunning)
		suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: at(time.Hour)}, at(3*time.Second))
		wantStatus(t, "after Suspend", get(t, s, "a").Status, store.StatusWaiting)
	}},
	{"NotPaused", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("queued", at(time.Hour)))
		start(t, s, "running", "node-1")
		waitingFor(t, s, "waiting", "approve", at(time.Hour), t0)
		l := start(t, s, "backoff", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusRunning, WakeAt: at(time.Hour)}, t0)
		for _, f := range finishedKinds {
			f.make(t, s, string(f.status))
		}
		for _, id := range []string{"queued", "running", "waiting", "backoff", "complete", "errored", "terminated"} {
			before := snap(t, s, id)
			err := s.Resume(t.Context(), id, at(time.Minute))
			wantErrNaming(t, "Resume of a "+id+" instance", err, store.ErrNotPaused, id)
			checkUnchanged(t, "Resume of a "+id+" instance", s, before)
		}
		// Resuming twice: the second finds it no longer paused.
		create(t, s, newInstance("twice", t0))
		pause(t, s, "twice", t0)
		resume(t, s, "twice", at(time.Second))
		wantErr(t, "second Resume", s.Resume(t.Context(), "twice", at(2*time.Second)), store.ErrNotPaused)
	}},
	{"NotFound", func(t *testing.T, s store.Store) {
		wantErrNaming(t, "Resume of a missing instance", s.Resume(t.Context(), "missing", t0), store.ErrNotFound, "missing")
	}},
}

var terminateCases = []testCase{
	{"FencesOutTheOwner", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		saveStep(t, s, l, doStep(0, "x", `1`), t0)
		send(t, s, "a", "approve", `1`, t0)
		terminate(t, s, "a", at(time.Minute))
		want := newOwned("a", "", store.StatusTerminated)
		want.FinishedAt, want.UpdatedAt, want.Fence = at(time.Minute), at(time.Minute), 2
		checkInstance(t, "after Terminate", get(t, s, "a"), want)
		if got := steps(t, s, "a"); len(got) != 1 {
			t.Errorf("Terminate changed the steps: %+v", got)
		}
		before := snap(t, s, "a")
		_, err := s.SaveStep(t.Context(), l, doStep(1, "y", `2`), at(2*time.Minute))
		wantErr(t, "SaveStep after Terminate", err, store.ErrLeaseLost)
		wantErr(t, "Finish after Terminate", s.Finish(t.Context(), l, store.Outcome{Status: store.StatusComplete}, at(2*time.Minute)), store.ErrLeaseLost)
		checkUnchanged(t, "writes after Terminate", s, before)
	}},
	{"Unfinished", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("queued", at(time.Hour)))
		waitingFor(t, s, "waiting", "approve", at(time.Hour), t0)
		create(t, s, newInstance("paused", at(time.Hour)))
		pause(t, s, "paused", t0)
		start(t, s, "pausing", "node-1")
		pause(t, s, "pausing", t0)
		for _, id := range []string{"queued", "waiting", "paused", "pausing"} {
			before := get(t, s, id)
			terminate(t, s, id, at(time.Minute))
			in := get(t, s, id)
			if in.Status != store.StatusTerminated || !in.FinishedAt.Equal(at(time.Minute)) || !in.UpdatedAt.Equal(at(time.Minute)) ||
				!in.WakeAt.IsZero() || !in.PausedAt.IsZero() || in.Owner != "" || in.Fence <= before.Fence {
				t.Errorf("%s after Terminate: %+v", id, in)
			}
		}
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("terminated instances were claimed: %q", instanceIDs(got))
		}
	}},
	{"Finished", func(t *testing.T, s store.Store) {
		for _, f := range finishedKinds {
			t.Run(string(f.status), func(t *testing.T) {
				id := string(f.status)
				f.make(t, s, id)
				before := snap(t, s, id)
				err := s.Terminate(t.Context(), id, at(time.Second))
				wantErrNaming(t, "Terminate of a "+id+" instance", err, store.ErrFinished, id)
				checkUnchanged(t, "Terminate of a "+id+" instance", s, before)
			})
		}
	}},
	{"NotFound", func(t *testing.T, s store.Store) {
		wantErrNaming(t, "Terminate of a missing instance", s.Terminate(t.Context(), "missing", t0), store.ErrNotFound, "missing")
	}},
}

var restartCases = []testCase{
	{"Executing", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		l := claimID(t, s, "a", "node-1", t0)
		saveStep(t, s, l, doStep(0, "x", `1`), t0)
		send(t, s, "a", "approve", `"consumed"`, t0)
		send(t, s, "a", "approve", `"kept"`, t0)
		send(t, s, "a", "other", `"kept too"`, t0)
		if ev, err := s.TakeEvent(t.Context(), l, "approve", waitStep(1, at(time.Hour)), t0); err != nil || ev == nil {
			t.Fatalf("TakeEvent = %+v, %v", ev, err)
		}
		kept := events(t, s, "a")[1:]

		restart(t, s, "a", at(time.Minute))
		want := newInstance("a", at(time.Minute))
		want.UpdatedAt, want.Fence, want.Restarts = at(time.Minute), 2, 1
		checkInstance(t, "after Restart", get(t, s, "a"), want)
		checkSteps(t, "after Restart", steps(t, s, "a"), nil)
		checkEvents(t, "after Restart", events(t, s, "a"), kept)

		before := snap(t, s, "a")
		_, err := s.SaveStep(t.Context(), l, doStep(1, "y", `2`), at(2*time.Minute))
		wantErr(t, "SaveStep with the lease from before Restart", err, store.ErrLeaseLost)
		checkUnchanged(t, "SaveStep with the lease from before Restart", s, before)

		claimed := claim(t, s, "node-2", "", at(time.Minute), 10)
		if len(claimed) != 1 || claimed[0].Fence != 3 || claimed[0].Restarts != 1 {
			t.Fatalf("the claim after Restart = %+v, want instance a with fence 3 and Restarts 1", claimed)
		}
		l2 := leaseOf(claimed[0])
		ev, err := s.TakeEvent(t.Context(), l2, "approve", waitStep(0, at(time.Hour)), at(2*time.Minute))
		if err != nil || ev == nil || string(ev.Payload) != `"kept"` {
			t.Errorf("TakeEvent after Restart = %+v, %v; want the unconsumed event", ev, err)
		}
		// Claims, replays and take-overs keep a run's Restarts; each
		// Restart counts.
		if _, err := s.RemoveNode(t.Context(), "node-2", at(3*time.Minute)); err != nil {
			t.Fatalf("RemoveNode: %v", err)
		}
		if again := claim(t, s, "node-3", "", at(3*time.Minute), 10); len(again) != 1 || again[0].Restarts != 1 {
			t.Fatalf("the claim after a take-over = %+v, want instance a with Restarts 1", again)
		}
		restart(t, s, "a", at(4*time.Minute))
		if got := get(t, s, "a").Restarts; got != 2 {
			t.Errorf("Restarts after the second Restart = %d, want 2", got)
		}
	}},
	{"Finished", func(t *testing.T, s store.Store) {
		for _, f := range finishedKinds {
			t.Run(string(f.status), func(t *testing.T) {
				id := string(f.status)
				f.make(t, s, id)
				fence := get(t, s, id).Fence
				restart(t, s, id, at(time.Hour))
				want := newOwned(id, "", store.StatusQueued)
				want.WakeAt, want.UpdatedAt, want.Fence, want.Restarts = at(time.Hour), at(time.Hour), fence+1, 1
				checkInstance(t, "after Restart", get(t, s, id), want)
			})
		}
		n, err := s.DeleteFinished(t.Context(), farFuture, 10)
		if err != nil || n != 0 {
			t.Errorf("DeleteFinished after Restart = %d, %v; want 0 (restarted instances are not finished)", n, err)
		}
	}},
	{"Paused", func(t *testing.T, s store.Store) {
		waitingFor(t, s, "a", "approve", at(time.Hour), t0)
		pause(t, s, "a", t0)
		restart(t, s, "a", at(time.Minute))
		in := get(t, s, "a")
		if in.Status != store.StatusQueued || !in.PausedAt.IsZero() || !in.WakeAt.Equal(at(time.Minute)) || in.WaitingEvent != "" {
			t.Errorf("after Restart: status %s PausedAt %s WakeAt %s WaitingEvent %q, want queued, zero, t0+1m, none",
				in.Status, fmtTime(in.PausedAt), fmtTime(in.WakeAt), in.WaitingEvent)
		}
		// A later Resume finds nothing to resume.
		wantErr(t, "Resume after Restart", s.Resume(t.Context(), "a", at(2*time.Minute)), store.ErrNotPaused)
	}},
	{"PendingPause", func(t *testing.T, s store.Store) {
		start(t, s, "a", "node-1")
		pause(t, s, "a", t0)
		restart(t, s, "a", at(time.Minute))
		in := get(t, s, "a")
		if in.Status != store.StatusQueued || in.Owner != "" || in.Fence != 2 || !in.WakeAt.Equal(at(time.Minute)) {
			t.Errorf("after Restart: status %s owner %q fence %d WakeAt %s, want queued, none, 2, t0+1m",
				in.Status, in.Owner, in.Fence, fmtTime(in.WakeAt))
		}
	}},
	{"NotFound", func(t *testing.T, s store.Store) {
		wantErrNaming(t, "Restart of a missing instance", s.Restart(t.Context(), "missing", t0), store.ErrNotFound, "missing")
	}},
}

var deleteFinishedCases = []testCase{
	{"Cutoff", func(t *testing.T, s store.Store) {
		// old-N finished at t0+N min; "now" finishes exactly at the cutoff.
		for i := 1; i <= 3; i++ {
			id := fmt.Sprintf("old-%d", i)
			l := start(t, s, id, "node-1")
			saveStep(t, s, l, doStep(0, "x", `1`), t0)
			send(t, s, id, "approve", `1`, t0)
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Duration(i)*time.Minute))
		}
		create(t, s, newInstance("old-terminated", t0))
		send(t, s, "old-terminated", "approve", `1`, t0)
		terminate(t, s, "old-terminated", at(time.Minute))
		l := start(t, s, "at-cutoff", "node-1")
		saveStep(t, s, l, doStep(0, "x", `1`), t0)
		finish(t, s, l, store.Outcome{Status: store.StatusErrored, ErrorName: "E"}, at(10*time.Minute))
		// Unfinished instances are never removed, however old.
		create(t, s, newInstance("queued", at(-time.Hour)))
		running := start(t, s, "running", "node-1")
		saveStep(t, s, running, doStep(0, "x", `1`), t0)
		waitingFor(t, s, "paused", "approve", at(time.Hour), t0)
		pause(t, s, "paused", t0)
		kept := []string{"at-cutoff", "queued", "running", "paused"}
		keptBefore := map[string]snapshot{}
		for _, id := range kept {
			keptBefore[id] = snap(t, s, id)
		}

		n, err := s.DeleteFinished(t.Context(), at(10*time.Minute), 100)
		if err != nil || n != 4 {
			t.Fatalf("DeleteFinished = %d, %v; want 4", n, err)
		}
		for _, id := range []string{"old-1", "old-2", "old-3", "old-terminated"} {
			_, err := s.GetInstance(t.Context(), id)
			wantErr(t, "GetInstance of a deleted instance", err, store.ErrNotFound)
			if got := steps(t, s, id); len(got) != 0 {
				t.Errorf("steps of deleted %s remain: %+v", id, got)
			}
			if got := events(t, s, id); len(got) != 0 {
				t.Errorf("events of deleted %s remain: %+v", id, got)
			}
		}
		for _, id := range kept {
			checkUnchanged(t, "DeleteFinished", s, keptBefore[id])
		}
		if n, err := s.DeleteFinished(t.Context(), at(10*time.Minute), 100); err != nil || n != 0 {
			t.Errorf("second DeleteFinished = %d, %v; want 0", n, err)
		}
	}},
	{"Limit", func(t *testing.T, s store.Store) {
		for i := range 5 {
			l := start(t, s, fmt.Sprintf("i%d", i), "node-1")
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Duration(i)*time.Second))
		}
		for _, want := range []int{2, 2, 1, 0} {
			n, err := s.DeleteFinished(t.Context(), at(time.Hour), 2)
			if err != nil || n != want {
				t.Fatalf("DeleteFinished(limit 2) = %d, %v; want %d", n, err, want)
			}
		}
		for i := range 5 {
			_, err := s.GetInstance(t.Context(), fmt.Sprintf("i%d", i))
			wantErr(t, "GetInstance after DeleteFinished", err, store.ErrNotFound)
		}
	}},
	{"Empty", func(t *testing.T, s store.Store) {
		if n, err := s.DeleteFinished(t.Context(), farFuture, 10); err != nil || n != 0 {
			t.Errorf("DeleteFinished of an empty store = %d, %v", n, err)
		}
	}},
	{"IDCanBeReused", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "approve", `"old"`, t0)
		finish(t, s, l, store.Outcome{Status: store.StatusComplete}, t0)
		if n, err := s.DeleteFinished(t.Context(), at(time.Second), 10); err != nil || n != 1 {
			t.Fatalf("DeleteFinished = %d, %v; want 1", n, err)
		}
		create(t, s, newInstance("a", at(time.Second)))
		if got := events(t, s, "a"); len(got) != 0 {
			t.Errorf("a new instance with a deleted one's id sees its events: %+v", got)
		}
	}},
}
