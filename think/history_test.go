package think

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"agentflow/model"
	"agentflow/store"
	"agentflow/store/sqlite"
)

// TestHistoryFollowsTheStore checks that the live agent's copy of its
// conversation reads what was added since the last read and nothing twice,
// and that it reads the conversation whole when it was cleared behind its
// back, whether it grew again past the copy's last message or not.
func TestHistoryFollowsTheStore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "history.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key := store.AgentKey{Class: "Helper", Name: "h"}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	turns := 0
	// apply runs a submission of one user message per text through the
	// store, as a runner would, adding them to the conversation.
	apply := func(texts ...string) {
		t.Helper()
		turns++
		id := fmt.Sprintf("s%d", turns)
		msgs := make([]model.Message, len(texts))
		for i, s := range texts {
			msgs[i] = model.Message{Role: model.RoleUser, Content: s}
		}
		raw, err := json.Marshal(msgs)
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		if _, _, err := st.CreateSubmission(ctx, &store.Submission{ID: id, AgentKey: key, Messages: raw, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if s, err := st.StartSubmission(ctx, key, "node-1", now); err != nil || s == nil || s.ID != id {
			t.Fatalf("StartSubmission = %+v, %v; want %s", s, err, id)
		}
		if err := st.ApplySubmission(ctx, key, id, "node-1", now); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishSubmission(ctx, key, id, "node-1", store.SubmissionCompleted, "", nil, store.Usage{}, now); err != nil {
			t.Fatal(err)
		}
	}
	clear := func() {
		t.Helper()
		if err := st.ClearConversation(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	var h history
	read := func() []string {
		t.Helper()
		msgs, err := h.read(ctx, st, key)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, m := range msgs {
			out = append(out, m.Content)
		}
		return out
	}

	for _, step := range []struct {
		what string
		do   func()
		want []string
	}{
		{"an empty conversation", func() {}, []string{}},
		{"the first turn", func() { apply("a", "b") }, []string{"a", "b"}},
		{"nothing new", func() {}, []string{"a", "b"}},
		{"a second turn", func() { apply("c") }, []string{"a", "b", "c"}},
		{"a caller appending to what it read", func() {
			msgs, _ := h.read(ctx, st, key)
			_ = append(msgs, model.Message{Content: "x"})
		}, []string{"a", "b", "c"}},
		{"cleared elsewhere and grown past the copy's last message", func() { clear(); apply("d", "e"); apply("f", "g") },
			[]string{"d", "e", "f", "g"}},
		{"cleared elsewhere and grown less far", func() { clear(); apply("h") }, []string{"h"}},
		{"cleared elsewhere", clear, []string{}},
		{"a turn after the clear", func() { apply("i") }, []string{"i"}},
		{"forgotten", h.forget, []string{"i"}},
	} {
		step.do()
		if got := read(); !slices.Equal(got, step.want) {
			t.Errorf("after %s: read %q, want %q", step.what, got, step.want)
		}
	}
}

// TestCloneMessagesSharesNothing checks that what Conversation hands out
// cannot change the live agent's copy.
func TestCloneMessagesSharesNothing(t *testing.T) {
	t.Parallel()
	orig := []model.Message{
		{Role: model.RoleUser, Content: "hi"},
		{Role: model.RoleAssistant, ToolCalls: []model.ToolCall{{ID: "c1", Name: "f", Arguments: json.RawMessage(`{"a":1}`)}}},
	}
	c := cloneMessages(orig)
	c[0].Content = "changed"
	c[1].ToolCalls[0].Name = "g"
	c[1].ToolCalls[0].Arguments[2] = 'b'
	if orig[0].Content != "hi" || orig[1].ToolCalls[0].Name != "f" || string(orig[1].ToolCalls[0].Arguments) != `{"a":1}` {
		t.Errorf("changing the clone changed the original: %+v", orig)
	}
}
