package think

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"agentflow/model"
	"agentflow/store"
)

// history is a live agent's copy of its conversation, so that a turn reads
// the messages added since the last turn rather than the whole
// conversation, which grows with every turn the agent ever took (before
// it, each turn's read and decoding of the conversation was a sixth of a
// prompt step's CPU after 100 turns). The copy relies on nothing but the
// store: each read starts at the last message it holds and checks that
// this message is still there, and reads the conversation whole when it is
// not (the conversation was cleared, here or by another process). It lives
// as long as the agent's activation, so its memory is the conversation's
// while the agent is live.
type history struct {
	mu   sync.Mutex
	msgs []model.Message
	last store.ConversationMessage // the last message held; Seq 0 when none
}

// read brings the copy up to date from st and returns it. The slice is
// clipped, so appending to it copies it, and its messages must not be
// changed: they are the copy's.
func (h *history) read(ctx context.Context, st store.ThinkStore, key store.AgentKey) ([]model.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rows, err := st.ListConversationFrom(ctx, key, h.last.Seq)
	if err != nil {
		return nil, err
	}
	if h.last.Seq > 0 {
		if len(rows) > 0 && sameMessage(rows[0], h.last) {
			rows = rows[1:]
		} else {
			h.reset()
			if rows, err = st.ListConversationFrom(ctx, key, 0); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range rows {
		var m model.Message
		if err := json.Unmarshal(r.Message, &m); err != nil {
			return nil, fmt.Errorf("think: conversation of %s: message %d: %w", key, r.Seq, err)
		}
		h.msgs, h.last = append(h.msgs, m), r
	}
	return slices.Clip(h.msgs), nil
}

// forget empties the copy, after the agent cleared its conversation; the
// next read reads it whole.
func (h *history) forget() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reset()
}

// reset empties the copy; h.mu must be held.
func (h *history) reset() {
	h.msgs, h.last = nil, store.ConversationMessage{}
}

// sameMessage reports whether a and b are the same stored message.
func sameMessage(a, b store.ConversationMessage) bool {
	return a.Seq == b.Seq && a.SubmissionID == b.SubmissionID && a.CreatedAt.Equal(b.CreatedAt) &&
		bytes.Equal(a.Message, b.Message)
}

// cloneMessages returns a copy of msgs that shares nothing a caller could
// change with them.
func cloneMessages(msgs []model.Message) []model.Message {
	out := slices.Clone(msgs)
	for i := range out {
		if out[i].ToolCalls == nil {
			continue
		}
		out[i].ToolCalls = slices.Clone(out[i].ToolCalls)
		for j := range out[i].ToolCalls {
			out[i].ToolCalls[j].Arguments = bytes.Clone(out[i].ToolCalls[j].Arguments)
		}
	}
	return out
}
