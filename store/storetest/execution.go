package storetest

import (
	"testing"
	"time"

	"agentflow/store"
)

var saveStepCases = []testCase{
	{"InsertAllFields", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		st := store.Step{Seq: 0, Name: "charge", Occurrence: 3, Kind: store.KindDo, State: store.StepFailed,
			Attempt: 6, Result: []byte(`{"partial":true}`), ErrorName: "CardDeclined", ErrorMessage: "no funds",
			WakeAt: at(time.Hour)}
		status := saveStep(t, s, l, st, at(time.Second))
		wantStatus(t, "SaveStep", status, store.StatusRunning)
		checkSteps(t, "after SaveStep", steps(t, s, "a"), []store.Step{stored(st, at(time.Second))})
		// UpdatedAt is not checked: a checkpoint is timed by its step row.
		if in := get(t, s, "a"); in.Owner != "node-1" || in.Fence != 1 || in.Status != store.StatusRunning {
			t.Errorf("instance after SaveStep: Owner %q Fence %d Status %s, want node-1, 1, running", in.Owner, in.Fence, in.Status)
		}
	}},
	{"ReplaceAtSameSeq", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		first := doStep(0, "fetch", `"v1"`)
		saveStep(t, s, l, first, at(time.Second))
		backoff := store.Step{Seq: 1, Name: "charge", Kind: store.KindDo, State: store.StepPending, Attempt: 2,
			ErrorName: "Timeout", ErrorMessage: "took too long", WakeAt: at(time.Minute)}
		saveStep(t, s, l, backoff, at(2*time.Second))
		checkSteps(t, "after pending step", steps(t, s, "a"), []store.Step{
			stored(first, at(time.Second)), stored(backoff, at(2*time.Second)),
		})

		done := store.Step{Seq: 1, Name: "charge", Kind: store.KindDo, State: store.StepDone, Attempt: 2, Result: []byte(`{"id":7}`)}
		saveStep(t, s, l, done, at(3*time.Second))
		checkSteps(t, "after replacing the pending step", steps(t, s, "a"), []store.Step{
			stored(first, at(time.Second)), stored(done, at(3*time.Second)),
		})
	}},
	{"QueuedBecomesRunning", func(t *testing.T, s store.Store) {
		create(t, s, newOwned("a", "node-1", store.StatusQueued))
		wantStatus(t, "before SaveStep", get(t, s, "a").Status, store.StatusQueued)
		status := saveStep(t, s, store.Lease{InstanceID: "a", Owner: "node-1", Fence: 1}, doStep(0, "x", `1`), at(time.Second))
		wantStatus(t, "SaveStep result", status, store.StatusRunning)
		in := get(t, s, "a")
		wantStatus(t, "after SaveStep", in.Status, store.StatusRunning)
		if !in.UpdatedAt.Equal(at(time.Second)) {
			t.Errorf("UpdatedAt %s, want t0+1s", fmtTime(in.UpdatedAt))
		}
	}},
	{"ReturnsPendingPause", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		wantStatus(t, "Pause of an executing instance", pause(t, s, "a", t0), store.StatusWaitingForPause)
		status := saveStep(t, s, l, doStep(0, "x", `1`), at(time.Second))
		wantStatus(t, "SaveStep after Pause", status, store.StatusWaitingForPause)
		wantStatus(t, "after SaveStep", get(t, s, "a").Status, store.StatusWaitingForPause)
		if got := steps(t, s, "a"); len(got) != 1 {
			t.Errorf("the step was not stored: %+v", got)
		}
	}},
	{"EmptyResultIsNotNil", func(t *testing.T, s store.Store) {
		// A step with no result (a sleep) and one with a JSON result must
		// stay distinguishable.
		l := start(t, s, "a", "node-1")
		saveStep(t, s, l, store.Step{Seq: 0, Name: "nap", Kind: store.KindSleep, State: store.StepDone}, t0)
		saveStep(t, s, l, doStep(1, "x", `null`), t0)
		got := steps(t, s, "a")
		if len(got) != 2 {
			t.Fatalf("steps %+v", got)
		}
		if got[0].Result != nil {
			t.Errorf("step without a result has Result %q, want nil", got[0].Result)
		}
		if string(got[1].Result) != `null` {
			t.Errorf("step with result null has Result %q", got[1].Result)
		}
	}},
}

