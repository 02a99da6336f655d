package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/store"
)

// Agents ⇄ workflows: instances with an Origin, the finish notice, and the
// tracking rows.

// tracked returns a queued instance started by agent key, created and due
// at created, and the agent's tracking row for it.
func tracked(id string, key store.AgentKey, created time.Time) (*store.Instance, *store.AgentWorkflow) {
	in := newInstance(id, created)
	in.CreatedAt, in.Origin = created, key
	wf := &store.AgentWorkflow{AgentKey: key, WorkflowID: id, Binding: "ORDERS", Workflow: "order",
		Status: store.StatusQueued, CreatedAt: created, UpdatedAt: created}
	return in, wf
}

// track creates the instance and tracking row tracked returns.
func track(t *testing.T, s store.Store, id string, key store.AgentKey, created time.Time) {
	t.Helper()
	in, wf := tracked(id, key, created)
	createTracked(t, s, in, wf)
}

func createTracked(t *testing.T, s store.Store, in *store.Instance, wf *store.AgentWorkflow) {
	t.Helper()
	if err := s.CreateTrackedInstance(t.Context(), in, wf); err != nil {
		t.Fatalf("CreateTrackedInstance(%q, %s): %v", in.ID, wf.AgentKey, err)
	}
}

// createTrackedAll creates the tracked instances concurrently, so that a
// store that commits in groups does it in few commits.
func createTrackedAll(t *testing.T, s store.Store, ins []*store.Instance, wfs []*store.AgentWorkflow) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 16)
	)
	for i := range ins {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.CreateTrackedInstance(t.Context(), ins[i], wfs[i]); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("CreateTrackedInstance(%q): %w", ins[i].ID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func getAgentWorkflow(t *testing.T, s store.Store, key store.AgentKey, id string) *store.AgentWorkflow {
	t.Helper()
	w, err := s.GetAgentWorkflow(t.Context(), key, id)
	if err != nil {
		t.Fatalf("GetAgentWorkflow(%s, %q): %v", key, id, err)
	}
	return w
}

// wantNoAgentWorkflow fails unless the agent has no tracking row for id.
func wantNoAgentWorkflow(t *testing.T, what string, s store.Store, key store.AgentKey, id string) {
	t.Helper()
	w, err := s.GetAgentWorkflow(t.Context(), key, id)
	if err == nil {
		t.Errorf("%s: agent %s has a tracking row for %q: %+v", what, key, id, *w)
		return
	}
	wantErrNaming(t, what+": GetAgentWorkflow", err, store.ErrNotFound, id)
	if !strings.Contains(err.Error(), key.String()) {
		t.Errorf("%s: GetAgentWorkflow's error %q does not name agent %s", what, err, key)
	}
}

func agentWorkflowDiffs(got, want *store.AgentWorkflow) diffs {
	var d diffs
	eq(&d, "Class", got.Class, want.Class)
	eq(&d, "Name", got.Name, want.Name)
	eq(&d, "WorkflowID", got.WorkflowID, want.WorkflowID)
	eq(&d, "Binding", got.Binding, want.Binding)
	eq(&d, "Workflow", got.Workflow, want.Workflow)
	eq(&d, "Service", got.Service, want.Service)
	eq(&d, "Status", got.Status, want.Status)
	eqBytes(&d, "Metadata", got.Metadata, want.Metadata)
	eq(&d, "ErrorName", got.ErrorName, want.ErrorName)
	eq(&d, "ErrorMessage", got.ErrorMessage, want.ErrorMessage)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	eqTime(&d, "CompletedAt", got.CompletedAt, want.CompletedAt)
	return d
}

func checkAgentWorkflow(t *testing.T, what string, got, want *store.AgentWorkflow) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no tracking row, want %s's %q", what, want.AgentKey, want.WorkflowID)
		return
	}
	if d := agentWorkflowDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: tracking row %s/%q:\n\t%s", what, want.AgentKey, want.WorkflowID, strings.Join(d, "\n\t"))
	}
}

func listAgentWorkflows(t *testing.T, s store.Store, key store.AgentKey, f store.WorkflowFilter) []store.AgentWorkflow {
	t.Helper()
	ws, err := s.ListAgentWorkflows(t.Context(), key, f)
	if err != nil {
		t.Fatalf("ListAgentWorkflows(%s, %+v): %v", key, f, err)
	}
	for _, w := range ws {
		if w.AgentKey != key {
			t.Errorf("ListAgentWorkflows(%s) returned %q of %s", key, w.WorkflowID, w.AgentKey)
		}
	}
	return ws
}

func workflowIDs(ws []store.AgentWorkflow) []string {
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.WorkflowID
	}
	return ids
}

// cursorOf is the cursor that pages after w.
func cursorOf(w store.AgentWorkflow) *store.WorkflowCursor {
	return &store.WorkflowCursor{CreatedAt: w.CreatedAt, WorkflowID: w.WorkflowID}
}

// noticeFor is the finish notice Finish queues at now for instance id
// started by key, but its payload, which checkNotice checks as JSON.
func noticeFor(id string, key store.AgentKey, now time.Time) *store.Schedule {
	nid := store.FinishedNoticeID(id)
	return &store.Schedule{ID: nid, AgentKey: key, Method: store.WorkflowFinishedMethod, Kind: store.ScheduleDelayed,
		IdempotencyKey: nid, NextRunAt: now, CreatedAt: now}
}

