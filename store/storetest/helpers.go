package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

// t0 is the suite's reference time: fixed, in UTC, with microsecond
// precision. Every time the suite passes to a store is t0 plus an offset.
var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 891011000, time.UTC)

// at returns t0 + d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// farFuture is later than any time the suite uses otherwise.
var farFuture = at(1000 * 24 * time.Hour)

// newInstance returns a queued, unowned instance of the default service due at wake.
func newInstance(id string, wake time.Time) *store.Instance {
	return &store.Instance{
		ID:        id,
		Workflow:  "order",
		Params:    []byte(`{"id":"` + id + `"}`),
		Status:    store.StatusQueued,
		CreatedAt: t0,
		WakeAt:    wake,
	}
}

// newOwned returns an instance created already claimed by owner.
func newOwned(id, owner string, status store.Status) *store.Instance {
	return &store.Instance{
		ID:        id,
		Workflow:  "order",
		Params:    []byte(`{"id":"` + id + `"}`),
		Status:    status,
		CreatedAt: t0,
		Owner:     owner,
	}
}

func create(t *testing.T, s store.Store, insts ...*store.Instance) {
	t.Helper()
	if err := s.CreateInstances(t.Context(), insts); err != nil {
		t.Fatalf("CreateInstances: %v", err)
	}
}

// start creates an instance owned by owner (status running) and returns its lease.
func start(t *testing.T, s store.Store, id, owner string) store.Lease {
	t.Helper()
	create(t, s, newOwned(id, owner, store.StatusRunning))
	return store.Lease{InstanceID: id, Owner: owner, Fence: 1}
}

func get(t *testing.T, s store.Store, id string) *store.Instance {
	t.Helper()
	in, err := s.GetInstance(t.Context(), id)
	if err != nil {
		t.Fatalf("GetInstance(%q): %v", id, err)
	}
	if in.ID != id {
		t.Fatalf("GetInstance(%q) returned instance %q", id, in.ID)
	}
	return in
}

func steps(t *testing.T, s store.Store, id string) []store.Step {
	t.Helper()
	st, err := s.ListSteps(t.Context(), id)
	if err != nil {
		t.Fatalf("ListSteps(%q): %v", id, err)
	}
	return st
}

func events(t *testing.T, s store.Store, id string) []store.Event {
	t.Helper()
	evs, err := s.ListEvents(t.Context(), id)
	if err != nil {
		t.Fatalf("ListEvents(%q): %v", id, err)
	}
	return evs
}

func claim(t *testing.T, s store.Store, owner, service string, now time.Time, limit int) []*store.Instance {
	t.Helper()
	got, err := s.ClaimDue(t.Context(), owner, service, now, limit)
	if err != nil {
		t.Fatalf("ClaimDue(%q, %q, %s, %d): %v", owner, service, fmtTime(now), limit, err)
	}
	if len(got) > limit {
		t.Fatalf("ClaimDue(limit %d) claimed %d instances", limit, len(got))
	}
	return got
}

// claimID claims due instances of the default service at now and requires
// that exactly the instance id was claimed. It returns the lease.
func claimID(t *testing.T, s store.Store, id, owner string, now time.Time) store.Lease {
	t.Helper()
	got := claim(t, s, owner, "", now, 100)
	if ids := instanceIDs(got); !slices.Equal(ids, []string{id}) {
		t.Fatalf("ClaimDue at %s claimed %q, want [%q]", fmtTime(now), ids, id)
	}
	return leaseOf(got[0])
}

func leaseOf(in *store.Instance) store.Lease {
	return store.Lease{InstanceID: in.ID, Owner: in.Owner, Fence: in.Fence}
}

func saveStep(t *testing.T, s store.Store, l store.Lease, st store.Step, now time.Time) store.Status {
	t.Helper()
	status, err := s.SaveStep(t.Context(), l, st, now)
	if err != nil {
		t.Fatalf("SaveStep(%+v, seq %d): %v", l, st.Seq, err)
	}
	return status
}

func suspend(t *testing.T, s store.Store, l store.Lease, sus store.Suspension, now time.Time) {
	t.Helper()
	if err := s.Suspend(t.Context(), l, sus, now); err != nil {
		t.Fatalf("Suspend(%+v): %v", l, err)
	}
}

func finish(t *testing.T, s store.Store, l store.Lease, o store.Outcome, now time.Time) {
	t.Helper()
	if err := s.Finish(t.Context(), l, o, now); err != nil {
		t.Fatalf("Finish(%+v): %v", l, err)
	}
}

