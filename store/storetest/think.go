package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/store"
)

// Think agents: submissions and the conversation (DESIGN §4.2).

// msg is a JSON model.Message with the given text.
func msg(text string) string { return `{"role":"user","content":"` + text + `"}` }

// msgArray is the JSON array of the given messages.
func msgArray(msgs ...string) []byte { return []byte("[" + strings.Join(msgs, ",") + "]") }

func newSubmission(id string, key store.AgentKey, created time.Time, msgs ...string) *store.Submission {
	return &store.Submission{ID: id, AgentKey: key, Messages: msgArray(msgs...), CreatedAt: created}
}

// stored is the submission as CreateSubmission stores it with seq.
func storedSubmission(sub *store.Submission, seq int64) *store.Submission {
	c := *sub
	c.Seq, c.Status = seq, store.SubmissionPending
	return &c
}

func createSubmission(t *testing.T, s store.Store, sub *store.Submission) *store.Submission {
	t.Helper()
	got, created, err := s.CreateSubmission(t.Context(), sub)
	if err != nil {
		t.Fatalf("CreateSubmission(%s of %s): %v", sub.ID, sub.AgentKey, err)
	}
	if !created {
		t.Fatalf("CreateSubmission(%s of %s) created nothing, returned %s", sub.ID, sub.AgentKey, got.ID)
	}
	return got
}

func getSubmission(t *testing.T, s store.Store, key store.AgentKey, id string) *store.Submission {
	t.Helper()
	sub, err := s.GetSubmission(t.Context(), key, id)
	if err != nil {
		t.Fatalf("GetSubmission(%s, %s): %v", key, id, err)
	}
	return sub
}

func startSubmission(t *testing.T, s store.Store, key store.AgentKey, owner string, now time.Time) *store.Submission {
	t.Helper()
	sub, err := s.StartSubmission(t.Context(), key, owner, now)
	if err != nil {
		t.Fatalf("StartSubmission(%s, %q): %v", key, owner, err)
	}
	return sub
}

// wantStarted starts the agent's next submission and requires it to be id.
func wantStarted(t *testing.T, s store.Store, key store.AgentKey, owner string, now time.Time, id string) *store.Submission {
	t.Helper()
	sub := startSubmission(t, s, key, owner, now)
	if sub == nil {
		t.Fatalf("StartSubmission(%s, %q) started nothing, want %s", key, owner, id)
	}
	if sub.ID != id || sub.AgentKey != key {
		t.Fatalf("StartSubmission(%s, %q) started %s of %s, want %s", key, owner, sub.ID, sub.AgentKey, id)
	}
	if sub.Status != store.SubmissionRunning || sub.Owner != owner || !sub.StartedAt.Equal(now) {
		t.Errorf("StartSubmission returned status %q owner %q started %s, want running, %q, %s",
			sub.Status, sub.Owner, fmtTime(sub.StartedAt), owner, fmtTime(now))
	}
	return sub
}

func wantNoStart(t *testing.T, s store.Store, key store.AgentKey, owner string, now time.Time) {
	t.Helper()
	if sub := startSubmission(t, s, key, owner, now); sub != nil {
		t.Fatalf("StartSubmission(%s, %q) started %s (seq %d), want none", key, owner, sub.ID, sub.Seq)
	}
}

func applySubmission(t *testing.T, s store.Store, key store.AgentKey, id, owner string, now time.Time) {
	t.Helper()
	if err := s.ApplySubmission(t.Context(), key, id, owner, now); err != nil {
		t.Fatalf("ApplySubmission(%s, %s, %q): %v", key, id, owner, err)
	}
}

func finishSubmission(t *testing.T, s store.Store, key store.AgentKey, id, owner string, status store.SubmissionStatus, now time.Time) {
	t.Helper()
	if err := s.FinishSubmission(t.Context(), key, id, owner, status, "", nil, store.Usage{}, now); err != nil {
		t.Fatalf("FinishSubmission(%s, %s, %q, %s): %v", key, id, owner, status, err)
	}
}

// runSubmission starts the agent's next submission (which must be id) on
// owner, applies it and finishes it as completed.
func runSubmission(t *testing.T, s store.Store, key store.AgentKey, id, owner string, now time.Time) {
	t.Helper()
	wantStarted(t, s, key, owner, now, id)
	applySubmission(t, s, key, id, owner, now)
	finishSubmission(t, s, key, id, owner, store.SubmissionCompleted, now)
}

func submissionDiffs(got, want *store.Submission) diffs {
	var d diffs
	eq(&d, "ID", got.ID, want.ID)
	eq(&d, "AgentKey", got.AgentKey, want.AgentKey)
	eq(&d, "Seq", got.Seq, want.Seq)
	eq(&d, "IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	eqBytes(&d, "Metadata", got.Metadata, want.Metadata)
	eqBytes(&d, "Messages", got.Messages, want.Messages)
	eq(&d, "Status", got.Status, want.Status)
	eq(&d, "Error", got.Error, want.Error)
	eqBytes(&d, "Output", got.Output, want.Output)
	eq(&d, "Applied", got.Applied, want.Applied)
	eq(&d, "Owner", got.Owner, want.Owner)
	eq(&d, "NotifyInstance", got.NotifyInstance, want.NotifyInstance)
	eq(&d, "NotifyEvent", got.NotifyEvent, want.NotifyEvent)
	eq(&d, "TraceParent", got.TraceParent, want.TraceParent)
	eq(&d, "InputTokens", got.InputTokens, want.InputTokens)
	eq(&d, "OutputTokens", got.OutputTokens, want.OutputTokens)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "StartedAt", got.StartedAt, want.StartedAt)
	eqTime(&d, "FinishedAt", got.FinishedAt, want.FinishedAt)
	return d
}

func checkSubmission(t *testing.T, what string, got, want *store.Submission) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no submission, want %s", what, want.ID)
		return
	}
	if d := submissionDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: submission %s:\n\t%s", what, want.ID, strings.Join(d, "\n\t"))
	}
}

func listSubmissions(t *testing.T, s store.Store, key store.AgentKey, f store.SubmissionFilter) []store.Submission {
	t.Helper()
	subs, err := s.ListSubmissions(t.Context(), key, f)
	if err != nil {
		t.Fatalf("ListSubmissions(%s, %+v): %v", key, f, err)
	}
	for _, sub := range subs {
		if sub.AgentKey != key {
			t.Errorf("ListSubmissions(%s) returned %s of %s", key, sub.ID, sub.AgentKey)
		}
	}
	return subs
}