// checkNotice requires that the agent's only schedule is the finish notice
// of instance id queued at now.
func checkNotice(t *testing.T, what string, s store.Store, key store.AgentKey, id string, now time.Time) {
	t.Helper()
	want := noticeFor(id, key, now)
	if ids := listSchedules(t, s, key, store.ScheduleFilter{}); !slices.Equal(ids, []string{want.ID}) {
		t.Fatalf("%s: agent %s has schedules %q, want only the notice %q", what, key, ids, want.ID)
	}
	got := getSchedule(t, s, key, want.ID)
	var payload map[string]any
	if err := json.Unmarshal(got.Payload, &payload); err != nil {
		t.Errorf("%s: notice payload %q is not JSON: %v", what, got.Payload, err)
	} else if len(payload) != 1 || payload["instanceId"] != id {
		t.Errorf("%s: notice payload %s, want {\"instanceId\": %q}", what, got.Payload, id)
	}
	want.Payload = got.Payload
	checkSchedule(t, what+": the notice", got, want)
}

// wantNoSchedules fails if any agent of the test classes has a schedule.
func wantNoSchedules(t *testing.T, what string, s store.Store) {
	t.Helper()
	for _, key := range []store.AgentKey{counterA, counterB, chatA} {
		if ids := listSchedules(t, s, key, store.ScheduleFilter{}); len(ids) != 0 {
			t.Errorf("%s: agent %s has schedules %q", what, key, ids)
		}
	}
	if ts := nextScheduleTimes(t, s, farFuture, 10); len(ts) != 0 {
		t.Errorf("%s: schedules are due at %s", what, fmtTimes(ts))
	}
}