func send(t *testing.T, s store.Store, id, typ, payload string, now time.Time) {
	t.Helper()
	e := store.Event{InstanceID: id, Type: typ, Payload: []byte(payload), CreatedAt: now}
	if err := s.SendEvent(t.Context(), e); err != nil {
		t.Fatalf("SendEvent(%q, %q): %v", id, typ, err)
	}
}

func pause(t *testing.T, s store.Store, id string, now time.Time) store.Status {
	t.Helper()
	status, err := s.Pause(t.Context(), id, now)
	if err != nil {
		t.Fatalf("Pause(%q): %v", id, err)
	}
	return status
}

func resume(t *testing.T, s store.Store, id string, now time.Time) {
	t.Helper()
	if err := s.Resume(t.Context(), id, now); err != nil {
		t.Fatalf("Resume(%q): %v", id, err)
	}
}

func terminate(t *testing.T, s store.Store, id string, now time.Time) {
	t.Helper()
	if err := s.Terminate(t.Context(), id, now); err != nil {
		t.Fatalf("Terminate(%q): %v", id, err)
	}
}

func restart(t *testing.T, s store.Store, id string, now time.Time) {
	t.Helper()
	if err := s.Restart(t.Context(), id, now); err != nil {
		t.Fatalf("Restart(%q): %v", id, err)
	}
}

func nextWakes(t *testing.T, s store.Store, service string, until time.Time, limit int) []time.Time {
	t.Helper()
	ts, err := s.NextWakeTimes(t.Context(), service, until, limit)
	if err != nil {
		t.Fatalf("NextWakeTimes(%q, %s, %d): %v", service, fmtTime(until), limit, err)
	}
	return ts
}

// wantErr fails the test unless err matches target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one matching %q", what, err, target)
	}
}

// wantErrNaming is wantErr that also requires the message to name id.
func wantErrNaming(t *testing.T, what string, err, target error, id string) {
	t.Helper()
	wantErr(t, what, err, target)
	if !strings.Contains(err.Error(), id) {
		t.Errorf("%s: error %q does not name %q", what, err, id)
	}
}

func wantStatus(t *testing.T, what string, got, want store.Status) {
	t.Helper()
	if got != want {
		t.Errorf("%s: status %q, want %q", what, got, want)
	}
}

func instanceIDs(insts []*store.Instance) []string {
	ids := make([]string, len(insts))
	for i, in := range insts {
		ids[i] = in.ID
	}
	slices.Sort(ids)
	return ids
}

// fmtTime shows a time relative to t0, which is how the suite writes times.
func fmtTime(tm time.Time) string {
	if tm.IsZero() {
		return "zero"
	}
	d := tm.Sub(t0)
	if d < 0 {
		return "t0-" + (-d).String()
	}
	return "t0+" + d.String()
}