func submissionIDs(subs []store.Submission) []string {
	ids := make([]string, 0, len(subs))
	for _, sub := range subs {
		ids = append(ids, sub.ID)
	}
	return ids
}

func listSubmissionIDs(t *testing.T, s store.Store, key store.AgentKey, f store.SubmissionFilter) []string {
	t.Helper()
	return submissionIDs(listSubmissions(t, s, key, f))
}

func conversation(t *testing.T, s store.Store, key store.AgentKey) []store.ConversationMessage {
	t.Helper()
	ms, err := s.ListConversation(t.Context(), key)
	if err != nil {
		t.Fatalf("ListConversation(%s): %v", key, err)
	}
	return ms
}

// convRow is a conversation message as the cases write it.
type convRow struct {
	seq        int64
	submission string
	message    string
	created    time.Time
}

func checkConversation(t *testing.T, what string, s store.Store, key store.AgentKey, want ...convRow) {
	t.Helper()
	got := conversation(t, s, key)
	if len(got) != len(want) {
		t.Errorf("%s: %d messages in the conversation of %s, want %d:\n\tgot  %+v\n\twant %+v", what, len(got), key, len(want), got, want)
		return
	}
	for i, m := range got {
		var d diffs
		eq(&d, "AgentKey", m.AgentKey, key)
		eq(&d, "Seq", m.Seq, want[i].seq)
		eq(&d, "SubmissionID", m.SubmissionID, want[i].submission)
		eqBytes(&d, "Message", m.Message, []byte(want[i].message))
		eqTime(&d, "CreatedAt", m.CreatedAt, want[i].created)
		if len(d) > 0 {
			t.Errorf("%s: message %d:\n\t%s", what, i, strings.Join(d, "\n\t"))
		}
	}
}

// thinkSnapshot is everything the store holds about one agent's Think rows.
type thinkSnapshot struct {
	key   store.AgentKey
	subs  []store.Submission
	convo []store.ConversationMessage
}

func thinkSnap(t *testing.T, s store.Store, key store.AgentKey) thinkSnapshot {
	t.Helper()
	return thinkSnapshot{key: key, subs: listSubmissions(t, s, key, store.SubmissionFilter{}), convo: conversation(t, s, key)}
}

func checkThinkUnchanged(t *testing.T, what string, s store.Store, before thinkSnapshot) {
	t.Helper()
	after := thinkSnap(t, s, before.key)
	if len(after.subs) != len(before.subs) {
		t.Errorf("%s: submissions %q, were %q", what, submissionIDs(after.subs), submissionIDs(before.subs))
	} else {
		for i := range after.subs {
			checkSubmission(t, what+": submission changed", &after.subs[i], &before.subs[i])
		}
	}
	if len(after.convo) != len(before.convo) {
		t.Errorf("%s: %d messages in the conversation, were %d", what, len(after.convo), len(before.convo))
	}
}

