package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"agentflow/store"
)

var createInstancesCases = []testCase{
	{"Unowned", func(t *testing.T, s store.Store) {
		in := newInstance("a", at(time.Minute))
		in.Service = "billing"
		create(t, s, in)

		want := *in
		want.UpdatedAt = t0
		checkInstance(t, "after create", get(t, s, "a"), &want)
		if steps := steps(t, s, "a"); len(steps) != 0 {
			t.Errorf("new instance has steps %+v", steps)
		}
		if evs := events(t, s, "a"); len(evs) != 0 {
			t.Errorf("new instance has events %+v", evs)
		}
	}},
	{"OwnedIsClaimedWithFenceOne", func(t *testing.T, s store.Store) {
		in := newOwned("a", "node-1", store.StatusRunning)
		create(t, s, in)

		want := *in
		want.UpdatedAt, want.Fence = t0, 1
		checkInstance(t, "after create", get(t, s, "a"), &want)
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("an owned instance was claimed: %q", instanceIDs(got))
		}
		if got := nextWakes(t, s, "", farFuture, 10); len(got) != 0 {
			t.Errorf("NextWakeTimes lists an owned instance: %s", fmtTimes(got))
		}
		// The creator holds the lease.
		saveStep(t, s, store.Lease{InstanceID: "a", Owner: "node-1", Fence: 1}, doStep(0, "x", `1`), t0)
	}},
	{"MixedBatch", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("u", t0), newOwned("o", "node-1", store.StatusRunning))
		if in := get(t, s, "u"); in.Fence != 0 || in.Owner != "" {
			t.Errorf("unowned instance: owner %q fence %d, want none and 0", in.Owner, in.Fence)
		}
		if in := get(t, s, "o"); in.Fence != 1 || in.Owner != "node-1" {
			t.Errorf("owned instance: owner %q fence %d, want node-1 and 1", in.Owner, in.Fence)
		}
	}},
	{"Batch", func(t *testing.T, s store.Store) {
		var batch []*store.Instance
		for i := range 100 {
			batch = append(batch, newInstance(fmt.Sprintf("i%03d", i), at(time.Duration(i)*time.Second)))
		}
		create(t, s, batch...)
		for _, in := range batch {
			want := *in
			want.UpdatedAt = in.CreatedAt
			checkInstance(t, "after batch create", get(t, s, in.ID), &want)
		}
	}},
	{"TraceParentKeptThroughClaims", func(t *testing.T, s store.Store) {
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		in := newInstance("traced", t0)
		in.TraceParent = tp
		create(t, s, in, newInstance("untraced", t0))
		if got := get(t, s, "traced").TraceParent; got != tp {
			t.Errorf("TraceParent after create = %q, want %q", got, tp)
		}
		for _, c := range claim(t, s, "node-1", "", farFuture, 10) {
			if want := map[string]string{"traced": tp, "untraced": ""}[c.ID]; c.TraceParent != want {
				t.Errorf("claimed %s with TraceParent %q, want %q", c.ID, c.TraceParent, want)
			}
		}
	}},
	{"EmptyBatch", func(t *testing.T, s store.Store) {
		create(t, s)
	}},
	{"DuplicateOfExistingInsertsNothing", func(t *testing.T, s store.Store) {
		orig := newInstance("dup", t0)
		create(t, s, orig)
		before := snap(t, s, "dup")

		again := newInstance("dup", at(time.Hour))
		again.Workflow = "other"
		err := s.CreateInstances(t.Context(), []*store.Instance{
			newInstance("first", t0), again, newOwned("last", "node-1", store.StatusRunning),
		})
		wantErrNaming(t, "CreateInstances with an existing id", err, store.ErrDuplicateID, "dup")
		for _, id := range []string{"first", "last"} {
			_, err := s.GetInstance(t.Context(), id)
			wantErr(t, "GetInstance of an instance of the failed batch", err, store.ErrNotFound)
		}
		checkUnchanged(t, "failed batch", s, before)
	}},
	{"DuplicateWithinBatchInsertsNothing", func(t *testing.T, s store.Store) {
		err := s.CreateInstances(t.Context(), []*store.Instance{
			newInstance("x", t0), newInstance("y", t0), newInstance("x", at(time.Second)),
		})
		wantErrNaming(t, "CreateInstances with a repeated id", err, store.ErrDuplicateID, "x")
		for _, id := range []string{"x", "y"} {
			_, err := s.GetInstance(t.Context(), id)
			wantErr(t, "GetInstance of an instance of the failed batch", err, store.ErrNotFound)
		}
		if got := claim(t, s, "node-1", "", farFuture, 10); len(got) != 0 {
			t.Errorf("the failed batch left claimable instances %q", instanceIDs(got))
		}
	}},
	{"FailedBatchCanBeRetried", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("taken", t0))
		err := s.CreateInstances(t.Context(), []*store.Instance{newInstance("fresh", t0), newInstance("taken", t0)})
		wantErr(t, "CreateInstances", err, store.ErrDuplicateID)
		create(t, s, newInstance("fresh", t0))
		get(t, s, "fresh")
	}},
}