var takeEventCases = []testCase{
	{"NoneReturnsNilAndStoresNothing", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "other", `1`, t0)
		before := snap(t, s, "a")
		ev, err := s.TakeEvent(t.Context(), l, "approve", doStep(0, "approval", ""), at(time.Second))
		if err != nil {
			t.Fatalf("TakeEvent: %v", err)
		}
		if ev != nil {
			t.Fatalf("TakeEvent with no event of the type returned %+v", ev)
		}
		after := snap(t, s, "a")
		checkSteps(t, "after TakeEvent found nothing", after.steps, before.steps)
		checkEvents(t, "after TakeEvent found nothing", after.events, before.events)
	}},
	{"OldestOfTypeFirst", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "approve", `"first"`, at(1*time.Second))
		send(t, s, "a", "reject", `"r"`, at(2*time.Second))
		send(t, s, "a", "approve", `"second"`, at(3*time.Second))
		sent := events(t, s, "a")

		take := func(seq int, typ string, now time.Time) *store.Event {
			t.Helper()
			wait := store.Step{Seq: seq, Name: typ, Kind: store.KindWait, State: store.StepPending, WakeAt: at(time.Hour)}
			ev, err := s.TakeEvent(t.Context(), l, typ, wait, now)
			if err != nil {
				t.Fatalf("TakeEvent(%q): %v", typ, err)
			}
			return ev
		}
		for i, c := range []struct {
			typ  string
			want store.Event
		}{
			{"approve", sent[0]},
			{"reject", sent[1]},
			{"approve", sent[2]},
		} {
			now := at(time.Duration(10+i) * time.Second)
			ev := take(i, c.typ, now)
			if ev == nil {
				t.Fatalf("TakeEvent(%q) #%d returned nil", c.typ, i)
			}
			want := c.want
			want.Consumed = true
			checkEvents(t, "TakeEvent", []store.Event{*ev}, []store.Event{want})
			// The step is stored done, with the payload as its result.
			got := steps(t, s, "a")
			if len(got) != i+1 {
				t.Fatalf("after TakeEvent #%d: %d steps, want %d", i, len(got), i+1)
			}
			wantStep := store.Step{Seq: i, Name: c.typ, Kind: store.KindWait, State: store.StepDone,
				Result: want.Payload, UpdatedAt: now}
			wantStep.WakeAt = got[i].WakeAt // a done wait's WakeAt is not specified
			checkSteps(t, "step stored by TakeEvent", got[i:], []store.Step{wantStep})
		}
		if ev := take(3, "approve", at(time.Minute)); ev != nil {
			t.Errorf("TakeEvent after every approve was taken returned %+v", ev)
		}
		for _, e := range events(t, s, "a") {
			if !e.Consumed {
				t.Errorf("event %d (%s) not consumed", e.Seq, e.Type)
			}
		}
	}},
	{"ReplacesPendingWait", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		l := claimID(t, s, "a", "node-1", t0)
		wait := waitStep(0, at(time.Hour))
		suspend(t, s, l, store.Suspension{Step: &wait, Status: store.StatusWaiting, WakeAt: wait.WakeAt, WaitingEvent: "approve"}, t0)
		send(t, s, "a", "approve", `{"by":"ann"}`, at(time.Minute))
		l = claimID(t, s, "a", "node-1", at(time.Minute))
		ev, err := s.TakeEvent(t.Context(), l, "approve", wait, at(time.Minute+time.Second))
		if err != nil || ev == nil {
			t.Fatalf("TakeEvent = %+v, %v; want the event", ev, err)
		}
		got := steps(t, s, "a")
		if len(got) != 1 || got[0].Seq != 0 || got[0].State != store.StepDone || string(got[0].Result) != `{"by":"ann"}` {
			t.Errorf("steps after TakeEvent = %+v, want the wait step done with the payload", got)
		}
	}},
	{"BufferedWhileRunning", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "approve", `1`, at(time.Second))
		in := get(t, s, "a")
		if in.Owner != "node-1" || !in.WakeAt.IsZero() || in.Status != store.StatusRunning {
			t.Errorf("after SendEvent to a running instance: owner %q WakeAt %s status %s, want unchanged",
				in.Owner, fmtTime(in.WakeAt), in.Status)
		}
		ev, err := s.TakeEvent(t.Context(), l, "approve", waitStep(0, at(time.Hour)), at(2*time.Second))
		if err != nil || ev == nil || string(ev.Payload) != `1` {
			t.Fatalf("TakeEvent = %+v, %v; want the buffered event", ev, err)
		}
	}},
}

