package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

// The operators' queries (store.InspectStore): instance lists and counts,
// step attempts and timing, consumed events, agent and outbox lists.

// inspectFixture creates seven instances, one per status, and returns them
// as GetInstance reads them. Newest first they are g, f, e (f and e created
// at the same time), d, c, b, a.
//
//	id workflow service origin     created  status      updated
//	a  order    ""      -          t0+1s    queued      t0+1s
//	b  order    billing -          t0+2s    running     t0+2s
//	c  invoice  ""      Counter/x  t0+3s    complete    t0+1h
//	d  invoice  billing Counter/y  t0+4s    errored     t0+2h
//	e  ship     ""      Timer/z    t0+5s    terminated  t0+3h
//	f  order    ""      -          t0+5s    paused      t0+4h
//	g  ship     eu      -          t0+6s    waiting     t0+5h
func inspectFixture(t *testing.T, s store.Store) map[string]*store.Instance {
	t.Helper()
	mk := func(id, workflow, service string, origin store.AgentKey, created time.Duration, owner string) *store.Instance {
		in := &store.Instance{ID: id, Workflow: workflow, Service: service, Origin: origin,
			Params: []byte(`{"id":"` + id + `"}`), Status: store.StatusQueued, CreatedAt: at(created)}
		if owner != "" {
			in.Owner, in.Status = owner, store.StatusRunning
		} else {
			in.WakeAt = farFuture
		}
		return in
	}
	create(t, s,
		mk("a", "order", "", store.AgentKey{}, time.Second, ""),
		mk("b", "order", "billing", store.AgentKey{}, 2*time.Second, "node-1"),
		mk("c", "invoice", "", store.AgentKey{Class: "Counter", Name: "x"}, 3*time.Second, "node-1"),
		mk("d", "invoice", "billing", store.AgentKey{Class: "Counter", Name: "y"}, 4*time.Second, "node-1"),
		mk("e", "ship", "", store.AgentKey{Class: "Timer", Name: "z"}, 5*time.Second, ""),
		mk("f", "order", "", store.AgentKey{}, 5*time.Second, ""),
		mk("g", "ship", "eu", store.AgentKey{}, 6*time.Second, "node-1"),
	)
	lease := func(id string) store.Lease { return store.Lease{InstanceID: id, Owner: "node-1", Fence: 1} }
	finish(t, s, lease("c"), store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Hour))
	finish(t, s, lease("d"), store.Outcome{Status: store.StatusErrored, ErrorName: "Boom", ErrorMessage: "boom"}, at(2*time.Hour))
	terminate(t, s, "e", at(3*time.Hour))
	wantStatus(t, "Pause(f)", pause(t, s, "f", at(4*time.Hour)), store.StatusPaused)
	suspend(t, s, lease("g"), store.Suspension{Status: store.StatusWaiting, WakeAt: farFuture}, at(5*time.Hour))

	all := make(map[string]*store.Instance)
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		all[id] = get(t, s, id)
	}
	return all
}

func listInstances(t *testing.T, s store.Store, f store.InstanceFilter) []store.Instance {
	t.Helper()
	got, err := s.ListInstances(t.Context(), f)
	if err != nil {
		t.Fatalf("ListInstances(%+v): %v", f, err)
	}
	return got
}

func ids(insts []store.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	return out
}

// wantFilterError requires err to be a *FilterError naming field that
// matches store.ErrInvalidFilter.
func wantFilterError(t *testing.T, what string, err error, field string) {
	t.Helper()
	var fe *store.FilterError
	if !errors.Is(err, store.ErrInvalidFilter) || !errors.As(err, &fe) {
		t.Fatalf("%s: error %v, want a *store.FilterError matching ErrInvalidFilter", what, err)
	}
	if fe.Field != field {
		t.Errorf("%s: error names field %q, want %q (%v)", what, fe.Field, field, err)
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("%s: error %q does not name %q", what, err, field)
	}
}