var trackedInstanceCases = []testCase{
	{"CreateStoresBothRows", func(t *testing.T, s store.Store) {
		in, wf := tracked("wf-1", counterA, at(time.Second))
		in.Service, in.WakeAt = "billing", at(time.Minute)
		wf.Service, wf.Binding = "billing", "BILLING"
		wf.Metadata = []byte(`{"tier":"gold","n":42,"nested":{"é":[1,2.50,true,null]}}`)
		createTracked(t, s, in, wf)

		wantIn := *in
		wantIn.UpdatedAt = in.CreatedAt
		checkInstance(t, "GetInstance after CreateTrackedInstance", get(t, s, "wf-1"), &wantIn)
		checkAgentWorkflow(t, "GetAgentWorkflow after CreateTrackedInstance", getAgentWorkflow(t, s, counterA, "wf-1"), wf)
		if ws := listAgentWorkflows(t, s, counterA, store.WorkflowFilter{}); len(ws) != 1 {
			t.Errorf("ListAgentWorkflows = %q, want [wf-1]", workflowIDs(ws))
		} else {
			checkAgentWorkflow(t, "ListAgentWorkflows", &ws[0], wf)
		}
		wantNoAgentWorkflow(t, "another agent", s, counterB, "wf-1")
		if got := claim(t, s, "node-1", "billing", at(time.Minute), 10); len(got) != 1 || got[0].Origin != counterA {
			t.Errorf("ClaimDue after CreateTrackedInstance returned %+v, want wf-1 with origin %s", got, counterA)
		}
	}},
	{"OwnedIsClaimedWithFenceOne", func(t *testing.T, s store.Store) {
		in, wf := tracked("wf-1", chatA, t0)
		in.WakeAt, in.Owner, in.Status = time.Time{}, "node-1", store.StatusRunning
		wf.Status = store.StatusRunning
		createTracked(t, s, in, wf)

		want := *in
		want.UpdatedAt, want.Fence = t0, 1
		checkInstance(t, "after CreateTrackedInstance", get(t, s, "wf-1"), &want)
		if got := claim(t, s, "node-2", "", farFuture, 10); len(got) != 0 {
			t.Errorf("an owned instance was claimed: %q", instanceIDs(got))
		}
		saveStep(t, s, store.Lease{InstanceID: "wf-1", Owner: "node-1", Fence: 1}, doStep(0, "x", `1`), t0)
		checkAgentWorkflow(t, "tracking row", getAgentWorkflow(t, s, chatA, "wf-1"), wf)
	}},
	{"ZeroFieldsDefaultToTheInstance", func(t *testing.T, s store.Store) {
		in := newInstance("wf-1", t0)
		in.Origin, in.Service, in.Workflow, in.CreatedAt = counterA, "billing", "refund", at(time.Second)
		createTracked(t, s, in, &store.AgentWorkflow{AgentKey: counterA, WorkflowID: "wf-1"})
		checkAgentWorkflow(t, "tracking row", getAgentWorkflow(t, s, counterA, "wf-1"), &store.AgentWorkflow{
			AgentKey: counterA, WorkflowID: "wf-1", Workflow: "refund", Service: "billing", Status: store.StatusQueued,
			CreatedAt: at(time.Second), UpdatedAt: at(time.Second)})
	}},
	{"DuplicateIDInsertsNothing", func(t *testing.T, s store.Store) {
		create(t, s, newInstance("plain", t0))
		track(t, s, "mine", counterA, t0)
		track(t, s, "theirs", counterB, t0)
		listA := listAgentWorkflows(t, s, counterA, store.WorkflowFilter{})
		listB := listAgentWorkflows(t, s, counterB, store.WorkflowFilter{})

		for _, id := range []string{"plain", "mine", "theirs"} {
			before := snap(t, s, id)
			in, wf := tracked(id, counterA, at(time.Hour))
			in.Workflow, wf.Workflow, wf.Binding = "other", "other", "OTHER"
			err := s.CreateTrackedInstance(t.Context(), in, wf)
			wantErrNaming(t, "CreateTrackedInstance of existing "+id, err, store.ErrDuplicateID, id)
			checkUnchanged(t, "CreateTrackedInstance of existing "+id, s, before)
		}
		wantNoAgentWorkflow(t, "after the failed creates", s, counterA, "plain")
		wantNoAgentWorkflow(t, "after the failed creates", s, counterA, "theirs")
		for _, c := range []struct {
			key    store.AgentKey
			before []store.AgentWorkflow
		}{{counterA, listA}, {counterB, listB}} {
			after := listAgentWorkflows(t, s, c.key, store.WorkflowFilter{})
			if len(after) != len(c.before) {
				t.Errorf("agent %s's tracking rows went from %q to %q", c.key, workflowIDs(c.before), workflowIDs(after))
				continue
			}
			for i := range after {
				checkAgentWorkflow(t, "tracking row after the failed creates", &after[i], &c.before[i])
			}
		}
	}},
	{"InvalidInsertsNothing", func(t *testing.T, s store.Store) {
		for _, c := range []struct {
			name   string
			change func(in *store.Instance, wf *store.AgentWorkflow)
		}{
			{"NoOrigin", func(in *store.Instance, wf *store.AgentWorkflow) { in.Origin = store.AgentKey{} }},
			{"RowOfAnotherAgent", func(in *store.Instance, wf *store.AgentWorkflow) { wf.AgentKey = counterB }},
			{"RowOfAnotherInstance", func(in *store.Instance, wf *store.AgentWorkflow) { wf.WorkflowID = "other" }},
			{"MetadataArray", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`[1]`) }},
			{"MetadataString", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`"x"`) }},
			{"MetadataNull", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`null`) }},
			{"MetadataEmpty", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte{} }},
			{"MetadataMalformed", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`{"a":`) }},
			{"MetadataTrailing", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`{} {}`) }},
			{"MetadataDuplicateKey", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte(`{"a":1,"a":2}`) }},
			{"MetadataNotUTF8", func(in *store.Instance, wf *store.AgentWorkflow) { wf.Metadata = []byte("{\"a\":\"\xff\"}") }},
		} {
			id := "bad-" + c.name
			in, wf := tracked(id, counterA, t0)
			c.change(in, wf)
			err := s.CreateTrackedInstance(t.Context(), in, wf)
			if err == nil || errors.Is(err, store.ErrDuplicateID) {
				t.Errorf("%s: CreateTrackedInstance: %v, want an error about its arguments", c.name, err)
			}
			_, err = s.GetInstance(t.Context(), id)
			wantErr(t, c.name+": GetInstance", err, store.ErrNotFound)
		}
		for _, key := range []store.AgentKey{counterA, counterB} {
			if ws := listAgentWorkflows(t, s, key, store.WorkflowFilter{}); len(ws) != 0 {
				t.Errorf("agent %s has tracking rows %q", key, workflowIDs(ws))
			}
		}
	}},
	{"RowLeftByADeletedInstanceIsReplaced", func(t *testing.T, s store.Store) {
		in, wf := tracked("wf-1", counterA, t0)
		wf.Metadata = []byte(`{"run":1}`)
		createTracked(t, s, in, wf)
		l := claimID(t, s, "wf-1", "node-1", t0)
		finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
		if n, err := s.DeleteFinished(t.Context(), at(time.Minute), 10); err != nil || n != 1 {
			t.Fatalf("DeleteFinished = %d, %v; want 1", n, err)
		}
		getAgentWorkflow(t, s, counterA, "wf-1") // retention leaves tracking rows alone

		in2, wf2 := tracked("wf-1", counterA, at(time.Hour))
		wf2.Binding, wf2.Metadata = "AGAIN", nil
		createTracked(t, s, in2, wf2)
		checkAgentWorkflow(t, "the new tracking row", getAgentWorkflow(t, s, counterA, "wf-1"), wf2)
	}},
}

var originCases = []testCase{
	{"RoundTripsThroughGetAndClaim", func(t *testing.T, s store.Store) {
		withOrigin := newInstance("o", t0)
		withOrigin.Origin = chatA
		owned := newOwned("owned", "node-1", store.StatusRunning)
		owned.Origin = counterB
		create(t, s, withOrigin, newInstance("none", t0), owned)

		for id, want := range map[string]store.AgentKey{"o": chatA, "none": {}, "owned": counterB} {
			if got := get(t, s, id).Origin; got != want {
				t.Errorf("GetInstance(%q).Origin = %+v, want %+v", id, got, want)
			}
		}
		got := claim(t, s, "node-2", "", t0, 10)
		if ids := instanceIDs(got); !slices.Equal(ids, []string{"none", "o"}) {
			t.Fatalf("ClaimDue claimed %q, want [none o]", ids)
		}
		for _, in := range got {
			want := store.AgentKey{}
			if in.ID == "o" {
				want = chatA
			}
			if in.Origin != want {
				t.Errorf("ClaimDue returned %q with Origin %+v, want %+v", in.ID, in.Origin, want)
			}
		}
		// Every later write keeps it.
		var l store.Lease
		for _, in := range got {
			if in.ID == "o" {
				l = leaseOf(in)
			}
		}
		suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: at(time.Minute)}, t0)
		l = claimID(t, s, "o", "node-2", at(time.Minute))
		restart(t, s, "o", at(2*time.Minute))
		if got := get(t, s, "o").Origin; got != chatA {
			t.Errorf("after suspend, claim and restart: Origin %+v, want %+v", got, chatA)
		}
	}},
}