var suspendCases = []testCase{
	{"Kinds", func(t *testing.T, s store.Store) {
		now := at(time.Minute)
		deadline := at(24 * time.Hour)
		for _, c := range []struct {
			name         string
			sus          store.Suspension
			pendingPause bool
			events       []string // types sent before suspending
			consume      string   // type taken before suspending
			want         store.Instance
		}{
			{
				name: "Sleep",
				sus:  store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)},
				want: store.Instance{Status: store.StatusWaiting, WakeAt: at(time.Hour)},
			},
			{
				name: "WaitNothingBuffered",
				sus:  store.Suspension{Step: ptr(waitStep(0, deadline)), Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
				want: store.Instance{Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
			},
			{
				name:   "WaitAlreadyBuffered",
				sus:    store.Suspension{Step: ptr(waitStep(0, deadline)), Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
				events: []string{"other", "approve"},
				want:   store.Instance{Status: store.StatusWaiting, WakeAt: now, WaitingEvent: "approve"},
			},
			{
				name:   "WaitOtherTypeBuffered",
				sus:    store.Suspension{Step: ptr(waitStep(0, deadline)), Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
				events: []string{"other"},
				want:   store.Instance{Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
			},
			{
				name:    "WaitBufferedButConsumed",
				sus:     store.Suspension{Step: ptr(waitStep(1, deadline)), Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
				events:  []string{"approve"},
				consume: "approve",
				want:    store.Instance{Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
			},
			{
				name: "Backoff",
				sus: store.Suspension{Step: &store.Step{Seq: 0, Name: "charge", Kind: store.KindDo, State: store.StepPending, Attempt: 2, WakeAt: at(2 * time.Minute)},
					Status: store.StatusRunning, WakeAt: at(2 * time.Minute)},
				want: store.Instance{Status: store.StatusRunning, WakeAt: at(2 * time.Minute)},
			},
			{
				name: "NoStep",
				sus:  store.Suspension{Status: store.StatusRunning, WakeAt: now},
				want: store.Instance{Status: store.StatusRunning, WakeAt: now},
			},
			{
				name: "Paused",
				sus:  store.Suspension{Status: store.StatusPaused, WakeAt: now},
				want: store.Instance{Status: store.StatusPaused, PausedAt: now},
			},
			{
				name:         "SleepWithPendingPause",
				sus:          store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)},
				pendingPause: true,
				want:         store.Instance{Status: store.StatusPaused, PausedAt: now},
			},
			{
				name:         "WaitWithPendingPauseAndBufferedEvent",
				sus:          store.Suspension{Step: ptr(waitStep(0, deadline)), Status: store.StatusWaiting, WakeAt: deadline, WaitingEvent: "approve"},
				pendingPause: true,
				events:       []string{"approve"},
				want:         store.Instance{Status: store.StatusPaused, PausedAt: now, WaitingEvent: "approve"},
			},
			{
				name: "BackoffWithPendingPause",
				sus: store.Suspension{Step: &store.Step{Seq: 0, Name: "charge", Kind: store.KindDo, State: store.StepPending, Attempt: 2, WakeAt: at(2 * time.Minute)},
					Status: store.StatusRunning, WakeAt: at(2 * time.Minute)},
				pendingPause: true,
				want:         store.Instance{Status: store.StatusPaused, PausedAt: now},
			},
		} {
			t.Run(c.name, func(t *testing.T) {
				id := c.name
				l := start(t, s, id, "node-1")
				for _, typ := range c.events {
					send(t, s, id, typ, `{}`, t0)
				}
				if c.consume != "" {
					ev, err := s.TakeEvent(t.Context(), l, c.consume, waitStep(0, deadline), t0)
					if err != nil || ev == nil {
						t.Fatalf("TakeEvent = %+v, %v", ev, err)
					}
				}
				if c.pendingPause {
					wantStatus(t, "Pause", pause(t, s, id, t0), store.StatusWaitingForPause)
				}
				before := steps(t, s, id)
				suspend(t, s, l, c.sus, now)

				in := get(t, s, id)
				want := c.want
				want.ID, want.Workflow, want.Params, want.CreatedAt = id, in.Workflow, in.Params, t0
				want.UpdatedAt, want.Fence = now, 1
				if want.Status == store.StatusPaused {
					// What a paused instance waits for is not specified.
					want.WaitingEvent = in.WaitingEvent
				}
				checkInstance(t, "after Suspend", in, &want)

				wantSteps := before
				if c.sus.Step != nil {
					wantSteps = append(wantSteps, stored(*c.sus.Step, now))
				}
				checkSteps(t, "after Suspend", steps(t, s, id), wantSteps)
			})
		}
		// Only the instances that are not paused are claimable, each at its WakeAt.
		want := []time.Time{now, now, at(2 * time.Minute), at(time.Hour), deadline, deadline, deadline}
		if got := nextWakes(t, s, "", farFuture, 100); !equalTimes(got, want) {
			t.Errorf("NextWakeTimes = %s, want %s", fmtTimes(got), fmtTimes(want))
		}
	}},
	{"ClaimableAtWakeAt", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		suspend(t, s, l, store.Suspension{Step: ptr(sleepStep(0, at(time.Hour))), Status: store.StatusWaiting, WakeAt: at(time.Hour)}, t0)
		if got := claim(t, s, "node-2", "", at(time.Hour-time.Microsecond), 10); len(got) != 0 {
			t.Fatalf("claimed before WakeAt: %q", instanceIDs(got))
		}
		l2 := claimID(t, s, "a", "node-2", at(time.Hour))
		if l2.Fence != 2 {
			t.Errorf("fence after reclaim %d, want 2", l2.Fence)
		}
		// The old lease is gone for good.
		_, err := s.SaveStep(t.Context(), l, doStep(1, "x", `1`), at(time.Hour))
		wantErr(t, "SaveStep with the lease given up by Suspend", err, store.ErrLeaseLost)
	}},
	{"GivesUpTheLease", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: at(time.Hour)}, t0)
		before := snap(t, s, "a")
		_, err := s.SaveStep(t.Context(), l, doStep(0, "x", `1`), at(time.Second))
		wantErr(t, "SaveStep after Suspend", err, store.ErrLeaseLost)
		err = s.Suspend(t.Context(), l, store.Suspension{Status: store.StatusRunning, WakeAt: t0}, at(time.Second))
		wantErr(t, "second Suspend", err, store.ErrLeaseLost)
		checkUnchanged(t, "writes after Suspend", s, before)
	}},
}