var inspectCases = []testCase{
	{"ListInstancesFilters", func(t *testing.T, s store.Store) {
		all := inspectFixture(t, s)
		counter := store.AgentKey{Class: "Counter"}
		for _, tc := range []struct {
			name string
			f    store.InstanceFilter
			want []string
		}{
			{"None", store.InstanceFilter{}, []string{"g", "f", "e", "d", "c", "b", "a"}},
			{"Limit", store.InstanceFilter{Limit: 2}, []string{"g", "f"}},
			{"OneStatus", store.InstanceFilter{Statuses: []store.Status{store.StatusComplete}}, []string{"c"}},
			{"Statuses", store.InstanceFilter{Statuses: []store.Status{store.StatusQueued, store.StatusPaused, store.StatusTerminated}}, []string{"f", "e", "a"}},
			{"StatusNoneHas", store.InstanceFilter{Statuses: []store.Status{store.StatusWaitingForPause}}, nil},
			{"OneWorkflow", store.InstanceFilter{Workflows: []string{"order"}}, []string{"f", "b", "a"}},
			{"Workflows", store.InstanceFilter{Workflows: []string{"order", "ship"}}, []string{"g", "f", "e", "b", "a"}},
			{"UnknownWorkflow", store.InstanceFilter{Workflows: []string{"nope"}}, nil},
			{"DefaultService", store.InstanceFilter{Services: []string{""}}, []string{"f", "e", "c", "a"}},
			{"Services", store.InstanceFilter{Services: []string{"billing", "eu"}}, []string{"g", "d", "b"}},
			{"OriginClass", store.InstanceFilter{Origin: counter}, []string{"d", "c"}},
			{"OriginAgent", store.InstanceFilter{Origin: store.AgentKey{Class: "Counter", Name: "x"}}, []string{"c"}},
			{"Created", store.InstanceFilter{CreatedFrom: at(3 * time.Second), CreatedTo: at(5 * time.Second)}, []string{"d", "c"}},
			{"CreatedFrom", store.InstanceFilter{CreatedFrom: at(5 * time.Second)}, []string{"g", "f", "e"}},
			{"CreatedTo", store.InstanceFilter{CreatedTo: at(2 * time.Second)}, []string{"a"}},
			{"Updated", store.InstanceFilter{UpdatedFrom: at(2 * time.Hour), UpdatedTo: at(4 * time.Hour)}, []string{"e", "d"}},
			{"UpdatedFrom", store.InstanceFilter{UpdatedFrom: at(4 * time.Hour)}, []string{"g", "f"}},
			{"StatusesWorkflowService", store.InstanceFilter{
				Statuses:  []store.Status{store.StatusComplete, store.StatusErrored},
				Workflows: []string{"invoice"}, Services: []string{"billing"}}, []string{"d"}},
			{"StatusesAndWorkflows", store.InstanceFilter{
				Statuses:  []store.Status{store.StatusQueued, store.StatusTerminated, store.StatusWaiting},
				Workflows: []string{"order", "ship"}}, []string{"g", "e", "a"}},
			{"WorkflowsCreatedLimit", store.InstanceFilter{Workflows: []string{"order", "ship"}, CreatedFrom: at(5 * time.Second), Limit: 2}, []string{"g", "f"}},
			{"OriginStatusUpdated", store.InstanceFilter{Origin: counter, Statuses: []store.Status{store.StatusErrored, store.StatusComplete},
				UpdatedTo: at(2 * time.Hour)}, []string{"c"}},
			{"AfterTie", store.InstanceFilter{After: &store.InstanceCursor{CreatedAt: at(5 * time.Second), ID: "f"}}, []string{"e", "d", "c", "b", "a"}},
			{"AfterStatuses", store.InstanceFilter{Statuses: []store.Status{store.StatusQueued, store.StatusPaused, store.StatusTerminated},
				After: &store.InstanceCursor{CreatedAt: at(5 * time.Second), ID: "e"}}, []string{"a"}},
			{"AfterMissing", store.InstanceFilter{After: &store.InstanceCursor{CreatedAt: at(3500 * time.Millisecond), ID: "zz"}}, []string{"c", "b", "a"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := listInstances(t, s, tc.f)
				if !slices.Equal(ids(got), tc.want) {
					t.Fatalf("ListInstances(%+v) = %q, want %q", tc.f, ids(got), tc.want)
				}
				for i := range got {
					checkInstance(t, "listed", &got[i], all[got[i].ID])
				}
			})
		}
	}},
	{"ListInstancesPagesWithTies", func(t *testing.T, s store.Store) {
		// 30 instances created at 5 distinct times, so every page boundary
		// falls among instances created together.
		var batch []*store.Instance
		for i := range 30 {
			in := newInstance(fmt.Sprintf("p%02d", (i*7)%30), farFuture)
			in.CreatedAt = at(time.Duration(i%5) * time.Second)
			in.Workflow = []string{"a", "b", "c"}[i%3]
			if i%2 == 1 {
				in.Owner, in.Status, in.WakeAt = "node-1", store.StatusRunning, time.Time{}
			}
			batch = append(batch, in)
		}
		create(t, s, batch...)
		for _, tc := range []struct {
			name  string
			f     store.InstanceFilter
			match func(*store.Instance) bool
		}{
			{"All", store.InstanceFilter{}, func(*store.Instance) bool { return true }},
			{"Status", store.InstanceFilter{Statuses: []store.Status{store.StatusQueued}},
				func(in *store.Instance) bool { return in.Status == store.StatusQueued }},
			{"Workflows", store.InstanceFilter{Workflows: []string{"a", "b"}},
				func(in *store.Instance) bool { return in.Workflow != "c" }},
			{"StatusesAndWorkflow", store.InstanceFilter{Statuses: []store.Status{store.StatusQueued, store.StatusRunning}, Workflows: []string{"c"}},
				func(in *store.Instance) bool { return in.Workflow == "c" }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var want []string
				sorted := slices.Clone(batch)
				slices.SortFunc(sorted, func(x, y *store.Instance) int {
					return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), strings.Compare(y.ID, x.ID))
				})
				for _, in := range sorted {
					if tc.match(in) {
						want = append(want, in.ID)
					}
				}
				var got []string
				f := tc.f
				f.Limit = 4
				for page := 0; ; page++ {
					if page > 30 {
						t.Fatalf("paging does not end: %q so far", got)
					}
					insts := listInstances(t, s, f)
					got = append(got, ids(insts)...)
					if len(insts) < f.Limit {
						break
					}
					last := insts[len(insts)-1]
					f.After = &store.InstanceCursor{CreatedAt: last.CreatedAt, ID: last.ID}
				}
				if !slices.Equal(got, want) {
					t.Errorf("pages of 4 = %q, want %q", got, want)
				}
			})
		}
	}},
	{"CountInstances", func(t *testing.T, s store.Store) {
		inspectFixture(t, s)
		for _, tc := range []struct {
			name string
			f    store.InstanceFilter
			want map[store.Status]int
		}{
			{"None", store.InstanceFilter{}, map[store.Status]int{
				store.StatusQueued: 1, store.StatusRunning: 1, store.StatusComplete: 1, store.StatusErrored: 1,
				store.StatusTerminated: 1, store.StatusPaused: 1, store.StatusWaiting: 1}},
			{"Workflow", store.InstanceFilter{Workflows: []string{"invoice"}}, map[store.Status]int{
				store.StatusComplete: 1, store.StatusErrored: 1}},
			{"IgnoresStatusesAfterLimit", store.InstanceFilter{Workflows: []string{"order"},
				Statuses: []store.Status{"bogus"}, After: &store.InstanceCursor{}, Limit: 1000},
				map[store.Status]int{store.StatusQueued: 1, store.StatusRunning: 1, store.StatusPaused: 1}},
			{"ServiceOriginCreated", store.InstanceFilter{Services: []string{"billing", ""}, Origin: store.AgentKey{Class: "Counter"},
				CreatedFrom: at(4 * time.Second)}, map[store.Status]int{store.StatusErrored: 1}},
			{"NoMatch", store.InstanceFilter{UpdatedFrom: farFuture}, map[store.Status]int{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.CountInstances(t.Context(), tc.f)
				if err != nil {
					t.Fatalf("CountInstances(%+v): %v", tc.f, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("CountInstances(%+v) = %v, want %v", tc.f, got, tc.want)
				}
			})
		}
	}},
	{"InvalidFilters", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("a", farFuture))
		ctx := t.Context()
		for _, tc := range []struct {
			name  string
			call  func() error
			field string
		}{
			{"LimitTooLarge", func() error { _, err := s.ListInstances(ctx, store.InstanceFilter{Limit: 101}); return err }, "Limit"},
			{"LimitNegative", func() error { _, err := s.ListInstances(ctx, store.InstanceFilter{Limit: -1}); return err }, "Limit"},
			{"UnknownStatus", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{Statuses: []store.Status{store.StatusQueued, "sleeping"}})
				return err
			}, "Statuses[1]"},
			{"StatusUnknown", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{Statuses: []store.Status{store.StatusUnknown}})
				return err
			}, "Statuses[0]"},
			{"EmptyWorkflow", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{Workflows: []string{""}})
				return err
			}, "Workflows[0]"},
			{"OriginNameAlone", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{Origin: store.AgentKey{Name: "x"}})
				return err
			}, "Origin.Class"},
			{"CreatedToBeforeFrom", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{CreatedFrom: at(time.Hour), CreatedTo: t0})
				return err
			}, "CreatedTo"},
			{"UpdatedEmptyRange", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{UpdatedFrom: t0, UpdatedTo: t0})
				return err
			}, "UpdatedTo"},
			{"CursorWithoutID", func() error {
				_, err := s.ListInstances(ctx, store.InstanceFilter{After: &store.InstanceCursor{CreatedAt: t0}})
				return err
			}, "After.ID"},
			{"CountOriginNameAlone", func() error {
				_, err := s.CountInstances(ctx, store.InstanceFilter{Origin: store.AgentKey{Name: "x"}})
				return err
			}, "Origin.Class"},
			{"CountCreatedRange", func() error {
				_, err := s.CountInstances(ctx, store.InstanceFilter{CreatedFrom: t0, CreatedTo: at(-time.Second)})
				return err
			}, "CreatedTo"},
			{"AgentsLimit", func() error { _, err := s.ListAgents(ctx, store.AgentFilter{Limit: 500}); return err }, "Limit"},
			{"AgentsAfterOtherClass", func() error {
				_, err := s.ListAgents(ctx, store.AgentFilter{Class: "Counter", After: chatA})
				return err
			}, "After.Class"},
			{"AgentsAfterNameAlone", func() error {
				_, err := s.ListAgents(ctx, store.AgentFilter{After: store.AgentKey{Name: "a"}})
				return err
			}, "After.Class"},
			{"AgentsAfterClassAlone", func() error {
				_, err := s.ListAgents(ctx, store.AgentFilter{After: store.AgentKey{Class: "Counter"}})
				return err
			}, "After.Name"},
			{"OutboxAfterNegative", func() error { _, err := s.ListOutboxes(ctx, store.OutboxFilter{AfterID: -1}); return err }, "AfterID"},
			{"OutboxAgentNameAlone", func() error {
				_, err := s.ListOutboxes(ctx, store.OutboxFilter{Agent: store.AgentKey{Name: "a"}})
				return err
			}, "Agent.Class"},
			{"OutboxLimit", func() error { _, err := s.ListOutboxes(ctx, store.OutboxFilter{Limit: 101}); return err }, "Limit"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantFilterError(t, tc.name, tc.call(), tc.field)
			})
		}
	}},
	{"StepAttempts", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		do := func(seq, attempt int, state store.StepState, errName string, started time.Duration) store.Step {
			st := store.Step{Seq: seq, Name: fmt.Sprint("step", seq), Kind: store.KindDo, State: state, Attempt: attempt,
				StartedAt: at(started)}
			if errName != "" {
				st.ErrorName, st.ErrorMessage = errName, strings.ToLower(errName)+" happened"
			} else {
				st.Result = []byte(`"ok"`)
			}
			return st
		}
		// Step 0 fails twice, then succeeds at its third attempt.
		retry := do(0, 2, store.StepPending, "Flaky", time.Second)
		retry.WakeAt = at(10 * time.Second)
		suspend(t, s, l, store.Suspension{Step: &retry, Status: store.StatusRunning, WakeAt: retry.WakeAt}, at(2*time.Second))
		l = claimID(t, s, "a", "node-1", at(10*time.Second))
		retry = do(0, 3, store.StepPending, "Flakier", 11*time.Second)
		retry.WakeAt = at(20 * time.Second)
		suspend(t, s, l, store.Suspension{Step: &retry, Status: store.StatusRunning, WakeAt: retry.WakeAt}, at(12*time.Second))
		l = claimID(t, s, "a", "node-1", at(20*time.Second))
		saveStep(t, s, l, do(0, 3, store.StepDone, "", 21*time.Second), at(22*time.Second))
		// Step 1 succeeds at once; step 2 fails for good at its first.
		saveStep(t, s, l, do(1, 1, store.StepDone, "", 23*time.Second), at(24*time.Second))
		saveStep(t, s, l, do(2, 1, store.StepFailed, "Fatal", 25*time.Second), at(26*time.Second))
		// A sleep written without a start is started at its write.
		saveStep(t, s, l, sleepStep(3, at(time.Hour)), at(30*time.Second))

		want := []store.StepAttempt{
			{Seq: 0, Attempt: 1, StartedAt: at(time.Second), EndedAt: at(2 * time.Second), ErrorName: "Flaky", ErrorMessage: "flaky happened"},
			{Seq: 0, Attempt: 2, StartedAt: at(11 * time.Second), EndedAt: at(12 * time.Second), ErrorName: "Flakier", ErrorMessage: "flakier happened"},
			{Seq: 0, Attempt: 3, StartedAt: at(21 * time.Second), EndedAt: at(22 * time.Second)},
			{Seq: 1, Attempt: 1, StartedAt: at(23 * time.Second), EndedAt: at(24 * time.Second)},
			{Seq: 2, Attempt: 1, StartedAt: at(25 * time.Second), EndedAt: at(26 * time.Second), ErrorName: "Fatal", ErrorMessage: "fatal happened"},
		}
		checkAttempts(t, "after the steps", s, "a", want)
		wantStarts := []time.Time{at(time.Second), at(23 * time.Second), at(25 * time.Second), at(30 * time.Second)}
		checkStarts(t, "after the steps", steps(t, s, "a"), wantStarts)

		// Finishing the sleep keeps its start.
		done := sleepStep(3, at(time.Hour))
		done.State = store.StepDone
		saveStep(t, s, l, done, at(time.Hour))
		checkStarts(t, "after the sleep", steps(t, s, "a"), wantStarts)

		// A fenced-out write records no attempt.
		stale := do(4, 1, store.StepFailed, "Late", 40*time.Second)
		if _, err := s.SaveStep(t.Context(), store.Lease{InstanceID: "a", Owner: "node-2", Fence: 9}, stale, at(41*time.Second)); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("SaveStep with a stale lease: %v, want ErrLeaseLost", err)
		}
		checkAttempts(t, "after a stale write", s, "a", want)

		if got, err := s.ListStepAttempts(t.Context(), "nope"); err != nil || len(got) != 0 {
			t.Errorf("ListStepAttempts(unknown) = %+v, %v; want none", got, err)
		}
		restart(t, s, "a", at(2*time.Hour))
		checkAttempts(t, "after Restart", s, "a", nil)
	}},
	{"DeleteFinishedRemovesAttempts", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		failed := store.Step{Seq: 0, Name: "x", Kind: store.KindDo, State: store.StepFailed, Attempt: 1,
			ErrorName: "Fatal", ErrorMessage: "fatal", StartedAt: at(time.Second)}
		saveStep(t, s, l, failed, at(2*time.Second))
		finish(t, s, l, store.Outcome{Status: store.StatusErrored, ErrorName: "Fatal", ErrorMessage: "fatal"}, at(3*time.Second))
		checkAttempts(t, "before DeleteFinished", s, "a", []store.StepAttempt{
			{Seq: 0, Attempt: 1, StartedAt: at(time.Second), EndedAt: at(2 * time.Second), ErrorName: "Fatal", ErrorMessage: "fatal"}})
		if n, err := s.DeleteFinished(t.Context(), at(time.Hour), 10); err != nil || n != 1 {
			t.Fatalf("DeleteFinished = %d, %v; want 1", n, err)
		}
		checkAttempts(t, "after DeleteFinished", s, "a", nil)
		// The id is free again, and a new instance with it has no history.
		l = start(t, s, "a", "node-1")
		saveStep(t, s, l, failed, at(time.Hour))
		if got, err := s.ListStepAttempts(t.Context(), "a"); err != nil || len(got) != 1 || !got[0].EndedAt.Equal(at(time.Hour)) {
			t.Errorf("attempts of the new instance: %+v, %v; want its one", got, err)
		}
	}},
	{"ConsumedEvents", func(t *testing.T, s store.Store) {
		l := start(t, s, "a", "node-1")
		send(t, s, "a", "go", `1`, at(time.Second))
		send(t, s, "a", "go", `2`, at(2*time.Second))
		ev, err := s.TakeEvent(t.Context(), l, "go", waitStep(0, at(time.Hour)), at(5*time.Second))
		if err != nil || ev == nil {
			t.Fatalf("TakeEvent = %+v, %v; want the first event", ev, err)
		}
		if !ev.ConsumedAt.Equal(at(5 * time.Second)) {
			t.Errorf("TakeEvent's event ConsumedAt %s, want t0+5s", fmtTime(ev.ConsumedAt))
		}
		evs := events(t, s, "a")
		if len(evs) != 2 {
			t.Fatalf("%d events, want 2", len(evs))
		}
		if !evs[0].Consumed || !evs[0].ConsumedAt.Equal(at(5*time.Second)) {
			t.Errorf("first event: consumed %v at %s, want true at t0+5s", evs[0].Consumed, fmtTime(evs[0].ConsumedAt))
		}
		if evs[1].Consumed || !evs[1].ConsumedAt.IsZero() {
			t.Errorf("second event: consumed %v at %s, want false at zero", evs[1].Consumed, fmtTime(evs[1].ConsumedAt))
		}
		// The wait took its event at once: it started then.
		checkStarts(t, "after TakeEvent", steps(t, s, "a"), []time.Time{at(5 * time.Second)})
	}},
	{"ListAgents", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		keys := []store.AgentKey{
			{Class: "Timer", Name: "b"}, {Class: "Counter", Name: "c"}, {Class: "Counter", Name: "a"},
			{Class: "Timer", Name: "a"}, {Class: "Counter", Name: "e"}, {Class: "Counter", Name: "b"}, {Class: "Counter", Name: "d"},
		}
		for i, k := range keys {
			owner := "node-1"
			if k.Name == "b" {
				owner = "node-gone" // has no row: the agent is live nowhere
			}
			l := activate(t, s, k, owner, at(time.Duration(i)*time.Second))
			if k == counterA {
				saveState(t, s, l, `{"n":1}`, at(time.Minute))
			}
		}
		page := func(f store.AgentFilter) []store.AgentSummary {
			t.Helper()
			got, err := s.ListAgents(t.Context(), f)
			if err != nil {
				t.Fatalf("ListAgents(%+v): %v", f, err)
			}
			return got
		}
		names := func(as []store.AgentSummary) []string {
			out := make([]string, len(as))
			for i, a := range as {
				out[i] = a.String()
			}
			return out
		}
		all := page(store.AgentFilter{})
		if want := []string{"Counter/a", "Counter/b", "Counter/c", "Counter/d", "Counter/e", "Timer/a", "Timer/b"}; !slices.Equal(names(all), want) {
			t.Fatalf("ListAgents() = %q, want %q", names(all), want)
		}
		for _, a := range all {
			want := store.AgentSummary{AgentKey: a.AgentKey, Owner: "node-1"}
			i := slices.Index(keys, a.AgentKey)
			want.CreatedAt, want.UpdatedAt = at(time.Duration(i)*time.Second), at(time.Duration(i)*time.Second)
			if a.Name == "b" {
				want.Owner = ""
			}
			if a.AgentKey == counterA {
				want.StateBytes, want.UpdatedAt = len(`{"n":1}`), at(time.Minute)
			}
			if a.Owner != want.Owner || a.StateBytes != want.StateBytes || !a.CreatedAt.Equal(want.CreatedAt) || !a.UpdatedAt.Equal(want.UpdatedAt) {
				t.Errorf("agent %s: owner %q, %d state bytes, created %s, updated %s; want %q, %d, %s, %s", a.AgentKey,
					a.Owner, a.StateBytes, fmtTime(a.CreatedAt), fmtTime(a.UpdatedAt),
					want.Owner, want.StateBytes, fmtTime(want.CreatedAt), fmtTime(want.UpdatedAt))
			}
		}
		for _, tc := range []struct {
			name  string
			f     store.AgentFilter
			pages [][]string
		}{
			{"AllByThree", store.AgentFilter{Limit: 3}, [][]string{
				{"Counter/a", "Counter/b", "Counter/c"}, {"Counter/d", "Counter/e", "Timer/a"}, {"Timer/b"}}},
			{"ClassByTwo", store.AgentFilter{Class: "Counter", Limit: 2}, [][]string{
				{"Counter/a", "Counter/b"}, {"Counter/c", "Counter/d"}, {"Counter/e"}}},
			{"OtherClass", store.AgentFilter{Class: "Timer"}, [][]string{{"Timer/a", "Timer/b"}}},
			{"NoSuchClass", store.AgentFilter{Class: "Nope"}, [][]string{nil}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := tc.f
				for i, want := range tc.pages {
					got := page(f)
					if !slices.Equal(names(got), want) {
						t.Fatalf("page %d of %+v = %q, want %q", i, tc.f, names(got), want)
					}
					if len(got) > 0 {
						f.After = got[len(got)-1].AgentKey
					}
				}
			})
		}
	}},
	{"ListOutboxes", func(t *testing.T, s store.Store) {
		// Five messages: ids increase in this order.
		cancelled(t, s, chatA, "s1", "wf-1", at(time.Second))
		cancelled(t, s, chatA, "s2", "wf-2", at(2*time.Second))
		chatB := store.AgentKey{Class: "Chat", Name: "b"}
		cancelled(t, s, chatB, "s3", "wf-3", at(3*time.Second))
		other := store.AgentKey{Class: "Helper", Name: "a"}
		cancelled(t, s, other, "s4", "wf-4", at(4*time.Second))
		cancelled(t, s, chatA, "s5", "wf-5", at(5*time.Second))
		// Deliver s2's message.
		liveNode(t, s, "node-1")
		claimed := claimOutbox(t, s, "node-1", at(time.Minute), 10)
		for _, m := range claimed {
			if m.SubmissionID == "s2" {
				if err := s.DeliveredOutbox(t.Context(), m.ID, "node-1", at(time.Minute)); err != nil {
					t.Fatalf("DeliveredOutbox: %v", err)
				}
			} else if err := s.RetryOutbox(t.Context(), m.ID, "node-1", at(time.Hour), "later"); err != nil {
				t.Fatalf("RetryOutbox: %v", err)
			}
		}
		list := func(f store.OutboxFilter) []store.OutboxMessage {
			t.Helper()
			got, err := s.ListOutboxes(t.Context(), f)
			if err != nil {
				t.Fatalf("ListOutboxes(%+v): %v", f, err)
			}
			for i := 1; i < len(got); i++ {
				if got[i].ID >= got[i-1].ID {
					t.Fatalf("ListOutboxes(%+v): ids %d then %d, want newest first", f, got[i-1].ID, got[i].ID)
				}
			}
			return got
		}
		all := list(store.OutboxFilter{})
		if got := outboxSubmissions(all); !slices.Equal(got, []string{"s5", "s4", "s3", "s2", "s1"}) {
			t.Fatalf("ListOutboxes() = %q, want s5 … s1", got)
		}
		for _, m := range all {
			want := getOutbox(t, s, m.AgentKey, m.SubmissionID)
			if len(want) != 1 {
				t.Fatalf("GetOutbox(%s): %d messages", m.SubmissionID, len(want))
			}
			checkOutbox(t, "listed", &m, &want[0])
		}
		for _, tc := range []struct {
			name  string
			f     store.OutboxFilter
			pages [][]string
		}{
			{"ByTwo", store.OutboxFilter{Limit: 2}, [][]string{{"s5", "s4"}, {"s3", "s2"}, {"s1"}}},
			{"Agent", store.OutboxFilter{Agent: chatA}, [][]string{{"s5", "s2", "s1"}}},
			{"Class", store.OutboxFilter{Agent: store.AgentKey{Class: "Chat"}, Limit: 3}, [][]string{{"s5", "s3", "s2"}, {"s1"}}},
			{"Undelivered", store.OutboxFilter{Undelivered: true, Limit: 2}, [][]string{{"s5", "s4"}, {"s3", "s1"}}},
			{"AgentUndelivered", store.OutboxFilter{Agent: chatA, Undelivered: true}, [][]string{{"s5", "s1"}}},
			{"NoSuchAgent", store.OutboxFilter{Agent: store.AgentKey{Class: "Chat", Name: "zz"}}, [][]string{nil}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := tc.f
				for i, want := range tc.pages {
					got := list(f)
					if subs := outboxSubmissions(got); !slices.Equal(subs, want) {
						t.Fatalf("page %d of %+v = %q, want %q", i, tc.f, subs, want)
					}
					if len(got) > 0 {
						f.AfterID = got[len(got)-1].ID
					}
				}
			})
		}
	}},
}

