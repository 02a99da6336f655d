package storetest

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

// A finish notice's delivery: GetWorkflowOutcome, the one read that gives
// the instance's end and the tracking row, and AckWorkflowNotice, the one
// write that records the end and deletes the notice.

// finishedTracked creates a tracked instance id of counterA, finishes it
// with o at t0+5s and claims its notice for node-2.
func finishedTracked(t *testing.T, s store.Store, id string, o store.Outcome) *store.AgentWorkflow {
	t.Helper()
	in, wf := tracked(id, counterA, t0)
	wf.Metadata = []byte(`{"order":7}`)
	createTracked(t, s, in, wf)
	finish(t, s, claimID(t, s, id, "node-1", t0), o, at(5*time.Second))
	got := claimSchedules(t, s, "node-2", at(5*time.Second), 10)
	if len(got) != 1 || got[0].ID != store.FinishedNoticeID(id) {
		t.Fatalf("claimed %d schedules, want the notice of %q alone", len(got), id)
	}
	return wf
}

func ack(id, owner string, u store.TrackingUpdate) store.NoticeAck {
	return store.NoticeAck{AgentKey: counterA, NoticeID: store.FinishedNoticeID(id), Owner: owner, WorkflowID: id, Update: u}
}

func wantNotice(t *testing.T, what string, s store.Store, id string, want bool) {
	t.Helper()
	ids := listSchedules(t, s, counterA, store.ScheduleFilter{})
	if has := slices.Contains(ids, store.FinishedNoticeID(id)); has != want {
		t.Fatalf("%s: agent %s has schedules %q; want the notice of %q there: %v", what, counterA, ids, id, want)
	}
}