var finishNoticeCases = func() []testCase {
	var cases []testCase
	starts := []struct {
		name  string
		start func(t *testing.T, s store.Store, id string, key store.AgentKey) store.Lease
	}{
		{"Tracked", func(t *testing.T, s store.Store, id string, key store.AgentKey) store.Lease {
			track(t, s, id, key, t0)
			return claimID(t, s, id, "node-1", t0)
		}},
		{"CreatedOwnedWithOrigin", func(t *testing.T, s store.Store, id string, key store.AgentKey) store.Lease {
			in := newOwned(id, "node-1", store.StatusRunning)
			in.Origin = key
			create(t, s, in)
			return store.Lease{InstanceID: id, Owner: "node-1", Fence: 1}
		}},
	}
	outcomes := []store.Outcome{
		{Status: store.StatusComplete, Output: []byte(`{"total":42}`)},
		{Status: store.StatusErrored, ErrorName: "CardDeclined", ErrorMessage: "insufficient funds"},
	}
	ids := []string{"wf-1", `we"ird\id <&> é`}
	for _, st := range starts {
		for _, o := range outcomes {
			for i, id := range ids {
				name := fmt.Sprintf("%s/%s/id%d", st.name, o.Status, i)
				cases = append(cases, testCase{name, func(t *testing.T, s store.Store) {
					l := st.start(t, s, id, counterA)
					finish(t, s, l, o, at(5*time.Second))
					wantStatus(t, "after Finish", get(t, s, id).Status, o.Status)
					checkNotice(t, "after Finish", s, counterA, id, at(5*time.Second))
					for _, other := range []store.AgentKey{counterB, chatA} {
						if ids := listSchedules(t, s, other, store.ScheduleFilter{}); len(ids) != 0 {
							t.Errorf("agent %s, not the origin, has schedules %q", other, ids)
						}
					}
					// Due at once, and unclaimed.
					wantClaimed(t, s, "node-2", at(5*time.Second), 10, store.FinishedNoticeID(id))
				}})
			}
		}
	}
	return append(cases,
		testCase{"NoneWithoutOrigin", func(t *testing.T, s store.Store) {
			l := start(t, s, "a", "node-1")
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
			create(t, s, newInstance("b", t0))
			lb := claimID(t, s, "b", "node-1", t0)
			finish(t, s, lb, store.Outcome{Status: store.StatusErrored, ErrorName: "E", ErrorMessage: "m"}, at(time.Second))
			wantNoSchedules(t, "after finishing instances without origin", s)
		}},
		testCase{"StaleFinishQueuesNothing", func(t *testing.T, s store.Store) {
			track(t, s, "wf-1", counterA, t0)
			l := claimID(t, s, "wf-1", "node-1", t0)
			restart(t, s, "wf-1", at(time.Second))
			before := snap(t, s, "wf-1")
			err := s.Finish(t.Context(), l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(2*time.Second))
			wantErrNaming(t, "Finish with a stale lease", err, store.ErrLeaseLost, "wf-1")
			checkUnchanged(t, "Finish with a stale lease", s, before)
			wantNoSchedules(t, "after a stale Finish", s)
		}},
		testCase{"PendingNoticeIsNotDuplicated", func(t *testing.T, s store.Store) {
			track(t, s, "wf-1", counterA, t0)
			l := claimID(t, s, "wf-1", "node-1", t0)
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(1*time.Second))
			checkNotice(t, "first Finish", s, counterA, "wf-1", at(1*time.Second))

			// Restarted and finished again while the notice is pending:
			// Finish succeeds and the pending notice stays as it was.
			restart(t, s, "wf-1", at(2*time.Second))
			l = claimID(t, s, "wf-1", "node-1", at(2*time.Second))
			finish(t, s, l, store.Outcome{Status: store.StatusErrored, ErrorName: "E", ErrorMessage: "m"}, at(3*time.Second))
			in := get(t, s, "wf-1")
			wantStatus(t, "second Finish", in.Status, store.StatusErrored)
			if in.ErrorName != "E" || !in.FinishedAt.Equal(at(3*time.Second)) {
				t.Errorf("second Finish: error %q finished %s, want E at %s", in.ErrorName, fmtTime(in.FinishedAt), fmtTime(at(3*time.Second)))
			}
			checkNotice(t, "second Finish with the notice pending", s, counterA, "wf-1", at(1*time.Second))

			// The same while the notice is claimed (its callback running).
			wantClaimed(t, s, "node-2", at(3*time.Second), 10, store.FinishedNoticeID("wf-1"))
			restart(t, s, "wf-1", at(4*time.Second))
			l = claimID(t, s, "wf-1", "node-1", at(4*time.Second))
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`2`)}, at(5*time.Second))
			if ids := listSchedules(t, s, counterA, store.ScheduleFilter{}); !slices.Equal(ids, []string{store.FinishedNoticeID("wf-1")}) {
				t.Errorf("third Finish with the notice claimed: schedules %q, want the one notice", ids)
			}

			// Once the runtime has run and deleted the notice, the next
			// finish queues a new one.
			if ok, err := s.DeleteSchedule(t.Context(), counterA, store.FinishedNoticeID("wf-1")); err != nil || !ok {
				t.Fatalf("DeleteSchedule of the notice = %v, %v", ok, err)
			}
			restart(t, s, "wf-1", at(6*time.Second))
			l = claimID(t, s, "wf-1", "node-1", at(6*time.Second))
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`3`)}, at(7*time.Second))
			checkNotice(t, "Finish after the notice was run", s, counterA, "wf-1", at(7*time.Second))
		}},
		testCase{"NoticeWithoutTrackingRow", func(t *testing.T, s store.Store) {
			track(t, s, "wf-1", counterA, t0)
			if ok, err := s.DeleteAgentWorkflow(t.Context(), counterA, "wf-1"); err != nil || !ok {
				t.Fatalf("DeleteAgentWorkflow = %v, %v", ok, err)
			}
			l := claimID(t, s, "wf-1", "node-1", t0)
			finish(t, s, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
			checkNotice(t, "Finish of an instance whose tracking row was deleted", s, counterA, "wf-1", at(time.Second))
		}},
	)
}()