var submissionCases = []testCase{
	{"CreateAndGet", func(t *testing.T, s store.Store) {
		const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		sub := &store.Submission{ID: "s1", AgentKey: chatA, IdempotencyKey: "k1", Metadata: []byte(`{"from":"web"}`),
			Messages: msgArray(msg("hi"), msg("there")), CreatedAt: at(time.Second), TraceParent: tp,
			// Set by the store, whatever is given.
			Seq: 42, Status: store.SubmissionCompleted, Owner: "node-1", Applied: true}
		got := createSubmission(t, s, sub)
		want := &store.Submission{ID: "s1", AgentKey: chatA, Seq: 1, IdempotencyKey: "k1", Metadata: []byte(`{"from":"web"}`),
			Messages: msgArray(msg("hi"), msg("there")), Status: store.SubmissionPending, CreatedAt: at(time.Second), TraceParent: tp}
		checkSubmission(t, "CreateSubmission's result", got, want)
		checkSubmission(t, "GetSubmission", getSubmission(t, s, chatA, "s1"), want)

		bare := createSubmission(t, s, &store.Submission{ID: "s2", AgentKey: chatA, CreatedAt: at(2 * time.Second)})
		checkSubmission(t, "a submission without metadata or messages", bare, &store.Submission{ID: "s2", AgentKey: chatA,
			Seq: 2, Status: store.SubmissionPending, CreatedAt: at(2 * time.Second)})
		if bare.Metadata != nil || bare.Messages != nil || bare.Output != nil {
			t.Errorf("a bare submission: Metadata %q Messages %q Output %q, want nil", bare.Metadata, bare.Messages, bare.Output)
		}
	}},
	{"GetUnknownIsNotFound", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		_, err := s.GetSubmission(t.Context(), counterA, "s1")
		wantErrNaming(t, "GetSubmission of another agent's submission", err, store.ErrNotFound, "s1")
		wantErrNaming(t, "GetSubmission of another agent's submission", err, store.ErrNotFound, counterA.String())
		_, err = s.GetSubmission(t.Context(), chatA, "nope")
		wantErrNaming(t, "GetSubmission of an unknown id", err, store.ErrNotFound, "nope")
	}},
	{"CreateRejectsBadInput", func(t *testing.T, s store.Store) {
		for _, sub := range []*store.Submission{
			{AgentKey: chatA, Messages: msgArray(msg("no id")), CreatedAt: t0},
			{ID: "s1", AgentKey: chatA, Messages: []byte(msg("not an array")), CreatedAt: t0},
			{ID: "s2", AgentKey: chatA, Messages: []byte(`[{"role":`), CreatedAt: t0},
			{ID: "s3", AgentKey: chatA, Messages: msgArray(msg("x")), Metadata: []byte(`{bad`), CreatedAt: t0},
		} {
			if got, _, err := s.CreateSubmission(t.Context(), sub); err == nil {
				t.Errorf("CreateSubmission(%+v) succeeded, returned %+v", *sub, *got)
			}
		}
		if ids := listSubmissionIDs(t, s, chatA, store.SubmissionFilter{}); len(ids) != 0 {
			t.Errorf("refused submissions were stored: %q", ids)
		}
	}},
	{"CreateIdempotentByID", func(t *testing.T, s store.Store) {
		first := createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		again := newSubmission("s1", chatA, at(time.Minute), msg("b"))
		again.IdempotencyKey = "new-key"
		got, created, err := s.CreateSubmission(t.Context(), again)
		if err != nil || created {
			t.Fatalf("CreateSubmission with an existing id = created %v, %v; want the existing submission", created, err)
		}
		checkSubmission(t, "CreateSubmission with an existing id", got, first)
		// The key of the refused one was not taken.
		other := newSubmission("s2", chatA, at(time.Minute), msg("c"))
		other.IdempotencyKey = "new-key"
		if got := createSubmission(t, s, other); got.Seq != 2 {
			t.Errorf("the next submission has seq %d, want 2", got.Seq)
		}
	}},
	{"CreateIdempotentByKey", func(t *testing.T, s store.Store) {
		sub := newSubmission("s1", chatA, t0, msg("a"))
		sub.IdempotencyKey = "k"
		createSubmission(t, s, sub)
		runSubmission(t, s, chatA, "s1", "node-1", at(time.Second))
		first := getSubmission(t, s, chatA, "s1")
		again := newSubmission("s2", chatA, at(time.Minute), msg("b"))
		again.IdempotencyKey = "k"
		got, created, err := s.CreateSubmission(t.Context(), again)
		if err != nil || created {
			t.Fatalf("CreateSubmission with an existing key = created %v, %v; want the existing submission", created, err)
		}
		checkSubmission(t, "CreateSubmission with an existing key (finished)", got, first)
		if ids := listSubmissionIDs(t, s, chatA, store.SubmissionFilter{}); !slices.Equal(ids, []string{"s1"}) {
			t.Errorf("submissions: %q, want [s1]", ids)
		}
		// The same id and key together name one submission: no conflict.
		same := newSubmission("s1", chatA, at(time.Minute))
		same.IdempotencyKey = "k"
		if got, created, err := s.CreateSubmission(t.Context(), same); err != nil || created || got.ID != "s1" {
			t.Errorf("CreateSubmission with s1's id and key = %v, created %v, %v; want s1", got, created, err)
		}
	}},
	{"CreateConflictingIDAndKey", func(t *testing.T, s store.Store) {
		a := newSubmission("s1", chatA, t0, msg("a"))
		a.IdempotencyKey = "k1"
		b := newSubmission("s2", chatA, t0, msg("b"))
		b.IdempotencyKey = "k2"
		createSubmission(t, s, a)
		createSubmission(t, s, b)
		before := thinkSnap(t, s, chatA)
		c := newSubmission("s1", chatA, at(time.Minute), msg("c"))
		c.IdempotencyKey = "k2"
		got, created, err := s.CreateSubmission(t.Context(), c)
		if err == nil {
			t.Fatalf("CreateSubmission naming s1 by id and s2 by key = %+v, created %v; want an error", got, created)
		}
		wantErrNaming(t, "CreateSubmission with the id of one and the key of another", err, store.ErrDuplicateID, "s1")
		wantErrNaming(t, "CreateSubmission with the id of one and the key of another", err, store.ErrDuplicateID, "s2")
		checkThinkUnchanged(t, "after the conflicting CreateSubmission", s, before)
	}},
	{"IDsKeysAndSeqsArePerAgent", func(t *testing.T, s store.Store) {
		for _, key := range []store.AgentKey{chatA, counterA, {Class: "Chat", Name: "b"}} {
			sub := newSubmission("s1", key, t0, msg("a"))
			sub.IdempotencyKey = "k"
			if got := createSubmission(t, s, sub); got.Seq != 1 {
				t.Errorf("%s: first submission has seq %d, want 1", key, got.Seq)
			}
		}
		if got := createSubmission(t, s, newSubmission("s2", counterA, t0)); got.Seq != 2 {
			t.Errorf("second submission of %s has seq %d, want 2", counterA, got.Seq)
		}
	}},
	{"ListInSeqOrder", func(t *testing.T, s store.Store) {
		// Ids that sort the other way round from their order of creation.
		for i, id := range []string{"z", "y", "x", "w"} {
			createSubmission(t, s, newSubmission(id, chatA, at(time.Duration(i)*time.Second), msg(id)))
		}
		createSubmission(t, s, newSubmission("other", counterA, t0, msg("o")))
		subs := listSubmissions(t, s, chatA, store.SubmissionFilter{})
		if ids := submissionIDs(subs); !slices.Equal(ids, []string{"z", "y", "x", "w"}) {
			t.Fatalf("ListSubmissions = %q, want [z y x w]", ids)
		}
		for i, sub := range subs {
			if sub.Seq != int64(i+1) {
				t.Errorf("%s: seq %d, want %d", sub.ID, sub.Seq, i+1)
			}
		}
		runSubmission(t, s, chatA, "z", "node-1", at(time.Minute))
		wantStarted(t, s, chatA, "node-1", at(time.Minute), "y")
		if _, err := s.CancelSubmission(t.Context(), chatA, "w", at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			f    store.SubmissionFilter
			want []string
		}{
			{store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}}, []string{"x"}},
			{store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionRunning, store.SubmissionCompleted}}, []string{"z", "y"}},
			{store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionAborted}}, []string{"w"}},
			{store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionError}}, nil},
			{store.SubmissionFilter{Limit: 2}, []string{"z", "y"}},
			{store.SubmissionFilter{Limit: 2, Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionAborted}}, []string{"x", "w"}},
		} {
			if ids := listSubmissionIDs(t, s, chatA, tc.f); !slices.Equal(ids, tc.want) && !(len(ids) == 0 && len(tc.want) == 0) {
				t.Errorf("ListSubmissions(%+v) = %q, want %q", tc.f, ids, tc.want)
			}
		}
	}},
	{"StartFIFOOneAtATime", func(t *testing.T, s store.Store) {
		wantNoStart(t, s, chatA, "node-1", t0)
		for i, id := range []string{"c", "a", "b"} {
			createSubmission(t, s, newSubmission(id, chatA, at(time.Duration(i)*time.Second), msg(id)))
		}
		createSubmission(t, s, newSubmission("other", counterA, t0, msg("o")))
		first := wantStarted(t, s, chatA, "node-1", at(time.Minute), "c")
		want := storedSubmission(newSubmission("c", chatA, t0, msg("c")), 1)
		want.Status, want.Owner, want.StartedAt = store.SubmissionRunning, "node-1", at(time.Minute)
		checkSubmission(t, "StartSubmission's result", first, want)
		checkSubmission(t, "GetSubmission of the started one", getSubmission(t, s, chatA, "c"), want)
		// One at a time, whoever asks.
		wantNoStart(t, s, chatA, "node-1", at(2*time.Minute))
		wantNoStart(t, s, chatA, "node-2", at(2*time.Minute))
		// Another agent's queue is its own.
		wantStarted(t, s, counterA, "node-2", at(2*time.Minute), "other")

		applySubmission(t, s, chatA, "c", "node-1", at(3*time.Minute))
		finishSubmission(t, s, chatA, "c", "node-1", store.SubmissionCompleted, at(3*time.Minute))
		wantStarted(t, s, chatA, "node-2", at(4*time.Minute), "a")
		finishSubmission(t, s, chatA, "a", "node-2", store.SubmissionSkipped, at(4*time.Minute))
		wantStarted(t, s, chatA, "node-1", at(5*time.Minute), "b")
		finishSubmission(t, s, chatA, "b", "node-1", store.SubmissionError, at(5*time.Minute))
		wantNoStart(t, s, chatA, "node-1", at(6*time.Minute))
		// A later submission queues behind nothing.
		createSubmission(t, s, newSubmission("d", chatA, at(7*time.Minute), msg("d")))
		if got := wantStarted(t, s, chatA, "node-1", at(7*time.Minute), "d"); got.Seq != 4 {
			t.Errorf("d: seq %d, want 4", got.Seq)
		}
	}},
	{"StartSkipsCancelled", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("b")))
		if prior, err := s.CancelSubmission(t.Context(), chatA, "s1", at(time.Second)); err != nil || prior != store.SubmissionPending {
			t.Fatalf("CancelSubmission(s1) = %q, %v; want pending", prior, err)
		}
		wantStarted(t, s, chatA, "node-1", at(time.Minute), "s2")
	}},
	{"FinishRecordsOutcome", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		wantStarted(t, s, chatA, "node-1", at(time.Second), "s1")
		applySubmission(t, s, chatA, "s1", "node-1", at(2*time.Second))
		err := s.FinishSubmission(t.Context(), chatA, "s1", "node-1", store.SubmissionRunning, "", nil, store.Usage{}, at(3*time.Second))
		if err == nil {
			t.Errorf("FinishSubmission with status running succeeded")
		}
		if err := s.FinishSubmission(t.Context(), chatA, "s1", "node-1", store.SubmissionError, "model: boom",
			[]byte(`{"text":"partial"}`), store.Usage{InputTokens: 120, OutputTokens: 7}, at(3*time.Second)); err != nil {
			t.Fatalf("FinishSubmission: %v", err)
		}
		want := storedSubmission(newSubmission("s1", chatA, t0, msg("a")), 1)
		want.Status, want.Error, want.Output, want.Applied = store.SubmissionError, "model: boom", []byte(`{"text":"partial"}`), true
		want.InputTokens, want.OutputTokens = 120, 7
		want.StartedAt, want.FinishedAt = at(time.Second), at(3*time.Second)
		checkSubmission(t, "after FinishSubmission", getSubmission(t, s, chatA, "s1"), want)
		// Finishing twice is refused: nobody runs it any more.
		err = s.FinishSubmission(t.Context(), chatA, "s1", "node-1", store.SubmissionCompleted, "", nil, store.Usage{}, at(4*time.Second))
		wantErrNaming(t, "a second FinishSubmission", err, store.ErrLeaseLost, "s1")
		checkSubmission(t, "after a second FinishSubmission", getSubmission(t, s, chatA, "s1"), want)
	}},
	{"RunnerWritesAreFenced", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a"), msg("b")))
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("c")))
		type write struct {
			name string
			do   func(id, owner string) error
		}
		writes := []write{
			{"ApplySubmission", func(id, owner string) error {
				return s.ApplySubmission(t.Context(), chatA, id, owner, at(time.Hour))
			}},
			{"AppendConversation", func(id, owner string) error {
				return s.AppendConversation(t.Context(), chatA, id, owner, [][]byte{[]byte(msg("x"))}, at(time.Hour))
			}},
			{"FinishSubmission", func(id, owner string) error {
				return s.FinishSubmission(t.Context(), chatA, id, owner, store.SubmissionCompleted, "", []byte(`1`), store.Usage{InputTokens: 1}, at(time.Hour))
			}},
		}
		refused := func(what, id, owner string) {
			t.Helper()
			for _, w := range writes {
				before := thinkSnap(t, s, chatA)
				err := w.do(id, owner)
				wantErrNaming(t, fmt.Sprintf("%s of %s by %q (%s)", w.name, id, owner, what), err, store.ErrLeaseLost, id)
				wantErrNaming(t, fmt.Sprintf("%s of %s by %q (%s)", w.name, id, owner, what), err, store.ErrLeaseLost, chatA.String())
				checkThinkUnchanged(t, fmt.Sprintf("after the refused %s (%s)", w.name, what), s, before)
			}
		}
		refused("pending, run by nobody", "s1", "node-1")
		refused("unknown", "nope", "node-1")
		wantStarted(t, s, chatA, "node-1", at(time.Second), "s1")
		refused("run by another node", "s1", "node-2")
		refused("run by nobody", "s1", "")
		refused("pending while another runs", "s2", "node-1")
		if err := s.ApplySubmission(t.Context(), counterA, "s1", "node-1", at(time.Hour)); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("ApplySubmission of %s's s1 for %s: %v, want ErrLeaseLost", chatA, counterA, err)
		}
		finishSubmission(t, s, chatA, "s1", "node-1", store.SubmissionAborted, at(2*time.Second))
		refused("finished", "s1", "node-1")
	}},
	{"ApplyAppendsMessagesOnce", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a"), msg("b")))
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("c")))
		createSubmission(t, s, newSubmission("o1", counterA, t0, msg("other")))
		wantStarted(t, s, chatA, "node-1", at(time.Second), "s1")
		checkConversation(t, "before ApplySubmission", s, chatA)
		applySubmission(t, s, chatA, "s1", "node-1", at(2*time.Second))
		if sub := getSubmission(t, s, chatA, "s1"); !sub.Applied || sub.Status != store.SubmissionRunning || sub.Owner != "node-1" {
			t.Errorf("after ApplySubmission: applied %v status %q owner %q, want true, running, node-1", sub.Applied, sub.Status, sub.Owner)
		}
		rows := []convRow{{1, "s1", msg("a"), at(2 * time.Second)}, {2, "s1", msg("b"), at(2 * time.Second)}}
		checkConversation(t, "after ApplySubmission", s, chatA, rows...)
		// Applied already: the messages are not added twice.
		applySubmission(t, s, chatA, "s1", "node-1", at(3*time.Second))
		checkConversation(t, "after a second ApplySubmission", s, chatA, rows...)

		reply := `{"role":"assistant","content":"ok"}`
		if err := s.AppendConversation(t.Context(), chatA, "s1", "node-1",
			[][]byte{[]byte(reply), []byte(`{"role":"tool","content":"42"}`)}, at(4*time.Second)); err != nil {
			t.Fatalf("AppendConversation: %v", err)
		}
		rows = append(rows, convRow{3, "s1", reply, at(4 * time.Second)}, convRow{4, "s1", `{"role":"tool","content":"42"}`, at(4 * time.Second)})
		checkConversation(t, "after AppendConversation", s, chatA, rows...)
		if err := s.AppendConversation(t.Context(), chatA, "s1", "node-1", nil, at(5*time.Second)); err != nil {
			t.Fatalf("AppendConversation of nothing: %v", err)
		}
		finishSubmission(t, s, chatA, "s1", "node-1", store.SubmissionCompleted, at(6*time.Second))

		wantStarted(t, s, chatA, "node-2", at(7*time.Second), "s2")
		applySubmission(t, s, chatA, "s2", "node-2", at(8*time.Second))
		rows = append(rows, convRow{5, "s2", msg("c"), at(8 * time.Second)})
		checkConversation(t, "after applying s2", s, chatA, rows...)
		checkConversation(t, "another agent's conversation", s, counterA)
	}},
	{"ApplyOfNoMessages", func(t *testing.T, s store.Store) {
		createSubmission(t, s, &store.Submission{ID: "s1", AgentKey: chatA, CreatedAt: t0})
		createSubmission(t, s, &store.Submission{ID: "s2", AgentKey: chatA, Messages: []byte(`[]`), CreatedAt: t0})
		for _, id := range []string{"s1", "s2"} {
			wantStarted(t, s, chatA, "node-1", t0, id)
			applySubmission(t, s, chatA, id, "node-1", t0)
			if !getSubmission(t, s, chatA, id).Applied {
				t.Errorf("%s: not applied", id)
			}
			finishSubmission(t, s, chatA, id, "node-1", store.SubmissionCompleted, t0)
		}
		checkConversation(t, "after applying no messages", s, chatA)
	}},
	{"Cancel", func(t *testing.T, s store.Store) {
		for _, id := range []string{"s1", "s2", "s3", "s4"} {
			createSubmission(t, s, newSubmission(id, chatA, t0, msg(id)))
		}
		runSubmission(t, s, chatA, "s1", "node-1", at(time.Second))
		wantStarted(t, s, chatA, "node-1", at(2*time.Second), "s2")
		cancel := func(id string, want store.SubmissionStatus) {
			t.Helper()
			prior, err := s.CancelSubmission(t.Context(), chatA, id, at(time.Minute))
			if err != nil {
				t.Fatalf("CancelSubmission(%s): %v", id, err)
			}
			if prior != want {
				t.Errorf("CancelSubmission(%s) = %q, want %q", id, prior, want)
			}
		}
		finished := getSubmission(t, s, chatA, "s1")
		running := getSubmission(t, s, chatA, "s2")
		cancel("s1", store.SubmissionCompleted)
		cancel("s2", store.SubmissionRunning)
		checkSubmission(t, "a finished submission after CancelSubmission", getSubmission(t, s, chatA, "s1"), finished)
		checkSubmission(t, "a running submission after CancelSubmission", getSubmission(t, s, chatA, "s2"), running)

		cancel("s3", store.SubmissionPending)
		want := storedSubmission(newSubmission("s3", chatA, t0, msg("s3")), 3)
		want.Status, want.FinishedAt = store.SubmissionAborted, at(time.Minute)
		checkSubmission(t, "a pending submission after CancelSubmission", getSubmission(t, s, chatA, "s3"), want)
		cancel("s3", store.SubmissionAborted)
		checkSubmission(t, "after cancelling it again", getSubmission(t, s, chatA, "s3"), want)

		_, err := s.CancelSubmission(t.Context(), chatA, "nope", at(time.Minute))
		wantErrNaming(t, "CancelSubmission of an unknown id", err, store.ErrNotFound, "nope")
		_, err = s.CancelSubmission(t.Context(), counterA, "s4", at(time.Minute))
		wantErrNaming(t, "CancelSubmission of another agent's submission", err, store.ErrNotFound, "s4")

		// The runner finishes s2 as it sees fit; the cancelled s3 never runs
		// and its messages never reach the conversation.
		applySubmission(t, s, chatA, "s2", "node-1", at(2*time.Minute))
		finishSubmission(t, s, chatA, "s2", "node-1", store.SubmissionAborted, at(2*time.Minute))
		wantStarted(t, s, chatA, "node-1", at(3*time.Minute), "s4")
		applySubmission(t, s, chatA, "s4", "node-1", at(3*time.Minute))
		for _, m := range conversation(t, s, chatA) {
			if m.SubmissionID == "s3" {
				t.Errorf("the cancelled s3 has message %d in the conversation", m.Seq)
			}
		}
	}},
	{"DeleteOnlyFinished", func(t *testing.T, s store.Store) {
		for _, id := range []string{"done1", "done2", "cancelled", "running", "pending"} {
			createSubmission(t, s, newSubmission(id, chatA, t0, msg(id)))
		}
		createSubmission(t, s, newSubmission("done1", counterA, t0, msg("o")))
		runSubmission(t, s, counterA, "done1", "node-1", t0)
		runSubmission(t, s, chatA, "done1", "node-1", t0)
		wantStarted(t, s, chatA, "node-1", t0, "done2")
		finishSubmission(t, s, chatA, "done2", "node-1", store.SubmissionError, t0)
		if _, err := s.CancelSubmission(t.Context(), chatA, "cancelled", t0); err != nil {
			t.Fatal(err)
		}
		wantStarted(t, s, chatA, "node-1", t0, "running")
		convo := conversation(t, s, chatA)

		del := func(ids []string, want int) {
			t.Helper()
			n, err := s.DeleteSubmissions(t.Context(), chatA, ids)
			if err != nil {
				t.Fatalf("DeleteSubmissions(%q): %v", ids, err)
			}
			if n != want {
				t.Errorf("DeleteSubmissions(%q) removed %d, want %d", ids, n, want)
			}
		}
		del([]string{"running", "pending", "nope"}, 0)
		del([]string{"done1", "running", "pending", "nope", "done1"}, 1)
		if ids := listSubmissionIDs(t, s, chatA, store.SubmissionFilter{}); !slices.Equal(ids, []string{"done2", "cancelled", "running", "pending"}) {
			t.Errorf("after deleting done1: %q, want [done2 cancelled running pending]", ids)
		}
		del(nil, 2)
		if ids := listSubmissionIDs(t, s, chatA, store.SubmissionFilter{}); !slices.Equal(ids, []string{"running", "pending"}) {
			t.Errorf("after deleting all finished: %q, want [running pending]", ids)
		}
		del(nil, 0)
		if ids := listSubmissionIDs(t, s, counterA, store.SubmissionFilter{}); !slices.Equal(ids, []string{"done1"}) {
			t.Errorf("another agent's submissions: %q, want [done1]", ids)
		}
		if got := conversation(t, s, chatA); len(got) != len(convo) {
			t.Errorf("deleting submissions changed the conversation: %d messages, were %d", len(got), len(convo))
		}
		// The queue goes on after the deleted ones.
		createSubmission(t, s, newSubmission("later", chatA, t0))
		if got := getSubmission(t, s, chatA, "later"); got.Seq != 6 {
			t.Errorf("a submission after the deletes has seq %d, want 6", got.Seq)
		}
	}},
	{"RecoverRequeuesUnapplied", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("b")))
		wantStarted(t, s, chatA, "ghost", at(time.Second), "s1")
		// The recovering node's own running submission is left alone.
		createSubmission(t, s, newSubmission("o1", counterA, t0, msg("o")))
		wantStarted(t, s, counterA, "node-2", at(time.Second), "o1")
		if r, f, err := s.RecoverSubmissions(t.Context(), counterA, "node-2", "lost", at(time.Minute)); err != nil || len(r)+len(f) != 0 {
			t.Errorf("RecoverSubmissions of the caller's own = %q, %q, %v; want none", submissionIDs(r), submissionIDs(f), err)
		}

		requeued, failed, err := s.RecoverSubmissions(t.Context(), chatA, "node-2", "lost", at(time.Minute))
		if err != nil {
			t.Fatalf("RecoverSubmissions: %v", err)
		}
		want := storedSubmission(newSubmission("s1", chatA, t0, msg("a")), 1)
		if len(requeued) != 1 || len(failed) != 0 {
			t.Fatalf("RecoverSubmissions = requeued %q, failed %q; want [s1], []", submissionIDs(requeued), submissionIDs(failed))
		}
		checkSubmission(t, "the requeued submission", &requeued[0], want)
		checkSubmission(t, "GetSubmission of the requeued submission", getSubmission(t, s, chatA, "s1"), want)
		if r, f, err := s.RecoverSubmissions(t.Context(), chatA, "node-2", "lost", at(time.Minute)); err != nil || len(r)+len(f) != 0 {
			t.Errorf("a second RecoverSubmissions = %q, %q, %v; want none", submissionIDs(r), submissionIDs(f), err)
		}
		// The dead runner's writes are refused; the queue starts over at s1.
		err = s.ApplySubmission(t.Context(), chatA, "s1", "ghost", at(2*time.Minute))
		wantErrNaming(t, "ApplySubmission by the dead runner", err, store.ErrLeaseLost, "s1")
		checkConversation(t, "after recovery", s, chatA)
		runSubmission(t, s, chatA, "s1", "node-2", at(3*time.Minute))
		checkConversation(t, "after running s1 again", s, chatA, convRow{1, "s1", msg("a"), at(3 * time.Minute)})
	}},
	{"RecoverFailsApplied", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a")))
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("b")))
		wantStarted(t, s, chatA, "ghost", at(time.Second), "s1")
		applySubmission(t, s, chatA, "s1", "ghost", at(2*time.Second))

		requeued, failed, err := s.RecoverSubmissions(t.Context(), chatA, "node-2", "interrupted by a crash", at(time.Minute))
		if err != nil {
			t.Fatalf("RecoverSubmissions: %v", err)
		}
		if len(requeued) != 0 || len(failed) != 1 {
			t.Fatalf("RecoverSubmissions = requeued %q, failed %q; want [], [s1]", submissionIDs(requeued), submissionIDs(failed))
		}
		want := storedSubmission(newSubmission("s1", chatA, t0, msg("a")), 1)
		want.Status, want.Error, want.Applied = store.SubmissionError, "interrupted by a crash", true
		want.StartedAt, want.FinishedAt = at(time.Second), at(time.Minute)
		checkSubmission(t, "the failed submission", &failed[0], want)
		checkSubmission(t, "GetSubmission of the failed submission", getSubmission(t, s, chatA, "s1"), want)
		// Its messages stay in the conversation; the next one runs.
		checkConversation(t, "after recovery", s, chatA, convRow{1, "s1", msg("a"), at(2 * time.Second)})
		err = s.FinishSubmission(t.Context(), chatA, "s1", "ghost", store.SubmissionCompleted, "", nil, store.Usage{}, at(2*time.Minute))
		wantErrNaming(t, "FinishSubmission by the dead runner", err, store.ErrLeaseLost, "s1")
		wantStarted(t, s, chatA, "node-2", at(2*time.Minute), "s2")
		if r, f, err := s.RecoverSubmissions(t.Context(), chatA, "node-2", "x", at(3*time.Minute)); err != nil || len(r)+len(f) != 0 {
			t.Errorf("RecoverSubmissions with the caller running s2 = %q, %q, %v; want none", submissionIDs(r), submissionIDs(f), err)
		}
	}},
	{"RecoverFailedPromptTellsItsWorkflow", func(t *testing.T, s store.Store) {
		sub := newSubmission("s1", chatA, t0, msg("a"))
		sub.NotifyInstance, sub.NotifyEvent = "wf-1", "agentflow:prompt:x"
		createSubmission(t, s, sub)
		wantStarted(t, s, chatA, "ghost", at(time.Second), "s1")
		applySubmission(t, s, chatA, "s1", "ghost", at(2*time.Second))
		if _, failed, err := s.RecoverSubmissions(t.Context(), chatA, "node-2", "cut off", at(time.Minute)); err != nil || len(failed) != 1 {
			t.Fatalf("RecoverSubmissions = %v, %v; want s1 failed", failed, err)
		}
		msgs, err := s.GetOutbox(t.Context(), chatA, "s1")
		if err != nil || len(msgs) != 1 {
			t.Fatalf("outbox of the failed prompt submission = %+v, %v; want one message", msgs, err)
		}
		m := msgs[0]
		if m.InstanceID != "wf-1" || m.EventType != "agentflow:prompt:x" || !m.NextAttemptAt.Equal(at(time.Minute)) ||
			!strings.Contains(string(m.Payload), `"status":"error"`) || !strings.Contains(string(m.Payload), `"error":"cut off"`) {
			t.Errorf("outbox message = %+v (payload %s)", m, m.Payload)
		}
	}},
	{"PendingSubmissionAgents", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		key := func(class, name string) store.AgentKey { return store.AgentKey{Class: class, Name: name} }
		submit := func(k store.AgentKey, id string) {
			t.Helper()
			createSubmission(t, s, newSubmission(id, k, t0, msg(id)))
		}
		// Need a runner: pending ones and the agent live nowhere, or on a
		// node without a row; running ones whose runner has no row.
		submit(key("Counter", "a"), "s1")
		submit(key("Chat", "a"), "s1")
		wantStarted(t, s, key("Chat", "a"), "ghost", t0, "s1")
		submit(key("Counter", "c"), "s1")
		activate(t, s, key("Counter", "c"), "ghost-2", t0)
		// Looked after: the runner has a row, or the agent is live on a
		// node with a row.
		submit(key("Counter", "b"), "s1")
		wantStarted(t, s, key("Counter", "b"), "node-1", t0, "s1")
		submit(key("Chat", "b"), "s1")
		activate(t, s, key("Chat", "b"), "node-1", t0)
		submit(key("Chat", "c"), "s1")
		wantStarted(t, s, key("Chat", "c"), "ghost", t0, "s1")
		activate(t, s, key("Chat", "c"), "node-1", t0)
		// Nothing to run: finished, or another runtime's class.
		submit(key("Counter", "d"), "s1")
		runSubmission(t, s, key("Counter", "d"), "s1", "ghost", t0)
		submit(key("Counter", "e"), "s1")
		if _, err := s.CancelSubmission(t.Context(), key("Counter", "e"), "s1", t0); err != nil {
			t.Fatal(err)
		}
		submit(key("Other", "a"), "s1")

		pending := func(limit int) []store.AgentKey {
			t.Helper()
			keys, err := s.PendingSubmissionAgents(t.Context(), testClasses, limit)
			if err != nil {
				t.Fatalf("PendingSubmissionAgents(%d): %v", limit, err)
			}
			if len(keys) > limit {
				t.Fatalf("PendingSubmissionAgents(%d) returned %d agents", limit, len(keys))
			}
			slices.SortFunc(keys, func(a, b store.AgentKey) int { return strings.Compare(a.String(), b.String()) })
			return keys
		}
		want := []store.AgentKey{key("Chat", "a"), key("Counter", "a"), key("Counter", "c")}
		if got := pending(10); !slices.Equal(got, want) {
			t.Fatalf("PendingSubmissionAgents = %v, want %v", got, want)
		}
		if got := pending(2); len(got) != 2 {
			t.Errorf("PendingSubmissionAgents(2) = %v, want 2 of %v", got, want)
		}
		if keys, err := s.PendingSubmissionAgents(t.Context(), nil, 10); err != nil || len(keys) != 0 {
			t.Errorf("PendingSubmissionAgents of no classes = %v, %v; want none", keys, err)
		}
		// Activating an agent on a node with a row makes it that node's.
		activate(t, s, key("Counter", "a"), "node-1", at(time.Minute))
		if got := pending(10); !slices.Equal(got, []store.AgentKey{want[0], want[2]}) {
			t.Errorf("after activating Counter/a: PendingSubmissionAgents = %v, want [Chat/a Counter/c]", got)
		}
		// A runner that loses its row leaves its agent needing one.
		removeNode(t, s, "node-1", at(2*time.Minute))
		want = []store.AgentKey{key("Chat", "a"), key("Chat", "b"), key("Chat", "c"), key("Counter", "a"), key("Counter", "b"), key("Counter", "c")}
		if got := pending(10); !slices.Equal(got, want) {
			t.Errorf("after removing node-1: PendingSubmissionAgents = %v, want %v", got, want)
		}
	}},
}

