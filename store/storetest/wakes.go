package storetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"agentflow/store"
)

// RunWakes checks a store.Waker: which writes signal which wakes, to the
// subscribers of the writing handle at once and to those of another handle
// on the same store. open returns two handles on one fresh store, as two
// processes would have them; both must implement store.Waker.
func RunWakes(t *testing.T, open func(t *testing.T) (a, b store.Store)) {
	t.Helper()
	a, b := open(t)
	t.Cleanup(func() {
		for _, s := range []store.Store{a, b} {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	wa, ok1 := a.(store.Waker)
	wb, ok2 := b.(store.Waker)
	if !ok1 || !ok2 {
		t.Fatalf("the stores (%T, %T) do not implement store.Waker", a, b)
	}
	local, remote := newWakeLog(wa), newWakeLog(wb)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Microsecond)
	marks := 0
	// expect checks that the last write signalled want (nothing when
	// want is zero) to a's subscribers at once and to b's soon, and, by
	// writing a marker wake after it, that it signalled nothing else.
	expect := func(what string, want ...store.Wake) {
		t.Helper()
		for _, w := range want {
			if !local.has(w) {
				t.Errorf("%s: the writing handle's subscriber did not hear %+v at once; it heard %v", what, w, local.all())
			}
		}
		marks++
		mark := store.Wake{Kind: store.WakeInstances, Key: "marker-" + string(rune('a'+marks))}
		in := newInstance("mark"+string(rune('a'+marks)), now)
		in.Service, in.CreatedAt = mark.Key, now
		create(t, a, in)
		if !remote.wait(mark, 10*time.Second) {
			t.Fatalf("%s: the other handle did not hear the marker %+v within 10 s; it heard %v", what, mark, remote.all())
		}
		got := remote.drain()
		got = slices.DeleteFunc(got, func(w store.Wake) bool { return w == mark })
		slices.SortFunc(got, cmpWake)
		want = slices.Clone(want)
		slices.SortFunc(want, cmpWake)
		if !slices.Equal(got, want) {
			t.Errorf("%s: the other handle heard %v, want %v", what, got, want)
		}
		local.drain()
	}
	inst := func(kind store.WakeKind, key string) store.Wake { return store.Wake{Kind: kind, Key: key} }

	// Instances: queued for a service, and created claimed.
	q := newInstance("queued", now)
	q.Service, q.CreatedAt = "svc-b", now
	create(t, a, q)
	expect("CreateInstances queued", inst(store.WakeInstances, "svc-b"))
	o := newOwned("owned", "node-a", store.StatusRunning)
	o.Service, o.CreatedAt = "svc-b", now
	create(t, a, o)
	expect("CreateInstances claimed")
	later := newInstance("later", now.Add(time.Hour))
	later.Service, later.CreatedAt = "svc-b", now
	create(t, a, later)
	expect("CreateInstances due later")
	batch := []*store.Instance{newInstance("batch1", now), newInstance("batch2", now)}
	for _, in := range batch {
		in.Service, in.CreatedAt = "svc-c", now
	}
	create(t, a, batch...)
	expect("CreateInstances batch", inst(store.WakeInstances, "svc-c"))

	// Tracked instance of an agent.
	tr := newInstance("tracked", now)
	tr.Service, tr.CreatedAt, tr.Origin = "svc-d", now, store.AgentKey{Class: "Tracker", Name: "t1"}
	if err := a.CreateTrackedInstance(ctx, tr, &store.AgentWorkflow{AgentKey: tr.Origin, WorkflowID: tr.ID, Binding: "B"}); err != nil {
		t.Fatal(err)
	}
	expect("CreateTrackedInstance", inst(store.WakeInstances, "svc-d"))

	// Finish: with an origin, the notice; without, nothing.
	lt := store.Lease{InstanceID: "tracked", Owner: "node-a", Fence: 1}
	if got, err := a.ClaimDue(ctx, "node-a", "svc-d", now, 10); err != nil || len(got) != 1 {
		t.Fatalf("ClaimDue = %v, %v", got, err)
	}
	expect("ClaimDue")
	if err := a.Finish(ctx, lt, store.Outcome{Status: store.StatusComplete, Output: []byte(`{}`)}, now); err != nil {
		t.Fatal(err)
	}
	expect("Finish with an origin", inst(store.WakeSchedules, "Tracker"))
	if err := a.Finish(ctx, store.Lease{InstanceID: "owned", Owner: "node-a", Fence: 1}, store.Outcome{Status: store.StatusComplete, Output: []byte(`{}`)}, now); err != nil {
		t.Fatal(err)
	}
	expect("Finish without an origin")

	// Schedules: due at once, and later.
	sched := func(id string, next time.Time) *store.Schedule {
		return &store.Schedule{ID: id, AgentKey: store.AgentKey{Class: "Scheduler", Name: "s1"}, Method: "Run",
			Payload: []byte(`null`), Kind: store.ScheduleDelayed, NextRunAt: next, CreatedAt: now}
	}
	if _, _, err := a.CreateSchedule(ctx, sched("sch-now", now)); err != nil {
		t.Fatal(err)
	}
	expect("CreateSchedule due now", inst(store.WakeSchedules, "Scheduler"))
	if _, _, err := a.CreateSchedule(ctx, sched("sch-later", now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	expect("CreateSchedule due later")

	// Events: one that wakes a waiting instance, one to a running one.
	w := newOwned("waiter", "node-b", store.StatusRunning)
	w.Service, w.CreatedAt = "svc-e", now
	create(t, a, w)
	expect("CreateInstances claimed (waiter)")
	lw := store.Lease{InstanceID: "waiter", Owner: "node-b", Fence: 1}
	if err := a.Suspend(ctx, lw, store.Suspension{Status: store.StatusWaiting, WakeAt: now.Add(time.Hour), WaitingEvent: "go"}, now); err != nil {
		t.Fatal(err)
	}
	expect("Suspend")
	if err := a.SendEvent(ctx, store.Event{InstanceID: "waiter", Type: "other", Payload: []byte(`1`), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	expect("SendEvent of another type")
	if err := a.SendEvent(ctx, store.Event{InstanceID: "waiter", Type: "go", Payload: []byte(`1`), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	expect("SendEvent waking it", inst(store.WakeInstances, "svc-e"))
	// An event sent while the instance ran wakes nobody; the Suspend of
	// the wait that finds it does (its engine scheduled the deadline).
	w2 := newOwned("waiter2", "node-b", store.StatusRunning)
	w2.Service, w2.CreatedAt = "svc-f", now
	create(t, a, w2)
	expect("CreateInstances claimed (waiter2)")
	if err := a.SendEvent(ctx, store.Event{InstanceID: "waiter2", Type: "go", Payload: []byte(`1`), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	expect("SendEvent to a running instance")
	lw2 := store.Lease{InstanceID: "waiter2", Owner: "node-b", Fence: 1}
	if err := a.Suspend(ctx, lw2, store.Suspension{Status: store.StatusWaiting, WakeAt: now.Add(time.Hour), WaitingEvent: "go"}, now); err != nil {
		t.Fatal(err)
	}
	expect("Suspend finding a buffered event", inst(store.WakeInstances, "svc-f"))

	// Pause and resume, restart.
	if _, err := a.Pause(ctx, "later", now); err != nil {
		t.Fatal(err)
	}
	expect("Pause")
	if err := a.Resume(ctx, "later", now); err != nil {
		t.Fatal(err)
	}
	expect("Resume of an instance due later") // its hour-long wait is shifted, not due
	if _, err := a.Pause(ctx, "queued", now); err != nil {
		t.Fatal(err)
	}
	if err := a.Resume(ctx, "queued", now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	expect("Resume of a due instance", inst(store.WakeInstances, "svc-b"))
	if err := a.Restart(ctx, "owned", now); err != nil {
		t.Fatal(err)
	}
	expect("Restart", inst(store.WakeInstances, "svc-b"))

	// Think outbox: the end of a submission a workflow waits for, and of
	// one nobody waits for.
	key := store.AgentKey{Class: "Helper", Name: "h1"}
	sub := func(id, notify string) {
		t.Helper()
		s := &store.Submission{ID: id, AgentKey: key, Messages: []byte(`[]`), Status: store.SubmissionPending, CreatedAt: now}
		if notify != "" {
			s.NotifyInstance, s.NotifyEvent = notify, "answer"
		}
		if _, _, err := a.CreateSubmission(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	sub("plain", "")
	expect("CreateSubmission")
	if _, err := a.CancelSubmission(ctx, key, "plain", now); err != nil {
		t.Fatal(err)
	}
	expect("CancelSubmission without a waiting workflow")
	sub("waited", "waiter")
	if _, err := a.CancelSubmission(ctx, key, "waited", now); err != nil {
		t.Fatal(err)
	}
	expect("CancelSubmission with a waiting workflow", inst(store.WakeOutbox, ""))
	sub("run", "waiter")
	if _, err := a.StartSubmission(ctx, key, "node-a", now); err != nil {
		t.Fatal(err)
	}
	expect("StartSubmission")
	if err := a.FinishSubmission(ctx, key, "run", "node-a", store.SubmissionCompleted, "", []byte(`{}`), store.Usage{}, now); err != nil {
		t.Fatal(err)
	}
	expect("FinishSubmission with a waiting workflow", inst(store.WakeOutbox, ""))
	sub("run2", "")
	if _, err := a.StartSubmission(ctx, key, "node-a", now); err != nil {
		t.Fatal(err)
	}
	if err := a.FinishSubmission(ctx, key, "run2", "node-a", store.SubmissionCompleted, "", []byte(`{}`), store.Usage{}, now); err != nil {
		t.Fatal(err)
	}
	expect("FinishSubmission without a waiting workflow")

	// FinishSubmissionAndDeliver: the event wakes a waiting instance, or
	// claims it (nothing to tell: the claiming node runs it), or is left
	// to the outbox.
	waiting := func(id, service string) {
		t.Helper()
		in := newOwned(id, "node-b", store.StatusRunning)
		in.Service, in.CreatedAt = service, now
		create(t, a, in)
		if err := a.Suspend(ctx, store.Lease{InstanceID: id, Owner: "node-b", Fence: 1},
			store.Suspension{Status: store.StatusWaiting, WakeAt: now.Add(time.Hour), WaitingEvent: "answer"}, now); err != nil {
			t.Fatal(err)
		}
		expect("a waiting instance " + id)
	}
	deliver := func(id string, d store.Delivery) {
		t.Helper()
		if _, err := a.StartSubmission(ctx, key, "node-a", now); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.FinishSubmissionAndDeliver(ctx, key, id, "node-a", store.SubmissionCompleted, "", []byte(`{}`), store.Usage{}, now, d); err != nil {
			t.Fatal(err)
		}
	}
	waiting("waiter3", "svc-g")
	sub("deliver-woken", "waiter3")
	deliver("deliver-woken", store.Delivery{MaxEventBytes: 1 << 20})
	expect("FinishSubmissionAndDeliver waking the instance", inst(store.WakeInstances, "svc-g"))
	waiting("waiter4", "svc-h")
	sub("deliver-claimed", "waiter4")
	deliver("deliver-claimed", store.Delivery{MaxEventBytes: 1 << 20, ClaimOwner: "node-a", ClaimService: "svc-h"})
	expect("FinishSubmissionAndDeliver claiming the instance")
	sub("deliver-refused", "waiter4")
	deliver("deliver-refused", store.Delivery{MaxEventBytes: 1})
	expect("FinishSubmissionAndDeliver leaving it to the outbox", inst(store.WakeOutbox, ""))

	// A handle's subscriber that cancelled hears nothing more.
	heard := 0
	cancel := wb.Subscribe(func(store.Wake) { heard++ })
	cancel()
	q2 := newInstance("queued2", now)
	q2.Service, q2.CreatedAt = "svc-b", now
	create(t, a, q2)
	expect("CreateInstances queued (again)", inst(store.WakeInstances, "svc-b"))
	if heard != 0 {
		t.Errorf("a cancelled subscriber heard %d wakes", heard)
	}
}

func cmpWake(x, y store.Wake) int {
	if x.Kind != y.Kind {
		return int(x.Kind) - int(y.Kind)
	}
	switch {
	case x.Key < y.Key:
		return -1
	case x.Key > y.Key:
		return 1
	}
	return 0
}

// wakeLog records the wakes a subscriber heard.
type wakeLog struct {
	mu  sync.Mutex
	got []store.Wake
}

func newWakeLog(w store.Waker) *wakeLog {
	l := &wakeLog{}
	w.Subscribe(func(wk store.Wake) {
		l.mu.Lock()
		l.got = append(l.got, wk)
		l.mu.Unlock()
	})
	return l
}

func (l *wakeLog) has(w store.Wake) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.got, w)
}

func (l *wakeLog) all() []store.Wake {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// drain returns the wakes heard and forgets them.
func (l *wakeLog) drain() []store.Wake {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

func (l *wakeLog) wait(w store.Wake, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !l.has(w) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