var finishCases = []testCase{
	{"Complete", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		l := claimID(t, s, "a", "node-1", t0)
		saveStep(t, s, l, doStep(0, "x", `1`), at(time.Second))
		finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`{"total":42}`)}, at(2*time.Second))
		want := newInstance("a", time.Time{})
		want.Status, want.Output, want.FinishedAt, want.UpdatedAt, want.Fence =
			store.StatusComplete, []byte(`{"total":42}`), at(2*time.Second), at(2*time.Second), 1
		checkInstance(t, "after Finish", get(t, s, "a"), want)
		if got := steps(t, s, "a"); len(got) != 1 {
			t.Errorf("steps after Finish: %+v", got)
		}
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("a finished instance was claimed")
		}
	}},
	{"Errored", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		finish(t, s, l, store.Outcome{Status: store.StatusErrored, ErrorName: "NonRetryable", ErrorMessage: "bad input"}, at(time.Second))
		want := newOwned("a", "", store.StatusErrored)
		want.ErrorName, want.ErrorMessage, want.FinishedAt, want.UpdatedAt, want.Fence =
			"NonRetryable", "bad input", at(time.Second), at(time.Second), 1
		checkInstance(t, "after Finish", get(t, s, "a"), want)
	}},
	{"WithPendingPause", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		pause(t, s, "a", t0)
		finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
		in := get(t, s, "a")
		wantStatus(t, "after Finish", in.Status, store.StatusComplete)
		if !in.PausedAt.IsZero() || in.Owner != "" {
			t.Errorf("after Finish: PausedAt %s Owner %q, want zero and none", fmtTime(in.PausedAt), in.Owner)
		}
		err := s.Resume(t.Context(), "a", at(2*time.Second))
		wantErr(t, "Resume of a finished instance", err, store.ErrNotPaused)
	}},
	{"Twice", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
		before := snap(t, s, "a")
		err := s.Finish(t.Context(), l, store.Outcome{Status: store.StatusErrored, ErrorName: "E"}, at(2*time.Second))
		wantErr(t, "second Finish", err, store.ErrLeaseLost)
		checkUnchanged(t, "second Finish", s, before)
	}},
}