func fmtTimes(ts []time.Time) string {
	s := make([]string, len(ts))
	for i, tm := range ts {
		s[i] = fmtTime(tm)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func equalTimes(a, b []time.Time) bool {
	return slices.EqualFunc(a, b, time.Time.Equal)
}

// diffs collects field mismatches.
type diffs []string

func (d *diffs) add(field string, got, want any) {
	*d = append(*d, fmt.Sprintf("%s = %v, want %v", field, got, want))
}

func eq[T comparable](d *diffs, field string, got, want T) {
	if got != want {
		d.add(field, fmt.Sprintf("%q", fmt.Sprint(got)), fmt.Sprintf("%q", fmt.Sprint(want)))
	}
}

func eqTime(d *diffs, field string, got, want time.Time) {
	if !got.Equal(want) {
		d.add(field, fmtTime(got), fmtTime(want))
	}
}

func eqBytes(d *diffs, field string, got, want []byte) {
	if !bytes.Equal(got, want) {
		d.add(field, fmt.Sprintf("%q", got), fmt.Sprintf("%q", want))
	}
}

func instanceDiffs(got, want *store.Instance) diffs {
	var d diffs
	eq(&d, "ID", got.ID, want.ID)
	eq(&d, "Workflow", got.Workflow, want.Workflow)
	eq(&d, "Service", got.Service, want.Service)
	eqBytes(&d, "Params", got.Params, want.Params)
	eq(&d, "Origin", got.Origin, want.Origin)
	eq(&d, "Status", got.Status, want.Status)
	eq(&d, "ErrorName", got.ErrorName, want.ErrorName)
	eq(&d, "ErrorMessage", got.ErrorMessage, want.ErrorMessage)
	eqBytes(&d, "Output", got.Output, want.Output)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	eqTime(&d, "FinishedAt", got.FinishedAt, want.FinishedAt)
	eqTime(&d, "WakeAt", got.WakeAt, want.WakeAt)
	eq(&d, "WaitingEvent", got.WaitingEvent, want.WaitingEvent)
	eqTime(&d, "PausedAt", got.PausedAt, want.PausedAt)
	eq(&d, "Owner", got.Owner, want.Owner)
	eq(&d, "Fence", got.Fence, want.Fence)
	eq(&d, "Restarts", got.Restarts, want.Restarts)
	return d
}

// checkInstance compares every field of got with want.
func checkInstance(t *testing.T, what string, got, want *store.Instance) {
	t.Helper()
	if d := instanceDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: instance %q:\n\t%s", what, want.ID, strings.Join(d, "\n\t"))
	}
}

func stepDiffs(got, want store.Step) diffs {
	var d diffs
	eq(&d, "Seq", got.Seq, want.Seq)
	eq(&d, "Name", got.Name, want.Name)
	eq(&d, "Occurrence", got.Occurrence, want.Occurrence)
	eq(&d, "Kind", got.Kind, want.Kind)
	eq(&d, "State", got.State, want.State)
	eq(&d, "Attempt", got.Attempt, want.Attempt)
	eqBytes(&d, "Result", got.Result, want.Result)
	eq(&d, "ErrorName", got.ErrorName, want.ErrorName)
	eq(&d, "ErrorMessage", got.ErrorMessage, want.ErrorMessage)
	eqTime(&d, "WakeAt", got.WakeAt, want.WakeAt)
	eqTime(&d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	return d
}

// checkSteps compares every field of every step.
func checkSteps(t *testing.T, what string, got, want []store.Step) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d steps, want %d:\n\tgot  %+v\n\twant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range got {
		if d := stepDiffs(got[i], want[i]); len(d) > 0 {
			t.Errorf("%s: step %d:\n\t%s", what, i, strings.Join(d, "\n\t"))
		}
	}
}

func eventDiffs(got, want store.Event) diffs {
	var d diffs
	eq(&d, "Seq", got.Seq, want.Seq)
	eq(&d, "InstanceID", got.InstanceID, want.InstanceID)
	eq(&d, "Type", got.Type, want.Type)
	eqBytes(&d, "Payload", got.Payload, want.Payload)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eq(&d, "Consumed", got.Consumed, want.Consumed)
	return d
}

// checkEvents compares every field of every event.
func checkEvents(t *testing.T, what string, got, want []store.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d events, want %d:\n\tgot  %+v\n\twant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range got {
		if d := eventDiffs(got[i], want[i]); len(d) > 0 {
			t.Errorf("%s: event %d:\n\t%s", what, i, strings.Join(d, "\n\t"))
		}
	}
}

// snapshot is everything the store holds about one instance.
type snapshot struct {
	id     string
	inst   *store.Instance // nil when not found
	steps  []store.Step
	events []store.Event
}

func snap(t *testing.T, s store.Store, id string) snapshot {
	t.Helper()
	in, err := s.GetInstance(t.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		in = nil
	} else if err != nil {
		t.Fatalf("GetInstance(%q): %v", id, err)
	}
	return snapshot{id: id, inst: in, steps: steps(t, s, id), events: events(t, s, id)}
}

// checkUnchanged fails if the instance's rows differ from before.
func checkUnchanged(t *testing.T, what string, s store.Store, before snapshot) {
	t.Helper()
	id := before.id
	after := snap(t, s, id)
	switch {
	case before.inst == nil && after.inst != nil:
		t.Errorf("%s: instance %q appeared", what, id)
	case before.inst != nil && after.inst == nil:
		t.Errorf("%s: instance %q disappeared", what, id)
	case before.inst != nil:
		checkInstance(t, what+": instance changed", after.inst, before.inst)
	}
	checkSteps(t, what+": steps changed", after.steps, before.steps)
	checkEvents(t, what+": events changed", after.events, before.events)
}

// Step constructors. Results and payloads are JSON.

func doStep(seq int, name, result string) store.Step {
	return store.Step{Seq: seq, Name: name, Kind: store.KindDo, State: store.StepDone, Attempt: 1, Result: []byte(result)}
}

func sleepStep(seq int, wake time.Time) store.Step {
	return store.Step{Seq: seq, Name: "nap", Kind: store.KindSleep, State: store.StepPending, WakeAt: wake}
}

func waitStep(seq int, deadline time.Time) store.Step {
	return store.Step{Seq: seq, Name: "approval", Kind: store.KindWait, State: store.StepPending, WakeAt: deadline}
}

// stored is st as the store returns it after writing it at now.
func stored(st store.Step, now time.Time) store.Step {
	st.UpdatedAt = now
	return st
}

func ptr[T any](v T) *T { return &v }