var getInstanceCases = []testCase{
	{"NotFound", func(t *testing.T, s store.Store) {
		in, err := s.GetInstance(t.Context(), "missing")
		wantErr(t, "GetInstance of a missing instance", err, store.ErrNotFound)
		if in != nil {
			t.Errorf("GetInstance of a missing instance returned %+v", in)
		}
	}},
	{"Isolated", func(t *testing.T, s store.Store) {
		a, b := newInstance("a", t0), newInstance("b", at(time.Second))
		b.Workflow, b.Params = "refund", []byte(`[1,2,3]`)
		create(t, s, a, b)
		wantA, wantB := *a, *b
		wantA.UpdatedAt, wantB.UpdatedAt = t0, t0
		checkInstance(t, "GetInstance(a)", get(t, s, "a"), &wantA)
		checkInstance(t, "GetInstance(b)", get(t, s, "b"), &wantB)
	}},
}

var listStepsCases = []testCase{
	{"OrderedBySeqAndPerInstance", func(t *testing.T, s store.Store) {
		la := start(t, s, "a", "node-1")
		lb := start(t, s, "b", "node-1")
		s2 := store.Step{Seq: 2, Name: "charge", Occurrence: 1, Kind: store.KindDo, State: store.StepFailed,
			Attempt: 6, ErrorName: "CardDeclined", ErrorMessage: "insufficient funds"}
		s0 := doStep(0, "charge", `{"ok":true}`)
		s1 := sleepStep(1, at(time.Hour))
		saveStep(t, s, la, s2, at(1*time.Second))
		saveStep(t, s, la, s0, at(2*time.Second))
		saveStep(t, s, lb, doStep(0, "other", `"b"`), at(3*time.Second))
		saveStep(t, s, la, s1, at(4*time.Second))

		checkSteps(t, "ListSteps(a)", steps(t, s, "a"), []store.Step{
			stored(s0, at(2*time.Second)), stored(s1, at(4*time.Second)), stored(s2, at(1*time.Second)),
		})
		checkSteps(t, "ListSteps(b)", steps(t, s, "b"), []store.Step{stored(doStep(0, "other", `"b"`), at(3*time.Second))})
	}},
	{"NoSteps", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		if got := steps(t, s, "a"); len(got) != 0 {
			t.Errorf("ListSteps of a new instance = %+v", got)
		}
	}},
	{"ManyInstancesInOneQuery", func(t *testing.T, s store.Store) {
		la := start(t, s, "a", "node-1")
		lb := start(t, s, "b'\",\"{c}", "node-1") // quotes, comma and braces: one id, not a list
		start(t, s, "empty", "node-1")
		lo := start(t, s, "other", "node-1")
		s0, s1 := doStep(0, "charge", `{"ok":true}`), sleepStep(1, at(time.Hour))
		saveStep(t, s, la, s1, at(1*time.Second))
		saveStep(t, s, la, s0, at(2*time.Second))
		saveStep(t, s, lb, doStep(0, "b", `"b"`), at(3*time.Second))
		saveStep(t, s, lo, doStep(0, "not asked for", `1`), at(4*time.Second))

		got, err := s.ListStepsOf(t.Context(), []string{lb.InstanceID, "a", "empty", "missing"})
		if err != nil {
			t.Fatalf("ListStepsOf: %v", err)
		}
		if len(got) != 2 {
			t.Errorf("ListStepsOf returned steps of %d instances, want 2 (a and b): %+v", len(got), got)
		}
		checkSteps(t, "ListStepsOf: a", got["a"], []store.Step{stored(s0, at(2*time.Second)), stored(s1, at(1*time.Second))})
		checkSteps(t, "ListStepsOf: b", got[lb.InstanceID], []store.Step{stored(doStep(0, "b", `"b"`), at(3*time.Second))})

		none, err := s.ListStepsOf(t.Context(), nil)
		if err != nil || len(none) != 0 {
			t.Errorf("ListStepsOf(nil) = %+v, %v; want none", none, err)
		}
	}},
}

