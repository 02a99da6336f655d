package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

// The Think outbox: the message a submission with a notify target gets
// when it ends, and its delivery (claim, deliver, retry, prune).

const notifyEvent = "think.done"

// notifySubmission is a submission that a workflow instance waits for.
func notifySubmission(id string, key store.AgentKey, instance string, created time.Time) *store.Submission {
	sub := newSubmission(id, key, created, msg(id))
	sub.NotifyInstance, sub.NotifyEvent = instance, notifyEvent
	return sub
}

func getOutbox(t *testing.T, s store.Store, key store.AgentKey, id string) []store.OutboxMessage {
	t.Helper()
	ms, err := s.GetOutbox(t.Context(), key, id)
	if err != nil {
		t.Fatalf("GetOutbox(%s, %s): %v", key, id, err)
	}
	for _, m := range ms {
		if m.AgentKey != key || m.SubmissionID != id {
			t.Errorf("GetOutbox(%s, %s) returned message %d of submission %s of %s", key, id, m.ID, m.SubmissionID, m.AgentKey)
		}
	}
	return ms
}

func wantNoOutbox(t *testing.T, what string, s store.Store, key store.AgentKey, id string) {
	t.Helper()
	if ms := getOutbox(t, s, key, id); len(ms) != 0 {
		t.Errorf("%s: %d outbox messages of %s, want none", what, len(ms), id)
	}
}

// outboxPayload is the payload the store documents, as a JSON value.
func outboxPayload(id string, status store.SubmissionStatus, errMsg, output string) string {
	out := "null"
	if output != "" {
		out = output
	}
	e, _ := json.Marshal(errMsg)
	return `{"submissionId":"` + id + `","status":"` + string(status) + `","error":` + string(e) + `,"output":` + out + `}`
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func outboxDiffs(got, want *store.OutboxMessage) diffs {
	var d diffs
	if want.ID != 0 {
		eq(&d, "ID", got.ID, want.ID)
	}
	eq(&d, "AgentKey", got.AgentKey, want.AgentKey)
	eq(&d, "SubmissionID", got.SubmissionID, want.SubmissionID)
	eq(&d, "InstanceID", got.InstanceID, want.InstanceID)
	eq(&d, "EventType", got.EventType, want.EventType)
	switch {
	case want.Payload == nil && got.Payload != nil:
		d.add("Payload", string(got.Payload), "nil")
	case want.Payload != nil && !sameJSON(got.Payload, want.Payload):
		d.add("Payload", string(got.Payload), string(want.Payload))
	}
	eq(&d, "Attempts", got.Attempts, want.Attempts)
	eq(&d, "LastError", got.LastError, want.LastError)
	eqTime(&d, "NextAttemptAt", got.NextAttemptAt, want.NextAttemptAt)
	eq(&d, "Owner", got.Owner, want.Owner)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "DeliveredAt", got.DeliveredAt, want.DeliveredAt)
	eq(&d, "Failed", got.Failed, want.Failed)
	return d
}

// wantOutbox requires the submission to have exactly one outbox message
// like want, and returns it.
func wantOutbox(t *testing.T, what string, s store.Store, key store.AgentKey, id string, want *store.OutboxMessage) store.OutboxMessage {
	t.Helper()
	ms := getOutbox(t, s, key, id)
	if len(ms) != 1 {
		t.Fatalf("%s: %d outbox messages of %s, want 1", what, len(ms), id)
	}
	checkOutbox(t, what, &ms[0], want)
	return ms[0]
}

func checkOutbox(t *testing.T, what string, got, want *store.OutboxMessage) {
	t.Helper()
	if got.ID <= 0 {
		t.Errorf("%s: outbox message ID %d, want a positive one", what, got.ID)
	}
	if d := outboxDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: outbox message of %s:\n\t%s", what, want.SubmissionID, strings.Join(d, "\n\t"))
	}
}