var conversationCases = []testCase{
	{"ClearConversation", func(t *testing.T, s store.Store) {
		for _, k := range []store.AgentKey{chatA, counterA} {
			createSubmission(t, s, newSubmission("s1", k, t0, msg("a"), msg("b")))
			runSubmission(t, s, k, "s1", "node-1", at(time.Second))
		}
		if err := s.ClearConversation(t.Context(), chatA); err != nil {
			t.Fatalf("ClearConversation: %v", err)
		}
		checkConversation(t, "after ClearConversation", s, chatA)
		checkConversation(t, "another agent's after ClearConversation", s, counterA,
			convRow{1, "s1", msg("a"), at(time.Second)}, convRow{2, "s1", msg("b"), at(time.Second)})
		if sub := getSubmission(t, s, chatA, "s1"); sub.Status != store.SubmissionCompleted || !sub.Applied {
			t.Errorf("ClearConversation changed the ledger: s1 is %q, applied %v", sub.Status, sub.Applied)
		}
		if err := s.ClearConversation(t.Context(), chatA); err != nil {
			t.Fatalf("ClearConversation of an empty conversation: %v", err)
		}
		// The conversation goes on after a clear, in order.
		createSubmission(t, s, newSubmission("s2", chatA, t0, msg("c"), msg("d")))
		runSubmission(t, s, chatA, "s2", "node-1", at(time.Minute))
		got := conversation(t, s, chatA)
		if len(got) != 2 || string(got[0].Message) != msg("c") || string(got[1].Message) != msg("d") || got[0].Seq >= got[1].Seq {
			t.Errorf("after a clear and s2: %+v, want c then d in increasing seq", got)
		}
	}},
	{"ListConversationFrom", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("a"), msg("b"), msg("c")))
		runSubmission(t, s, chatA, "s1", "node-1", at(time.Second))
		createSubmission(t, s, newSubmission("s1", counterA, t0, msg("x")))
		runSubmission(t, s, counterA, "s1", "node-1", at(time.Second))
		from := func(seq int64) []string {
			t.Helper()
			ms, err := s.ListConversationFrom(t.Context(), chatA, seq)
			if err != nil {
				t.Fatalf("ListConversationFrom(%d): %v", seq, err)
			}
			out := []string{}
			for _, m := range ms {
				if m.AgentKey != chatA || m.SubmissionID != "s1" || !m.CreatedAt.Equal(at(time.Second)) {
					t.Errorf("ListConversationFrom(%d): message %d is %+v, want agent %s's from s1 at %v", seq, m.Seq, m, chatA, at(time.Second))
				}
				out = append(out, fmt.Sprintf("%d:%s", m.Seq, m.Message))
			}
			return out
		}
		all := conversation(t, s, chatA)
		if len(all) != 3 {
			t.Fatalf("conversation: %d messages, want 3", len(all))
		}
		whole := []string{fmt.Sprintf("%d:%s", all[0].Seq, msg("a")), fmt.Sprintf("%d:%s", all[1].Seq, msg("b")), fmt.Sprintf("%d:%s", all[2].Seq, msg("c"))}
		for _, c := range []struct {
			seq  int64
			want []string
		}{
			{0, whole},
			{all[0].Seq, whole},
			{all[1].Seq, whole[1:]},
			{all[2].Seq, whole[2:]},
			{all[2].Seq + 1, []string{}},
		} {
			if got := from(c.seq); !slices.Equal(got, c.want) {
				t.Errorf("ListConversationFrom(%d) = %v, want %v", c.seq, got, c.want)
			}
		}
		if _, err := s.ListConversationFrom(t.Context(), chatA, -1); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("ListConversationFrom(-1) = %v, want an error saying seq is negative", err)
		}
	}},
	{"MessagesKeepTheirJSON", func(t *testing.T, s store.Store) {
		// Elements of every JSON kind, nested arrays included, one row each.
		elems := []string{`{"role":"user","content":[{"type":"text","text":"a,b]"}]}`, `"plain"`, `[1,[2,3]]`, `null`, `{"k":"\u00e9\"x"}`}
		createSubmission(t, s, &store.Submission{ID: "s1", AgentKey: chatA, Messages: msgArray(elems...), CreatedAt: t0})
		runSubmission(t, s, chatA, "s1", "node-1", at(time.Second))
		var want []convRow
		for i, e := range elems {
			want = append(want, convRow{int64(i + 1), "s1", e, at(time.Second)})
		}
		checkConversation(t, "the conversation", s, chatA, want...)
	}},
}