var listEventsCases = []testCase{
	{"OrderedBySeqAndPerInstance", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", at(time.Hour)), newInstance("b", at(time.Hour)))
		send(t, s, "a", "x", `1`, at(1*time.Second))
		send(t, s, "b", "x", `2`, at(2*time.Second))
		send(t, s, "a", "y", `3`, at(3*time.Second))
		send(t, s, "a", "x", `4`, at(3*time.Second))

		evs := events(t, s, "a")
		if len(evs) != 3 {
			t.Fatalf("ListEvents(a) = %+v, want 3 events", evs)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq <= evs[i-1].Seq {
				t.Errorf("event seqs not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
			}
		}
		want := []store.Event{
			{Seq: evs[0].Seq, InstanceID: "a", Type: "x", Payload: []byte(`1`), CreatedAt: at(1 * time.Second)},
			{Seq: evs[1].Seq, InstanceID: "a", Type: "y", Payload: []byte(`3`), CreatedAt: at(3 * time.Second)},
			{Seq: evs[2].Seq, InstanceID: "a", Type: "x", Payload: []byte(`4`), CreatedAt: at(3 * time.Second)},
		}
		checkEvents(t, "ListEvents(a)", evs, want)

		evb := events(t, s, "b")
		if len(evb) != 1 {
			t.Fatalf("ListEvents(b) = %+v, want 1 event", evb)
		}
		if evb[0].Seq <= evs[0].Seq || evb[0].Seq >= evs[1].Seq {
			t.Errorf("seq of b's event %d is not between a's first two (%d, %d): seqs must increase in sending order",
				evb[0].Seq, evs[0].Seq, evs[1].Seq)
		}
		checkEvents(t, "ListEvents(b)", evb, []store.Event{
			{Seq: evb[0].Seq, InstanceID: "b", Type: "x", Payload: []byte(`2`), CreatedAt: at(2 * time.Second)},
		})
	}},
	{"NoEvents", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		if got := events(t, s, "a"); len(got) != 0 {
			t.Errorf("ListEvents of a new instance = %+v", got)
		}
	}},
}