// newOutbox is the outbox message an end of the submission at now writes.
func newOutbox(key store.AgentKey, id, instance string, payload string, now time.Time) *store.OutboxMessage {
	return &store.OutboxMessage{AgentKey: key, SubmissionID: id, InstanceID: instance, EventType: notifyEvent,
		Payload: []byte(payload), NextAttemptAt: now, CreatedAt: now}
}

func claimOutbox(t *testing.T, s store.Store, owner string, now time.Time, limit int) []store.OutboxMessage {
	t.Helper()
	ms, err := s.ClaimOutbox(t.Context(), owner, now, limit)
	if err != nil {
		t.Fatalf("ClaimOutbox(%q, %s, %d): %v", owner, fmtTime(now), limit, err)
	}
	for _, m := range ms {
		if m.Owner != owner {
			t.Errorf("ClaimOutbox(%q) returned message %d owned by %q", owner, m.ID, m.Owner)
		}
	}
	return ms
}

func outboxSubmissions(ms []store.OutboxMessage) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.SubmissionID
	}
	return ids
}

func wantOutboxClaimed(t *testing.T, s store.Store, owner string, now time.Time, limit int, subs ...string) []store.OutboxMessage {
	t.Helper()
	ms := claimOutbox(t, s, owner, now, limit)
	if got := outboxSubmissions(ms); !slices.Equal(got, subs) {
		t.Fatalf("ClaimOutbox(%q, %s, %d) claimed the messages of %q, want %q", owner, fmtTime(now), limit, got, subs)
	}
	if !slices.IsSortedFunc(ms, func(a, b store.OutboxMessage) int { return int(a.ID - b.ID) }) {
		t.Errorf("ClaimOutbox(%q) returned ids out of order", owner)
	}
	return ms
}

func wantOutboxTimes(t *testing.T, s store.Store, until time.Time, limit int, want ...time.Time) {
	t.Helper()
	got, err := s.NextOutboxTimes(t.Context(), until, limit)
	if err != nil {
		t.Fatalf("NextOutboxTimes(%s, %d): %v", fmtTime(until), limit, err)
	}
	if !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("NextOutboxTimes(%s, %d) = %s, want %s", fmtTime(until), limit, fmtTimes(got), fmtTimes(want))
	}
}

// cancelled creates a pending submission waited for by instance and
// cancels it at now, which writes its outbox message.
func cancelled(t *testing.T, s store.Store, key store.AgentKey, id, instance string, now time.Time) {
	t.Helper()
	createSubmission(t, s, notifySubmission(id, key, instance, t0))
	if prior, err := s.CancelSubmission(t.Context(), key, id, now); err != nil || prior != store.SubmissionPending {
		t.Fatalf("CancelSubmission(%s, %s) = %q, %v; want pending", key, id, prior, err)
	}
}