var listAgentWorkflowsCases = []testCase{
	{"PagesNewestFirst", func(t *testing.T, s store.Store) {
		// 250 rows of counterA in groups of three created at the same
		// time, their ids not in the order of their times; and rows of
		// two other agents in between.
		var (
			ins  []*store.Instance
			wfs  []*store.AgentWorkflow
			mine []*store.AgentWorkflow
		)
		for i := range 250 {
			in, wf := tracked(fmt.Sprintf("w%03d", (i*7)%250), counterA, at(time.Duration(i/3)*time.Second))
			ins, wfs, mine = append(ins, in), append(wfs, wf), append(mine, wf)
			if i%50 == 0 {
				for _, key := range []store.AgentKey{counterB, chatA} {
					in, wf := tracked(fmt.Sprintf("%s-%03d", key.Class, i), key, at(time.Duration(i/3)*time.Second))
					ins, wfs = append(ins, in), append(wfs, wf)
				}
			}
		}
		createTrackedAll(t, s, ins, wfs)
		slices.SortFunc(mine, func(a, b *store.AgentWorkflow) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(b.WorkflowID, a.WorkflowID)
		})
		want := make([]string, len(mine))
		for i, w := range mine {
			want[i] = w.WorkflowID
		}

		var got []string
		f := store.WorkflowFilter{}
		for i, size := range []int{100, 100, 50, 0} {
			page := listAgentWorkflows(t, s, counterA, f)
			if len(page) != size {
				t.Fatalf("page %d: %d rows, want %d", i, len(page), size)
			}
			if size > 0 {
				checkAgentWorkflow(t, fmt.Sprintf("page %d's first row", i), &page[0], mine[len(got)])
				f.After = cursorOf(page[len(page)-1])
			}
			got = append(got, workflowIDs(page)...)
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages, joined:\n\tgot  %q\n\twant %q", got, want)
		}

		for _, c := range []struct{ limit, want int }{{-1, 100}, {0, 100}, {1, 1}, {7, 7}, {100, 100}, {101, 100}, {1000, 100}} {
			page := listAgentWorkflows(t, s, counterA, store.WorkflowFilter{Limit: c.limit})
			if ids := workflowIDs(page); !slices.Equal(ids, want[:c.want]) {
				t.Errorf("Limit %d: %q, want %q", c.limit, ids, want[:c.want])
			}
		}
		// A cursor need not be a row: one between two rows of a time.
		// (want[9] is newer, or as new with an id after want[10]'s and not
		// a prefix of it, so it comes before the cursor.)
		mid := store.WorkflowCursor{CreatedAt: mine[10].CreatedAt, WorkflowID: mine[10].WorkflowID + "~"}
		if page := listAgentWorkflows(t, s, counterA, store.WorkflowFilter{After: &mid, Limit: 3}); !slices.Equal(workflowIDs(page), want[10:13]) {
			t.Errorf("after %+v: %q, want %q", mid, workflowIDs(page), want[10:13])
		}
		// Nor one that still exists.
		if _, err := s.DeleteAgentWorkflow(t.Context(), counterA, want[99]); err != nil {
			t.Fatal(err)
		}
		page := listAgentWorkflows(t, s, counterA, store.WorkflowFilter{After: cursorOf(*mine[99]), Limit: 5})
		if ids := workflowIDs(page); !slices.Equal(ids, want[100:105]) {
			t.Errorf("after the deleted row %q: %q, want %q", want[99], ids, want[100:105])
		}
		for _, key := range []store.AgentKey{counterB, chatA} {
			if ws := listAgentWorkflows(t, s, key, store.WorkflowFilter{}); len(ws) != 5 {
				t.Errorf("agent %s: %d rows, want 5", key, len(ws))
			}
		}
		if ws := listAgentWorkflows(t, s, store.AgentKey{Class: "Counter", Name: "none"}, store.WorkflowFilter{}); len(ws) != 0 {
			t.Errorf("an agent without rows lists %q", workflowIDs(ws))
		}
	}},
	{"Filters", func(t *testing.T, s store.Store) {
		rows := []struct {
			id       string
			status   store.Status
			workflow string
			metadata string
		}{
			{"r1", store.StatusQueued, "order", `{"tier":"gold","n":42,"vip":true}`},
			{"r2", store.StatusRunning, "order", `{"tier":"silver","n":7,"vip":false}`},
			{"r3", store.StatusWaiting, "billing", `{"tier":"gold","n":"42","ratio":1.50}`},
			{"r4", store.StatusComplete, "billing", `{"tier":"\"gold\"","ratio":1.5,"big":1e3}`},
			{"r5", store.StatusErrored, "order", `{"nested":{"tier":"gold"},"nil":null,"list":["x"],"tier2":"gold"}`},
			{"r6", store.StatusTerminated, "order", ``},
			{"r7", store.StatusPaused, "billing", `{}`},
			{"r8", store.StatusRunning, "order", `{"k\"q":"v","a.b":"dot","line\nbreak":"nl","é":"acc","\u00e8x":"escaped","vip":"true","'; --":"sql"}`},
			{"r9", store.StatusComplete, "order", `{"vip":1,"tier":"gold","n":-0.5}`},
		}
		var (
			ins  []*store.Instance
			wfs  []*store.AgentWorkflow
			byID = map[string]*store.AgentWorkflow{}
		)
		for i, r := range rows {
			in, wf := tracked(r.id, counterA, at(time.Duration(i)*time.Second))
			wf.Status, wf.Workflow = r.status, r.workflow
			if r.metadata != "" {
				wf.Metadata = []byte(r.metadata)
			}
			ins, wfs, byID[r.id] = append(ins, in), append(wfs, wf), wf
		}
		// Another agent's row that every filter below but "none" matches.
		in, wf := tracked("other", counterB, at(time.Minute))
		wf.Metadata = []byte(rows[0].metadata)
		createTrackedAll(t, s, append(ins, in), append(wfs, wf))
		checkAgentWorkflow(t, "metadata as stored", getAgentWorkflow(t, s, counterA, "r8"), byID["r8"])

		md := func(kv ...string) map[string]string {
			m := map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			return m
		}
		st := func(ss ...store.Status) []store.Status { return ss }
		for _, c := range []struct {
			name string
			f    store.WorkflowFilter
			want string // ids, newest first
		}{
			{"none", store.WorkflowFilter{}, "r9 r8 r7 r6 r5 r4 r3 r2 r1"},
			{"status", store.WorkflowFilter{Statuses: st(store.StatusRunning)}, "r8 r2"},
			{"statuses", store.WorkflowFilter{Statuses: st(store.StatusComplete, store.StatusErrored)}, "r9 r5 r4"},
			{"status none has", store.WorkflowFilter{Statuses: st(store.StatusUnknown)}, ""},
			{"workflow", store.WorkflowFilter{Workflow: "billing"}, "r7 r4 r3"},
			{"workflow none is", store.WorkflowFilter{Workflow: "nope"}, ""},
			{"string", store.WorkflowFilter{Metadata: md("tier", "gold")}, "r9 r3 r1"},
			{"string with quotes", store.WorkflowFilter{Metadata: md("tier", `"gold"`)}, "r4"},
			{"number and numeric string", store.WorkflowFilter{Metadata: md("n", "42")}, "r3 r1"},
			{"number as written", store.WorkflowFilter{Metadata: md("ratio", "1.50")}, "r3"},
			{"number as written 2", store.WorkflowFilter{Metadata: md("ratio", "1.5")}, "r4"},
			{"number with exponent", store.WorkflowFilter{Metadata: md("big", "1e3")}, "r4"},
			{"number not as written", store.WorkflowFilter{Metadata: md("big", "1000")}, ""},
			{"negative number", store.WorkflowFilter{Metadata: md("n", "-0.5")}, "r9"},
			{"number with leading zero", store.WorkflowFilter{Metadata: md("n", "042")}, ""},
			{"true and string true", store.WorkflowFilter{Metadata: md("vip", "true")}, "r8 r1"},
			{"false", store.WorkflowFilter{Metadata: md("vip", "false")}, "r2"},
			{"one is not true", store.WorkflowFilter{Metadata: md("vip", "1")}, "r9"},
			{"zero is not false", store.WorkflowFilter{Metadata: md("vip", "0")}, ""},
			{"object", store.WorkflowFilter{Metadata: md("nested", `{"tier":"gold"}`)}, ""},
			{"not nested", store.WorkflowFilter{Metadata: md("tier", "gold", "nested", "")}, ""},
			{"null", store.WorkflowFilter{Metadata: md("nil", "null")}, ""},
			{"null is not empty", store.WorkflowFilter{Metadata: md("nil", "")}, ""},
			{"array", store.WorkflowFilter{Metadata: md("list", `["x"]`)}, ""},
			{"key with a quote", store.WorkflowFilter{Metadata: md(`k"q`, "v")}, "r8"},
			{"key with a dot", store.WorkflowFilter{Metadata: md("a.b", "dot")}, "r8"},
			{"key with a newline", store.WorkflowFilter{Metadata: md("line\nbreak", "nl")}, "r8"},
			{"key not ASCII", store.WorkflowFilter{Metadata: md("é", "acc")}, "r8"},
			{"key escaped in the JSON", store.WorkflowFilter{Metadata: md("èx", "escaped")}, "r8"},
			{"key like SQL", store.WorkflowFilter{Metadata: md("'; --", "sql")}, "r8"},
			{"missing key", store.WorkflowFilter{Metadata: md("zzz", "x")}, ""},
			{"two keys", store.WorkflowFilter{Metadata: md("tier", "gold", "n", "42")}, "r3 r1"},
			{"all", store.WorkflowFilter{Statuses: st(store.StatusQueued, store.StatusWaiting, store.StatusComplete),
				Workflow: "order", Metadata: md("tier", "gold")}, "r9 r1"},
			{"all 2", store.WorkflowFilter{Statuses: st(store.StatusQueued, store.StatusWaiting),
				Workflow: "billing", Metadata: md("tier", "gold", "ratio", "1.50")}, "r3"},
			{"with cursor and limit", store.WorkflowFilter{Statuses: st(store.StatusComplete, store.StatusErrored, store.StatusRunning),
				After: cursorOf(*byID["r8"]), Limit: 2}, "r5 r4"},
		} {
			ws := listAgentWorkflows(t, s, counterA, c.f)
			want := strings.Fields(c.want)
			if ids := workflowIDs(ws); !slices.Equal(ids, want) {
				t.Errorf("%s: %+v: %q, want %q", c.name, c.f, ids, want)
				continue
			}
			for i := range ws {
				checkAgentWorkflow(t, c.name, &ws[i], byID[ws[i].WorkflowID])
			}
		}
	}},
}