var claimDueCases = []testCase{
	{"EarliestFirstUpToLimit", func(t *testing.T, s store.Store) {
		// Neither the insertion order nor the ids follow WakeAt.
		create(t, s,
			newInstance("c", at(-1*time.Minute)),
			newInstance("a", at(-3*time.Minute)),
			newInstance("e", at(-5*time.Minute)),
			newInstance("b", at(-2*time.Minute)),
			newInstance("d", at(-4*time.Minute)),
		)
		for _, want := range [][]string{{"d", "e"}, {"a", "b"}, {"c"}, {}} {
			got := claim(t, s, "node-1", "", t0, 2)
			if ids := instanceIDs(got); !slices.Equal(ids, want) {
				t.Fatalf("ClaimDue(limit 2) claimed %q, want %q", ids, want)
			}
		}
	}},
	{"ClaimedInstance", func(t *testing.T, s store.Store) {
		in := newInstance("a", at(-time.Second))
		create(t, s, in)
		got := claim(t, s, "node-1", "", t0, 10)
		if len(got) != 1 {
			t.Fatalf("ClaimDue claimed %q, want [a]", instanceIDs(got))
		}
		want := *in
		want.Status, want.UpdatedAt, want.WakeAt, want.Owner, want.Fence = store.StatusRunning, t0, time.Time{}, "node-1", 1
		checkInstance(t, "returned by ClaimDue", got[0], &want)
		checkInstance(t, "stored after ClaimDue", get(t, s, "a"), &want)
	}},
	{"DueBoundaryIsInclusive", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", at(time.Minute)))
		if got := claim(t, s, "node-1", "", at(time.Minute-time.Microsecond), 10); len(got) != 0 {
			t.Fatalf("an instance was claimed before its WakeAt: %q", instanceIDs(got))
		}
		claimID(t, s, "a", "node-1", at(time.Minute))
	}},
	{"ServiceFilter", func(t *testing.T, s store.Store) {
		billing := newInstance("b", t0)
		billing.Service = "billing"
		create(t, s, billing, newInstance("d", t0))
		if ids := instanceIDs(claim(t, s, "node-1", "shipping", t0, 10)); len(ids) != 0 {
			t.Errorf("ClaimDue(shipping) claimed %q", ids)
		}
		if ids := instanceIDs(claim(t, s, "node-1", "billing", t0, 10)); !slices.Equal(ids, []string{"b"}) {
			t.Errorf("ClaimDue(billing) claimed %q, want [b]", ids)
		}
		if ids := instanceIDs(claim(t, s, "node-1", "", t0, 10)); !slices.Equal(ids, []string{"d"}) {
			t.Errorf("ClaimDue(default service) claimed %q, want [d]", ids)
		}
	}},
	{"NotTwice", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		claimID(t, s, "a", "node-1", t0)
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("a claimed instance was claimed again: %q", instanceIDs(got))
		}
		if in := get(t, s, "a"); in.Owner != "node-1" || in.Fence != 1 {
			t.Errorf("owner %q fence %d, want node-1 and 1", in.Owner, in.Fence)
		}
	}},
	{"SkipsOwnedPausedAndFinished", func(t *testing.T, s store.Store) {
		create(t, s, newOwned("owned", "node-1", store.StatusRunning), newInstance("paused", t0))
		pause(t, s, "paused", t0)
		done := start(t, s, "done", "node-1")
		finish(t, s, done, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, t0)
		create(t, s, newInstance("terminated", t0))
		terminate(t, s, "terminated", t0)
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("ClaimDue claimed %q", instanceIDs(got))
		}
	}},
	{"FenceIncrementsOnEveryClaim", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0))
		for i := 1; i <= 3; i++ {
			now := at(time.Duration(i) * time.Minute)
			l := claimID(t, s, "a", fmt.Sprintf("node-%d", i), now)
			if l.Fence != int64(i) {
				t.Fatalf("claim %d: fence %d, want %d", i, l.Fence, i)
			}
			suspend(t, s, l, store.Suspension{Status: store.StatusRunning, WakeAt: now}, now)
		}
	}},
	{"StatusBecomesRunning", func(t *testing.T, s store.Store) {
		// queued, waiting (sleep and event) and running (backing off) all
		// run when claimed.
		create(t, s, newInstance("queued", t0))
		for _, c := range []struct {
			id  string
			sus store.Suspension
		}{
			{"sleeping", store.Suspension{Status: store.StatusWaiting, WakeAt: t0, Step: ptr(sleepStep(0, t0))}},
			{"waiting", store.Suspension{Status: store.StatusWaiting, WakeAt: t0, WaitingEvent: "go", Step: ptr(waitStep(0, t0))}},
			{"backoff", store.Suspension{Status: store.StatusRunning, WakeAt: t0}},
		} {
			l := start(t, s, c.id, "node-1")
			suspend(t, s, l, c.sus, at(-time.Second))
			wantStatus(t, c.id+" suspended", get(t, s, c.id).Status, c.sus.Status)
		}
		got := claim(t, s, "node-2", "", t0, 10)
		if ids := instanceIDs(got); !slices.Equal(ids, []string{"backoff", "queued", "sleeping", "waiting"}) {
			t.Fatalf("ClaimDue claimed %q", ids)
		}
		for _, in := range got {
			wantStatus(t, in.ID+" returned by ClaimDue", in.Status, store.StatusRunning)
			stored := get(t, s, in.ID)
			wantStatus(t, in.ID+" after ClaimDue", stored.Status, store.StatusRunning)
			if stored.WaitingEvent != "" || !stored.WakeAt.IsZero() || stored.Owner != "node-2" {
				t.Errorf("%s after ClaimDue: WaitingEvent %q WakeAt %s Owner %q, want none, zero, node-2",
					in.ID, stored.WaitingEvent, fmtTime(stored.WakeAt), stored.Owner)
			}
		}
	}},
}