var thinkOutboxCases = []testCase{
	{"FinishWritesOneMessage", func(t *testing.T, s store.Store) {
		sub := notifySubmission("s1", chatA, "wf-1", t0)
		got := createSubmission(t, s, sub)
		checkSubmission(t, "CreateSubmission", got, storedSubmission(sub, 1))
		checkSubmission(t, "GetSubmission", getSubmission(t, s, chatA, "s1"), storedSubmission(sub, 1))
		wantStarted(t, s, chatA, "node-1", at(time.Second), "s1")
		applySubmission(t, s, chatA, "s1", "node-1", at(time.Second))

		// A finish by another node changes nothing, the outbox included.
		err := s.FinishSubmission(t.Context(), chatA, "s1", "node-2", store.SubmissionCompleted, "", []byte(`{"text":"x"}`), store.Usage{}, at(2*time.Second))
		wantErrNaming(t, "FinishSubmission by another node", err, store.ErrLeaseLost, "s1")
		wantNoOutbox(t, "after a refused FinishSubmission", s, chatA, "s1")

		output := `{"text":"hi \"there\"","n":[1,2]}`
		if err := s.FinishSubmission(t.Context(), chatA, "s1", "node-1", store.SubmissionCompleted, "", []byte(output),
			store.Usage{InputTokens: 3, OutputTokens: 4}, at(3*time.Second)); err != nil {
			t.Fatalf("FinishSubmission: %v", err)
		}
		wantOutbox(t, "after FinishSubmission", s, chatA, "s1",
			newOutbox(chatA, "s1", "wf-1", outboxPayload("s1", store.SubmissionCompleted, "", output), at(3*time.Second)))
		want := storedSubmission(sub, 1)
		want.Status, want.Output, want.Applied = store.SubmissionCompleted, []byte(output), true
		want.InputTokens, want.OutputTokens = 3, 4
		want.StartedAt, want.FinishedAt = at(time.Second), at(3*time.Second)
		checkSubmission(t, "the finished submission", getSubmission(t, s, chatA, "s1"), want)
		// A second finish is refused and writes nothing more.
		err = s.FinishSubmission(t.Context(), chatA, "s1", "node-1", store.SubmissionError, "again", nil, store.Usage{}, at(4*time.Second))
		wantErrNaming(t, "a second FinishSubmission", err, store.ErrLeaseLost, "s1")
		if ms := getOutbox(t, s, chatA, "s1"); len(ms) != 1 {
			t.Errorf("%d outbox messages after a second FinishSubmission, want 1", len(ms))
		}

		// An error, with no output and an error that needs escaping.
		createSubmission(t, s, notifySubmission("s2", chatA, "wf-2", t0))
		wantStarted(t, s, chatA, "node-1", at(5*time.Second), "s2")
		errMsg := "model: \"boom\"\n\\ <>&"
		if err := s.FinishSubmission(t.Context(), chatA, "s2", "node-1", store.SubmissionError, errMsg, nil, store.Usage{}, at(6*time.Second)); err != nil {
			t.Fatalf("FinishSubmission(s2): %v", err)
		}
		wantOutbox(t, "after FinishSubmission as error", s, chatA, "s2",
			newOutbox(chatA, "s2", "wf-2", outboxPayload("s2", store.SubmissionError, errMsg, ""), at(6*time.Second)))
	}},
	{"FinishWithoutTargetWritesNone", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		runSubmission(t, s, chatA, "s1", "node-1", at(time.Second))
		wantNoOutbox(t, "after FinishSubmission", s, chatA, "s1")
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("b")))
		if prior, err := s.CancelSubmission(t.Context(), chatA, "s2", at(2*time.Second)); err != nil || prior != store.SubmissionPending {
			t.Fatalf("CancelSubmission(s2) = %q, %v; want pending", prior, err)
		}
		wantNoOutbox(t, "after CancelSubmission", s, chatA, "s2")
		wantOutboxTimes(t, s, farFuture, 10)
		wantOutboxClaimed(t, s, "node-1", farFuture, 10)
	}},
	{"CancelPendingWritesOneMessage", func(t *testing.T, s store.Store) {
		cancelled(t, s, chatA, "s1", "wf-1", at(time.Second))
		wantOutbox(t, "after CancelSubmission", s, chatA, "s1",
			newOutbox(chatA, "s1", "wf-1", outboxPayload("s1", store.SubmissionAborted, "", ""), at(time.Second)))
		if prior, err := s.CancelSubmission(t.Context(), chatA, "s1", at(2*time.Second)); err != nil || prior != store.SubmissionAborted {
			t.Fatalf("a second CancelSubmission = %q, %v; want aborted", prior, err)
		}
		if ms := getOutbox(t, s, chatA, "s1"); len(ms) != 1 {
			t.Errorf("%d outbox messages after a second CancelSubmission, want 1", len(ms))
		}
		// A running one is its runner's to end: no message yet.
		createSubmission(t, s, notifySubmission("s2", chatA, "wf-2", t0))
		wantStarted(t, s, chatA, "node-1", at(3*time.Second), "s2")
		if prior, err := s.CancelSubmission(t.Context(), chatA, "s2", at(4*time.Second)); err != nil || prior != store.SubmissionRunning {
			t.Fatalf("CancelSubmission of a running one = %q, %v; want running", prior, err)
		}
		wantNoOutbox(t, "after CancelSubmission of a running one", s, chatA, "s2")
	}},
	{"FinishPendingSubmission", func(t *testing.T, s store.Store) {
		_, err := s.FinishPendingSubmission(t.Context(), chatA, "nope", store.SubmissionSkipped, "x", t0)
		wantErrNaming(t, "FinishPendingSubmission of an unknown submission", err, store.ErrNotFound, "nope")

		sub1 := createSubmission(t, s, notifySubmission("s1", chatA, "wf-1", t0))
		sub2 := createSubmission(t, s, notifySubmission("s2", chatA, "wf-2", t0))
		wantStarted(t, s, chatA, "node-1", at(time.Second), "s1")
		// A running one is left alone.
		prior, err := s.FinishPendingSubmission(t.Context(), chatA, "s1", store.SubmissionSkipped, "skipped", at(2*time.Second))
		if err != nil || prior != store.SubmissionRunning {
			t.Fatalf("FinishPendingSubmission of a running one = %q, %v; want running", prior, err)
		}
		wantRunning := *sub1
		wantRunning.Status, wantRunning.Owner, wantRunning.StartedAt = store.SubmissionRunning, "node-1", at(time.Second)
		checkSubmission(t, "the running submission", getSubmission(t, s, chatA, "s1"), &wantRunning)
		wantNoOutbox(t, "after FinishPendingSubmission of a running one", s, chatA, "s1")

		prior, err = s.FinishPendingSubmission(t.Context(), chatA, "s2", store.SubmissionSkipped, "superseded", at(3*time.Second))
		if err != nil || prior != store.SubmissionPending {
			t.Fatalf("FinishPendingSubmission of a pending one = %q, %v; want pending", prior, err)
		}
		want := *sub2
		want.Status, want.Error, want.FinishedAt = store.SubmissionSkipped, "superseded", at(3*time.Second)
		checkSubmission(t, "the skipped submission", getSubmission(t, s, chatA, "s2"), &want)
		wantOutbox(t, "after FinishPendingSubmission", s, chatA, "s2",
			newOutbox(chatA, "s2", "wf-2", outboxPayload("s2", store.SubmissionSkipped, "superseded", ""), at(3*time.Second)))
		// Finished: left alone.
		prior, err = s.FinishPendingSubmission(t.Context(), chatA, "s2", store.SubmissionAborted, "", at(4*time.Second))
		if err != nil || prior != store.SubmissionSkipped {
			t.Fatalf("FinishPendingSubmission of a finished one = %q, %v; want skipped", prior, err)
		}
		checkSubmission(t, "the skipped submission, later", getSubmission(t, s, chatA, "s2"), &want)
		if ms := getOutbox(t, s, chatA, "s2"); len(ms) != 1 {
			t.Errorf("%d outbox messages of s2, want 1", len(ms))
		}
	}},
	{"ClaimDeliverRetryPrune", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		cancelled(t, s, chatA, "s1", "wf-1", at(1*time.Second))
		cancelled(t, s, chatA, "s2", "wf-2", at(2*time.Second))
		cancelled(t, s, chatA, "s3", "wf-3", at(3*time.Second))
		cancelled(t, s, counterA, "s4", "wf-4", at(4*time.Second))

		wantOutboxTimes(t, s, at(2*time.Second), 10, at(time.Second), at(2*time.Second))
		wantOutboxTimes(t, s, farFuture, 2, at(time.Second), at(2*time.Second))
		wantOutboxClaimed(t, s, "node-1", at(500*time.Millisecond), 10)
		got := wantOutboxClaimed(t, s, "node-1", at(2*time.Second), 10, "s1", "s2")
		m1 := newOutbox(chatA, "s1", "wf-1", outboxPayload("s1", store.SubmissionAborted, "", ""), at(time.Second))
		m1.Owner = "node-1"
		checkOutbox(t, "the first claimed message", &got[0], m1)
		id1, id2 := got[0].ID, got[1].ID
		// Claimed by a node with a row: neither due nor claimable.
		wantOutboxTimes(t, s, farFuture, 10, at(3*time.Second), at(4*time.Second))
		got = wantOutboxClaimed(t, s, "node-2", farFuture, 1, "s3")
		id3 := got[0].ID
		wantOutboxClaimed(t, s, "node-2", farFuture, 10, "s4")
		wantOutboxClaimed(t, s, "node-1", farFuture, 10)
		wantOutboxTimes(t, s, farFuture, 10)

		// Deliver: fenced by owner.
		err := s.DeliveredOutbox(t.Context(), id1, "node-2", at(5*time.Second))
		wantErrNaming(t, "DeliveredOutbox by another node", err, store.ErrLeaseLost, strconv.FormatInt(id1, 10))
		wantErrNaming(t, "DeliveredOutbox by another node", err, store.ErrLeaseLost, "s1")
		if err := s.DeliveredOutbox(t.Context(), id1, "node-1", at(5*time.Second)); err != nil {
			t.Fatalf("DeliveredOutbox(%d): %v", id1, err)
		}
		m1.Payload, m1.Owner, m1.DeliveredAt = nil, "", at(5*time.Second)
		wantOutbox(t, "the delivered message", s, chatA, "s1", m1)
		err = s.DeliveredOutbox(t.Context(), id1, "node-1", at(6*time.Second))
		wantErrNaming(t, "a second DeliveredOutbox", err, store.ErrLeaseLost, strconv.FormatInt(id1, 10))
		err = s.DeliveredOutbox(t.Context(), 1<<40, "node-1", at(6*time.Second))
		wantErrNaming(t, "DeliveredOutbox of an unknown message", err, store.ErrNotFound, strconv.FormatInt(1<<40, 10))

		// Retry: fenced by owner; the message is due again at next.
		err = s.RetryOutbox(t.Context(), id2, "node-2", at(time.Minute), "busy")
		wantErrNaming(t, "RetryOutbox by another node", err, store.ErrLeaseLost, strconv.FormatInt(id2, 10))
		err = s.RetryOutbox(t.Context(), 1<<40, "node-1", at(time.Minute), "busy")
		wantErrNaming(t, "RetryOutbox of an unknown message", err, store.ErrNotFound, strconv.FormatInt(1<<40, 10))
		if err := s.RetryOutbox(t.Context(), id2, "node-1", at(time.Minute), "instance busy"); err != nil {
			t.Fatalf("RetryOutbox(%d): %v", id2, err)
		}
		m2 := newOutbox(chatA, "s2", "wf-2", outboxPayload("s2", store.SubmissionAborted, "", ""), at(2*time.Second))
		m2.Attempts, m2.LastError, m2.NextAttemptAt = 1, "instance busy", at(time.Minute)
		wantOutbox(t, "the retried message", s, chatA, "s2", m2)
		err = s.DeliveredOutbox(t.Context(), id2, "node-1", at(7*time.Second))
		wantErrNaming(t, "DeliveredOutbox after giving the claim up", err, store.ErrLeaseLost, strconv.FormatInt(id2, 10))
		wantOutboxTimes(t, s, farFuture, 10, at(time.Minute))
		wantOutboxClaimed(t, s, "node-2", at(59*time.Second), 10)
		got = wantOutboxClaimed(t, s, "node-2", at(time.Minute), 10, "s2")
		m2.Owner = "node-2"
		checkOutbox(t, "the message claimed again", &got[0], m2)
		if err := s.DeliveredOutbox(t.Context(), id2, "node-2", at(2*time.Minute)); err != nil {
			t.Fatalf("DeliveredOutbox(%d): %v", id2, err)
		}
		if err := s.DeliveredOutbox(t.Context(), id3, "node-2", at(3*time.Minute)); err != nil {
			t.Fatalf("DeliveredOutbox(%d): %v", id3, err)
		}

		// Prune: delivered ones only, before the time given, up to limit.
		prune := func(before time.Time, limit, want int) {
			t.Helper()
			n, err := s.PruneOutbox(t.Context(), before, limit)
			if err != nil || n != want {
				t.Fatalf("PruneOutbox(%s, %d) = %d, %v; want %d", fmtTime(before), limit, n, err, want)
			}
		}
		prune(at(5*time.Second), 10, 0)
		prune(at(2*time.Minute), 10, 1)
		wantNoOutbox(t, "after pruning", s, chatA, "s1")
		prune(farFuture, 1, 1)
		prune(farFuture, 10, 1)
		prune(farFuture, 10, 0)
		wantNoOutbox(t, "after pruning", s, chatA, "s2")
		wantNoOutbox(t, "after pruning", s, chatA, "s3")
		if ms := getOutbox(t, s, counterA, "s4"); len(ms) != 1 || ms[0].Owner != "node-2" {
			t.Errorf("the undelivered message after pruning: %d messages, want 1 claimed by node-2", len(ms))
		}
	}},
	{"GiveUp", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		cancelled(t, s, chatA, "s1", "wf-1", at(1*time.Second))
		cancelled(t, s, chatA, "s2", "wf-2", at(2*time.Second))
		got := wantOutboxClaimed(t, s, "node-1", at(2*time.Second), 10, "s1", "s2")
		id1, id2 := got[0].ID, got[1].ID

		// Fenced by owner, like DeliveredOutbox.
		err := s.FailedOutbox(t.Context(), id1, "node-2", at(5*time.Second), "too large")
		wantErrNaming(t, "FailedOutbox by another node", err, store.ErrLeaseLost, strconv.FormatInt(id1, 10))
		err = s.FailedOutbox(t.Context(), 1<<40, "node-1", at(5*time.Second), "too large")
		wantErrNaming(t, "FailedOutbox of an unknown message", err, store.ErrNotFound, strconv.FormatInt(1<<40, 10))
		if err := s.FailedOutbox(t.Context(), id1, "node-1", at(5*time.Second), "event too large"); err != nil {
			t.Fatalf("FailedOutbox(%d): %v", id1, err)
		}
		m1 := newOutbox(chatA, "s1", "wf-1", "", at(time.Second))
		m1.Payload, m1.DeliveredAt, m1.Failed, m1.LastError = nil, at(5*time.Second), true, "event too large"
		wantOutbox(t, "the message given up on", s, chatA, "s1", m1)
		err = s.FailedOutbox(t.Context(), id1, "node-1", at(6*time.Second), "again")
		wantErrNaming(t, "a second FailedOutbox", err, store.ErrLeaseLost, "given up")
		err = s.DeliveredOutbox(t.Context(), id1, "node-1", at(6*time.Second))
		wantErrNaming(t, "DeliveredOutbox after FailedOutbox", err, store.ErrLeaseLost, strconv.FormatInt(id1, 10))
		wantOutbox(t, "the message given up on", s, chatA, "s1", m1)

		// Given up after a retry: the attempts stay, the reason replaces
		// the last error.
		if err := s.RetryOutbox(t.Context(), id2, "node-1", at(time.Minute), "instance busy"); err != nil {
			t.Fatalf("RetryOutbox(%d): %v", id2, err)
		}
		wantOutboxClaimed(t, s, "node-2", at(time.Minute), 10, "s2")
		if err := s.FailedOutbox(t.Context(), id2, "node-2", at(2*time.Minute), "instance gone"); err != nil {
			t.Fatalf("FailedOutbox(%d): %v", id2, err)
		}
		m2 := newOutbox(chatA, "s2", "wf-2", "", at(2*time.Second))
		m2.Payload, m2.Attempts, m2.NextAttemptAt = nil, 1, at(time.Minute)
		m2.DeliveredAt, m2.Failed, m2.LastError = at(2*time.Minute), true, "instance gone"
		wantOutbox(t, "the retried message given up on", s, chatA, "s2", m2)

		// Never due or claimable again, even once its node is gone; pruned
		// like a delivered one.
		if _, err := s.RemoveNode(t.Context(), "node-2", at(3*time.Minute)); err != nil {
			t.Fatalf("RemoveNode: %v", err)
		}
		wantOutboxTimes(t, s, farFuture, 10)
		wantOutboxClaimed(t, s, "node-1", farFuture, 10)
		if n, err := s.PruneOutbox(t.Context(), at(time.Minute), 10); err != nil || n != 1 {
			t.Fatalf("PruneOutbox(1m) = %d, %v; want 1", n, err)
		}
		wantNoOutbox(t, "after pruning", s, chatA, "s1")
		if n, err := s.PruneOutbox(t.Context(), farFuture, 10); err != nil || n != 1 {
			t.Fatalf("PruneOutbox = %d, %v; want 1", n, err)
		}
		wantNoOutbox(t, "after pruning", s, chatA, "s2")
	}},
	{"OrphanedClaim", func(t *testing.T, s store.Store) {
		cancelled(t, s, chatA, "s1", "wf-1", at(time.Second))
		got := wantOutboxClaimed(t, s, "ghost", at(time.Second), 10, "s1")
		id := got[0].ID
		// ghost has no row: its claim is free.
		wantOutboxTimes(t, s, farFuture, 10, at(time.Second))
		liveNode(t, s, "node-1")
		wantOutboxClaimed(t, s, "node-1", at(2*time.Second), 10, "s1")
		wantOutboxTimes(t, s, farFuture, 10)
		err := s.DeliveredOutbox(t.Context(), id, "ghost", at(3*time.Second))
		wantErrNaming(t, "DeliveredOutbox by the orphaned claim's node", err, store.ErrLeaseLost, strconv.FormatInt(id, 10))
		err = s.RetryOutbox(t.Context(), id, "ghost", at(time.Minute), "x")
		wantErrNaming(t, "RetryOutbox by the orphaned claim's node", err, store.ErrLeaseLost, strconv.FormatInt(id, 10))
		if err := s.DeliveredOutbox(t.Context(), id, "node-1", at(3*time.Second)); err != nil {
			t.Fatalf("DeliveredOutbox: %v", err)
		}
		// A delivered message is never claimed again.
		if _, err := s.RemoveNode(t.Context(), "node-1", at(4*time.Second)); err != nil {
			t.Fatalf("RemoveNode: %v", err)
		}
		wantOutboxClaimed(t, s, "node-2", farFuture, 10)
	}},
	{"ConcurrentClaimsTakeEachOnce", func(t *testing.T, s store.Store) {
		const n = 30
		for i := range n {
			cancelled(t, s, chatA, fmt.Sprintf("s%02d", i), "wf", at(time.Duration(i)*time.Millisecond))
		}
		for w := range workers {
			liveNode(t, s, fmt.Sprintf("node-%d", w))
		}
		claimed := claimConcurrently(t, "ClaimOutbox", func(owner string) ([]string, error) {
			ms, err := s.ClaimOutbox(t.Context(), owner, farFuture, 3)
			ids := make([]string, len(ms))
			for i, m := range ms {
				ids[i] = m.SubmissionID
				if m.Owner != owner {
					return nil, fmt.Errorf("ClaimOutbox(%s) returned %s owned by %q", owner, m.SubmissionID, m.Owner)
				}
			}
			return ids, err
		})
		if len(claimed) != n {
			t.Errorf("%d messages claimed, want %d", len(claimed), n)
		}
		for id, owner := range claimed {
			if ms := getOutbox(t, s, chatA, id); len(ms) != 1 || ms[0].Owner != owner {
				t.Errorf("the message of %s: %d rows, want 1 claimed by %s", id, len(ms), owner)
			}
		}
	}},
}