func checkAttempts(t *testing.T, what string, s store.Store, id string, want []store.StepAttempt) {
	t.Helper()
	got, err := s.ListStepAttempts(t.Context(), id)
	if err != nil {
		t.Fatalf("%s: ListStepAttempts(%q): %v", what, id, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d attempts, want %d:\n\tgot  %+v\n\twant %+v", what, len(got), len(want), got, want)
	}
	for i := range got {
		var d diffs
		eq(&d, "Seq", got[i].Seq, want[i].Seq)
		eq(&d, "Attempt", got[i].Attempt, want[i].Attempt)
		eqTime(&d, "StartedAt", got[i].StartedAt, want[i].StartedAt)
		eqTime(&d, "EndedAt", got[i].EndedAt, want[i].EndedAt)
		eq(&d, "ErrorName", got[i].ErrorName, want[i].ErrorName)
		eq(&d, "ErrorMessage", got[i].ErrorMessage, want[i].ErrorMessage)
		if len(d) > 0 {
			t.Errorf("%s: attempt %d:\n\t%s", what, i, strings.Join(d, "\n\t"))
		}
	}
}

func checkStarts(t *testing.T, what string, steps []store.Step, want []time.Time) {
	t.Helper()
	got := make([]time.Time, len(steps))
	for i, st := range steps {
		got[i] = st.StartedAt
	}
	if !equalTimes(got, want) {
		t.Errorf("%s: steps started at %s, want %s", what, fmtTimes(got), fmtTimes(want))
	}
}