var thinkConcurrencyCases = []testCase{
	{"CreateAssignsDistinctIncreasingSeqs", func(t *testing.T, s store.Store) {
		const per = 8
		type result struct {
			worker int
			seqs   []int64
			err    error
		}
		results := make(chan result, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				r := result{worker: w}
				for i := range per {
					sub := newSubmission(fmt.Sprintf("w%d-%d", w, i), chatA, t0, msg("x"))
					got, created, err := s.CreateSubmission(t.Context(), sub)
					if err == nil && !created {
						err = fmt.Errorf("CreateSubmission(%s) created nothing", sub.ID)
					}
					if err != nil {
						r.err = err
						break
					}
					r.seqs = append(r.seqs, got.Seq)
				}
				results <- r
			})
		}
		wg.Wait()
		close(results)
		var all []int64
		for r := range results {
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !slices.IsSorted(r.seqs) || len(slices.Compact(slices.Clone(r.seqs))) != len(r.seqs) {
				t.Errorf("worker %d got seqs %v, want them increasing", r.worker, r.seqs)
			}
			all = append(all, r.seqs...)
		}
		slices.Sort(all)
		for i, seq := range all {
			if seq != int64(i+1) {
				t.Fatalf("seqs %v, want 1 to %d once each", all, workers*per)
			}
		}
		subs := listSubmissions(t, s, chatA, store.SubmissionFilter{})
		if len(subs) != workers*per {
			t.Errorf("%d submissions stored, want %d", len(subs), workers*per)
		}
	}},
	{"CreateSameKeyOnce", func(t *testing.T, s store.Store) {
		ids := make(chan string, workers)
		created := atomic.Int32{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				sub := newSubmission(fmt.Sprintf("s%d", w), chatA, t0, msg("x"))
				sub.IdempotencyKey = "k"
				got, c, err := s.CreateSubmission(t.Context(), sub)
				if err != nil {
					t.Error(err)
					ids <- ""
					return
				}
				if c {
					created.Add(1)
				}
				ids <- got.ID
			})
		}
		wg.Wait()
		close(ids)
		if n := created.Load(); n != 1 {
			t.Errorf("%d submissions created with one key, want 1", n)
		}
		var got []string
		for id := range ids {
			got = append(got, id)
		}
		if got = slices.Compact(slices.Sorted(slices.Values(got))); len(got) != 1 {
			t.Errorf("CreateSubmission returned different submissions for one key: %q", got)
		}
	}},
	{"StartRunsOneAtATimeInOrder", func(t *testing.T, s store.Store) {
		const n = 24
		for i := range n {
			createSubmission(t, s, newSubmission(fmt.Sprintf("s%02d", i), chatA, t0, msg(fmt.Sprintf("m%d", i))))
		}
		var (
			mu      sync.Mutex
			order   []int64
			running atomic.Int32
			done    atomic.Int32
			wg      sync.WaitGroup
		)
		for w := range workers {
			owner := fmt.Sprintf("node-%d", w)
			wg.Go(func() {
				for done.Load() < n && !t.Failed() {
					sub, err := s.StartSubmission(t.Context(), chatA, owner, t0)
					if err != nil {
						t.Errorf("StartSubmission(%s): %v", owner, err)
						return
					}
					if sub == nil {
						continue
					}
					if r := running.Add(1); r != 1 {
						t.Errorf("%s started %s while %d others ran", owner, sub.ID, r-1)
					}
					mu.Lock()
					order = append(order, sub.Seq)
					mu.Unlock()
					if err := s.ApplySubmission(t.Context(), chatA, sub.ID, owner, t0); err != nil {
						t.Errorf("ApplySubmission(%s, %s): %v", sub.ID, owner, err)
					}
					running.Add(-1)
					if err := s.FinishSubmission(t.Context(), chatA, sub.ID, owner, store.SubmissionCompleted, "", nil, store.Usage{}, t0); err != nil {
						t.Errorf("FinishSubmission(%s, %s): %v", sub.ID, owner, err)
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if len(order) != n || !slices.IsSorted(order) || order[0] != 1 || order[n-1] != n {
			t.Errorf("submissions started in seq order %v, want 1 to %d", order, n)
		}
		convo := conversation(t, s, chatA)
		if len(convo) != n {
			t.Fatalf("%d messages in the conversation, want %d", len(convo), n)
		}
		for i, m := range convo {
			if want := fmt.Sprintf("s%02d", i); m.SubmissionID != want || m.Seq != int64(i+1) {
				t.Errorf("message %d: seq %d of %s, want seq %d of %s", i, m.Seq, m.SubmissionID, i+1, want)
			}
		}
	}},
}