var nextWakeTimesCases = []testCase{
	{"DueUntilEarliestFirstUpToLimit", func(t *testing.T, s store.Store) {
		billing := newInstance("billing", at(time.Second))
		billing.Service = "billing"
		create(t, s,
			newInstance("c", at(3*time.Minute)),
			newInstance("a", at(-time.Minute)),
			newInstance("d", at(10*time.Minute)),
			newInstance("b", at(2*time.Minute)),
			billing,
			newOwned("owned", "node-1", store.StatusRunning),
		)
		for _, c := range []struct {
			until time.Time
			limit int
			want  []time.Time
		}{
			{at(3 * time.Minute), 10, []time.Time{at(-time.Minute), at(2 * time.Minute), at(3 * time.Minute)}},
			{at(3*time.Minute - time.Microsecond), 10, []time.Time{at(-time.Minute), at(2 * time.Minute)}},
			{farFuture, 2, []time.Time{at(-time.Minute), at(2 * time.Minute)}},
			{farFuture, 10, []time.Time{at(-time.Minute), at(2 * time.Minute), at(3 * time.Minute), at(10 * time.Minute)}},
			{at(-2 * time.Minute), 10, nil},
		} {
			if got := nextWakes(t, s, "", c.until, c.limit); !equalTimes(got, c.want) {
				t.Errorf("NextWakeTimes(until %s, limit %d) = %s, want %s",
					fmtTime(c.until), c.limit, fmtTimes(got), fmtTimes(c.want))
			}
		}
		if got, want := nextWakes(t, s, "billing", farFuture, 10), []time.Time{at(time.Second)}; !equalTimes(got, want) {
			t.Errorf("NextWakeTimes(billing) = %s, want %s", fmtTimes(got), fmtTimes(want))
		}
	}},
	{"ClaimedNoLongerListed", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", t0), newInstance("b", at(time.Hour)))
		claimID(t, s, "a", "node-1", t0)
		if got, want := nextWakes(t, s, "", farFuture, 10), []time.Time{at(time.Hour)}; !equalTimes(got, want) {
			t.Errorf("NextWakeTimes = %s, want %s", fmtTimes(got), fmtTimes(want))
		}
	}},
	{"Empty", func(t *testing.T, s store.Store) {
		if got := nextWakes(t, s, "", farFuture, 10); len(got) != 0 {
			t.Errorf("NextWakeTimes of an empty store = %s", fmtTimes(got))
		}
	}},
}