// A trackingCase applies one update to a tracking row in each status.
type trackingCase struct {
	name string
	u    store.TrackingUpdate
	// to is the status the update gives a row in status from, and whether
	// it changes the row (an error alone may change it).
	to func(from store.Status, fromErr [2]string) (store.Status, bool)
}

var allStatuses = []store.Status{
	store.StatusQueued, store.StatusRunning, store.StatusPaused, store.StatusErrored, store.StatusTerminated,
	store.StatusComplete, store.StatusWaiting, store.StatusWaitingForPause, store.StatusUnknown,
}

var updateAgentWorkflowCases = func() []testCase {
	progress := func(from store.Status, _ [2]string) (store.Status, bool) {
		if from == store.StatusQueued || from == store.StatusWaiting {
			return store.StatusRunning, true
		}
		return from, false
	}
	finish := func(st store.Status, e [2]string) func(store.Status, [2]string) (store.Status, bool) {
		return func(from store.Status, fromErr [2]string) (store.Status, bool) {
			if from == store.StatusTerminated || from == store.StatusPaused || from == st && fromErr == e {
				return from, false
			}
			return st, true
		}
	}
	sync := func(st store.Status, e [2]string) func(store.Status, [2]string) (store.Status, bool) {
		return func(from store.Status, fromErr [2]string) (store.Status, bool) {
			return st, from != st || fromErr != e
		}
	}
	// An errored row starts with this error.
	oldErr := [2]string{"OldError", "the first run failed"}
	newErr := [2]string{"CardDeclined", "insufficient funds"}
	tcs := []trackingCase{
		{"Progress", store.TrackingUpdate{Rule: store.TrackProgress}, progress},
		{"FinishComplete", store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusComplete}, finish(store.StatusComplete, [2]string{})},
		{"FinishErrored", store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusErrored,
			ErrorName: newErr[0], ErrorMessage: newErr[1]}, finish(store.StatusErrored, newErr)},
		{"FinishErroredAgain", store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusErrored,
			ErrorName: oldErr[0], ErrorMessage: oldErr[1]}, finish(store.StatusErrored, oldErr)},
	}
	for _, st := range allStatuses {
		u := store.TrackingUpdate{Rule: store.TrackSync, Status: st}
		e := [2]string{}
		if st == store.StatusErrored {
			u.ErrorName, u.ErrorMessage, e = newErr[0], newErr[1], newErr
		}
		tcs = append(tcs, trackingCase{"Sync" + strings.ToUpper(string(st[:1])) + string(st[1:]), u, sync(st, e)})
	}
	tcs = append(tcs, trackingCase{"SyncErroredAgain", store.TrackingUpdate{Rule: store.TrackSync, Status: store.StatusErrored,
		ErrorName: oldErr[0], ErrorMessage: oldErr[1]}, sync(store.StatusErrored, oldErr)})

	var cases []testCase
	for _, tc := range tcs {
		cases = append(cases, testCase{tc.name, func(t *testing.T, s store.Store) {
			// One row in each status; a finished one learned it at t0+1s.
			var (
				ins   []*store.Instance
				wfs   []*store.AgentWorkflow
				start = map[store.Status]store.AgentWorkflow{}
			)
			for _, from := range allStatuses {
				in, wf := tracked("from-"+string(from), counterA, t0)
				wf.Status, wf.Metadata = from, []byte(`{"from":"`+string(from)+`"}`)
				if from == store.StatusErrored {
					wf.ErrorName, wf.ErrorMessage = oldErr[0], oldErr[1]
				}
				if from.Finished() {
					wf.CompletedAt = at(time.Second)
				}
				ins, wfs, start[from] = append(ins, in), append(wfs, wf), *wf
			}
			createTrackedAll(t, s, ins, wfs)

			now := at(time.Minute)
			for _, from := range allStatuses {
				id := "from-" + string(from)
				was := start[from]
				to, changes := tc.to(from, [2]string{was.ErrorName, was.ErrorMessage})
				want := was
				if changes {
					want.Status, want.UpdatedAt = to, now
					if tc.u.Rule != store.TrackProgress {
						want.ErrorName, want.ErrorMessage = tc.u.ErrorName, tc.u.ErrorMessage
						want.CompletedAt = time.Time{}
						if to.Finished() {
							want.CompletedAt = now
						}
					}
				}
				got, changed, err := s.UpdateAgentWorkflow(t.Context(), counterA, id, tc.u, now)
				if err != nil {
					t.Errorf("from %s: UpdateAgentWorkflow: %v", from, err)
					continue
				}
				if changed != changes {
					t.Errorf("from %s: changed = %v, want %v", from, changed, changes)
				}
				what := fmt.Sprintf("from %s", from)
				checkAgentWorkflow(t, what+": the returned row", got, &want)
				checkAgentWorkflow(t, what+": the stored row", getAgentWorkflow(t, s, counterA, id), &want)
			}
		}})
	}
	return append(cases,
		testCase{"MissingRowIsNotFound", func(t *testing.T, s store.Store) {
			track(t, s, "wf-1", counterA, t0)
			for _, u := range []store.TrackingUpdate{
				{Rule: store.TrackProgress},
				{Rule: store.TrackFinish, Status: store.StatusComplete},
				{Rule: store.TrackSync, Status: store.StatusRunning},
			} {
				for _, c := range []struct {
					key store.AgentKey
					id  string
				}{{counterA, "missing"}, {counterB, "wf-1"}} {
					w, changed, err := s.UpdateAgentWorkflow(t.Context(), c.key, c.id, u, at(time.Second))
					what := fmt.Sprintf("UpdateAgentWorkflow(%s, %q, %s)", c.key, c.id, u.Rule)
					wantErrNaming(t, what, err, store.ErrNotFound, c.id)
					if !strings.Contains(err.Error(), c.key.String()) {
						t.Errorf("%s: error %q does not name agent %s", what, err, c.key)
					}
					if w != nil || changed {
						t.Errorf("%s returned %+v, %v", what, w, changed)
					}
				}
			}
			_, wf := tracked("wf-1", counterA, t0)
			checkAgentWorkflow(t, "the other row", getAgentWorkflow(t, s, counterA, "wf-1"), wf)
		}},
		testCase{"InvalidUpdatesChangeNothing", func(t *testing.T, s store.Store) {
			track(t, s, "wf-1", counterA, t0)
			for _, u := range []store.TrackingUpdate{
				{Rule: store.TrackFinish, Status: store.StatusRunning},
				{Rule: store.TrackFinish, Status: store.StatusTerminated},
				{Rule: store.TrackFinish},
				{Rule: store.TrackSync},
				{Rule: "other", Status: store.StatusComplete},
				{Status: store.StatusComplete},
			} {
				_, changed, err := s.UpdateAgentWorkflow(t.Context(), counterA, "wf-1", u, at(time.Second))
				if err == nil || errors.Is(err, store.ErrNotFound) || changed {
					t.Errorf("UpdateAgentWorkflow(%+v) = %v, %v; want an error about the update", u, changed, err)
				}
			}
			_, wf := tracked("wf-1", counterA, t0)
			checkAgentWorkflow(t, "after the invalid updates", getAgentWorkflow(t, s, counterA, "wf-1"), wf)
		}},
	)
}()

var deleteAgentWorkflowCases = []testCase{
	{"RemovesOnlyTheRow", func(t *testing.T, s store.Store) {
		track(t, s, "x", counterA, t0)
		track(t, s, "y", counterA, at(time.Second))
		before := snap(t, s, "x")

		for _, c := range []struct {
			key  store.AgentKey
			id   string
			want bool
		}{{counterB, "x", false}, {counterA, "missing", false}, {counterA, "x", true}, {counterA, "x", false}} {
			ok, err := s.DeleteAgentWorkflow(t.Context(), c.key, c.id)
			if err != nil || ok != c.want {
				t.Errorf("DeleteAgentWorkflow(%s, %q) = %v, %v; want %v", c.key, c.id, ok, err, c.want)
			}
		}
		wantNoAgentWorkflow(t, "after DeleteAgentWorkflow", s, counterA, "x")
		checkUnchanged(t, "the instance after DeleteAgentWorkflow", s, before)
		if ids := workflowIDs(listAgentWorkflows(t, s, counterA, store.WorkflowFilter{})); !slices.Equal(ids, []string{"y"}) {
			t.Errorf("after DeleteAgentWorkflow: rows %q, want [y]", ids)
		}
	}},
}