// fencedWrites are the writes an executing worker makes, each trying to
// change the instance with lease l.
var fencedWrites = []struct {
	name string
	do   func(t *testing.T, s store.Store, l store.Lease) error
}{
	{"SaveStep", func(t *testing.T, s store.Store, l store.Lease) error {
		_, err := s.SaveStep(t.Context(), l, doStep(1, "late", `"late"`), at(time.Hour))
		return err
	}},
	{"TakeEvent", func(t *testing.T, s store.Store, l store.Lease) error {
		ev, err := s.TakeEvent(t.Context(), l, "approve", waitStep(1, at(2*time.Hour)), at(time.Hour))
		if ev != nil {
			t.Errorf("TakeEvent with a stale lease returned %+v", ev)
		}
		return err
	}},
	{"Suspend", func(t *testing.T, s store.Store, l store.Lease) error {
		return s.Suspend(t.Context(), l, store.Suspension{Step: ptr(sleepStep(1, at(2*time.Hour))),
			Status: store.StatusWaiting, WakeAt: at(2 * time.Hour)}, at(time.Hour))
	}},
	{"Finish", func(t *testing.T, s store.Store, l store.Lease) error {
		return s.Finish(t.Context(), l, store.Outcome{Status: store.StatusComplete, Output: []byte(`"late"`)}, at(time.Hour))
	}},
}

// staleLeases each make instance id and return a lease that is no longer
// (or never was) the current one.
var staleLeases = []struct {
	name  string
	setup func(t *testing.T, s store.Store, id string) store.Lease
}{
	{"WrongOwner", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		l.Owner = "node-2"
		return l
	}},
	{"OlderFence", func(t *testing.T, s store.Store, id string) store.Lease {
		create(t, s, newInstance(id, t0))
		l := claimID(t, s, id, "node-1", t0)
		suspend(t, s, l, store.Suspension{Status: store.StatusRunning, WakeAt: t0}, t0)
		claimID(t, s, id, "node-1", t0) // same owner, fence 2
		return l
	}},
	{"NewerFence", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		l.Fence++
		return l
	}},
	{"GivenUp", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: at(3 * time.Hour)}, t0)
		return l
	}},
	{"Terminated", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		terminate(t, s, id, t0)
		return l
	}},
	{"Restarted", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		restart(t, s, id, t0)
		return l
	}},
	{"RestartedAndReclaimedBySameOwner", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		restart(t, s, id, t0)
		claimID(t, s, id, "node-1", t0)
		return l
	}},
	{"Finished", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, t0)
		return l
	}},
	{"NodeRemoved", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		removeNode(t, s, "node-1", t0)
		return l
	}},
	{"NodeRemovedAndReclaimed", func(t *testing.T, s store.Store, id string) store.Lease {
		l := start(t, s, id, "node-1")
		removeNode(t, s, "node-1", t0)
		claimID(t, s, id, "node-2", t0)
		return l
	}},
	{"NoSuchInstance", func(t *testing.T, s store.Store, id string) store.Lease {
		return store.Lease{InstanceID: id, Owner: "node-1", Fence: 1}
	}},
}

// fencingCases check that every fenced write fails with ErrLeaseLost and
// changes nothing whenever its lease is not the current one.
var fencingCases = func() []testCase {
	var cases []testCase
	for _, w := range fencedWrites {
		for _, sl := range staleLeases {
			cases = append(cases, testCase{w.name + "/" + sl.name, func(t *testing.T, s store.Store) {
				const id = "fenced-instance"
				l := sl.setup(t, s, id)
				if _, err := s.GetInstance(t.Context(), id); err == nil {
					// Something for TakeEvent to wrongly consume, where the
					// instance still accepts events.
					_ = s.SendEvent(t.Context(), store.Event{InstanceID: id, Type: "approve", Payload: []byte(`"yes"`), CreatedAt: t0})
				}
				before := snap(t, s, id)
				err := w.do(t, s, l)
				wantErrNaming(t, w.name+" with a stale lease", err, store.ErrLeaseLost, id)
				checkUnchanged(t, w.name+" with a stale lease", s, before)
			}})
		}
	}
	return cases
}()