var workflowNoticeCases = func() []testCase {
	complete := store.Outcome{Status: store.StatusComplete, Output: []byte(`{"total":42}`)}
	errored := store.Outcome{Status: store.StatusErrored, ErrorName: "CardDeclined", ErrorMessage: "insufficient funds"}
	finishU := func(o store.Outcome) store.TrackingUpdate {
		return store.TrackingUpdate{Rule: store.TrackFinish, Status: o.Status, ErrorName: o.ErrorName, ErrorMessage: o.ErrorMessage}
	}
	var cases []testCase
	for _, o := range []store.Outcome{complete, errored} {
		cases = append(cases, testCase{"Outcome/" + string(o.Status), func(t *testing.T, s store.Store) {
			wf := finishedTracked(t, s, "wf-1", o)
			got, err := s.GetWorkflowOutcome(t.Context(), counterA, "wf-1")
			if err != nil {
				t.Fatalf("GetWorkflowOutcome: %v", err)
			}
			if got.Status != o.Status || !bytes.Equal(got.Output, o.Output) || got.ErrorName != o.ErrorName || got.ErrorMessage != o.ErrorMessage {
				t.Errorf("outcome %s %s %q %q, want %s %s %q %q", got.Status, got.Output, got.ErrorName, got.ErrorMessage,
					o.Status, o.Output, o.ErrorName, o.ErrorMessage)
			}
			checkAgentWorkflow(t, "the outcome's tracking row", got.Tracking, wf)
		}})
		cases = append(cases, testCase{"Ack/" + string(o.Status), func(t *testing.T, s store.Store) {
			wf := finishedTracked(t, s, "wf-1", o)
			if err := s.AckWorkflowNotice(t.Context(), ack("wf-1", "node-2", finishU(o)), at(6*time.Second)); err != nil {
				t.Fatalf("AckWorkflowNotice: %v", err)
			}
			wantNotice(t, "after the ack", s, "wf-1", false)
			want := *wf
			want.Status, want.ErrorName, want.ErrorMessage = o.Status, o.ErrorName, o.ErrorMessage
			want.UpdatedAt, want.CompletedAt = at(6*time.Second), at(6*time.Second)
			checkAgentWorkflow(t, "after the ack", getAgentWorkflow(t, s, counterA, "wf-1"), &want)
		}})
	}
	return append(cases,
		testCase{"OutcomeUntracked", func(t *testing.T, s store.Store) {
			in := newOwned("wf-1", "node-1", store.StatusRunning)
			in.Origin = counterA
			create(t, s, in)
			finish(t, s, store.Lease{InstanceID: "wf-1", Owner: "node-1", Fence: 1}, complete, at(time.Second))
			got, err := s.GetWorkflowOutcome(t.Context(), counterA, "wf-1")
			if err != nil {
				t.Fatalf("GetWorkflowOutcome: %v", err)
			}
			if got.Status != store.StatusComplete || got.Tracking != nil {
				t.Errorf("outcome %s with tracking row %+v; want complete with none", got.Status, got.Tracking)
			}
		}},
		testCase{"OutcomeOfAnotherAgent", func(t *testing.T, s store.Store) {
			finishedTracked(t, s, "wf-1", complete)
			got, err := s.GetWorkflowOutcome(t.Context(), counterB, "wf-1")
			if err != nil {
				t.Fatalf("GetWorkflowOutcome: %v", err)
			}
			if got.Tracking != nil {
				t.Errorf("agent %s got agent %s's tracking row", counterB, got.Tracking.AgentKey)
			}
		}},
		testCase{"OutcomeMissing", func(t *testing.T, s store.Store) {
			_, err := s.GetWorkflowOutcome(t.Context(), counterA, "nope")
			wantErrNaming(t, "GetWorkflowOutcome of no instance", err, store.ErrNotFound, "nope")
		}},
		testCase{"AckOfAnotherOwnerKeepsTheNotice", func(t *testing.T, s store.Store) {
			finishedTracked(t, s, "wf-1", complete)
			if err := s.AckWorkflowNotice(t.Context(), ack("wf-1", "node-3", finishU(complete)), at(6*time.Second)); err != nil {
				t.Fatalf("AckWorkflowNotice: %v", err)
			}
			wantNotice(t, "after another node's ack", s, "wf-1", true)
			if w := getAgentWorkflow(t, s, counterA, "wf-1"); w.Status != store.StatusComplete {
				t.Errorf("tracking row %s, want complete: the agent was told", w.Status)
			}
		}},
		testCase{"AckLeavesTerminatedAndPaused", func(t *testing.T, s store.Store) {
			for _, st := range []store.Status{store.StatusTerminated, store.StatusPaused} {
				id := "wf-" + string(st)
				finishedTracked(t, s, id, complete)
				if _, _, err := s.UpdateAgentWorkflow(t.Context(), counterA, id, store.TrackingUpdate{Rule: store.TrackSync, Status: st}, at(5*time.Second)); err != nil {
					t.Fatalf("UpdateAgentWorkflow: %v", err)
				}
				if err := s.AckWorkflowNotice(t.Context(), ack(id, "node-2", finishU(complete)), at(6*time.Second)); err != nil {
					t.Fatalf("AckWorkflowNotice: %v", err)
				}
				wantNotice(t, "after the ack", s, id, false)
				if w := getAgentWorkflow(t, s, counterA, id); w.Status != st {
					t.Errorf("%s row became %s", st, w.Status)
				}
			}
		}},
		testCase{"AckSync", func(t *testing.T, s store.Store) {
			finishedTracked(t, s, "wf-1", store.Outcome{Status: store.StatusTerminated})
			u := store.TrackingUpdate{Rule: store.TrackSync, Status: store.StatusTerminated}
			if err := s.AckWorkflowNotice(t.Context(), ack("wf-1", "node-2", u), at(6*time.Second)); err != nil {
				t.Fatalf("AckWorkflowNotice: %v", err)
			}
			wantNotice(t, "after the ack", s, "wf-1", false)
			if w := getAgentWorkflow(t, s, counterA, "wf-1"); w.Status != store.StatusTerminated || !w.CompletedAt.Equal(at(6*time.Second)) {
				t.Errorf("row %s completed at %s, want terminated at %s", w.Status, fmtTime(w.CompletedAt), fmtTime(at(6*time.Second)))
			}
		}},
		testCase{"AckWithoutRow", func(t *testing.T, s store.Store) {
			finishedTracked(t, s, "wf-1", complete)
			if _, err := s.DeleteAgentWorkflow(t.Context(), counterA, "wf-1"); err != nil {
				t.Fatalf("DeleteAgentWorkflow: %v", err)
			}
			if err := s.AckWorkflowNotice(t.Context(), ack("wf-1", "node-2", finishU(complete)), at(6*time.Second)); err != nil {
				t.Fatalf("AckWorkflowNotice with no tracking row: %v", err)
			}
			wantNotice(t, "after the ack", s, "wf-1", false)
			wantNoAgentWorkflow(t, "after the ack", s, counterA, "wf-1")
		}},
		testCase{"AckRejectsBadInput", func(t *testing.T, s store.Store) {
			finishedTracked(t, s, "wf-1", complete)
			for _, tc := range []struct {
				name string
				a    store.NoticeAck
				want string
			}{
				{"progress rule", ack("wf-1", "node-2", store.TrackingUpdate{Rule: store.TrackProgress}), string(store.TrackProgress)},
				{"finish as running", ack("wf-1", "node-2", store.TrackingUpdate{Rule: store.TrackFinish, Status: store.StatusRunning}), string(store.StatusRunning)},
				{"sync without status", ack("wf-1", "node-2", store.TrackingUpdate{Rule: store.TrackSync}), "no status"},
				{"no owner", ack("wf-1", "", finishU(complete)), "owner"},
			} {
				err := s.AckWorkflowNotice(t.Context(), tc.a, at(6*time.Second))
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: error %v, want one naming %q", tc.name, err, tc.want)
				}
			}
			wantNotice(t, "after rejected acks", s, "wf-1", true)
			if w := getAgentWorkflow(t, s, counterA, "wf-1"); w.Status != store.StatusQueued {
				t.Errorf("row %s after rejected acks, want queued", w.Status)
			}
		}},
	)
}()
