package think

import (
	"encoding/json"
	"fmt"

	"agentflow/model"
	"agentflow/store"
)

// chunk is a UI message stream chunk (ai 6 UIMessageChunk) as think sends
// one: only the fields its type has are set.
type chunk struct {
	Type           string          `json:"type"`
	MessageID      string          `json:"messageId,omitempty"`
	ID             string          `json:"id,omitempty"`
	Delta          *string         `json:"delta,omitempty"`
	ToolCallID     string          `json:"toolCallId,omitempty"`
	ToolName       string          `json:"toolName,omitempty"`
	InputTextDelta *string         `json:"inputTextDelta,omitempty"`
	Input          json.RawMessage `json:"input,omitempty"`
	Output         json.RawMessage `json:"output,omitempty"`
	ErrorText      string          `json:"errorText,omitempty"`
	ApprovalID     string          `json:"approvalId,omitempty"`
	FinishReason   string          `json:"finishReason,omitempty"`
}

// chatStream turns one turn's model events and tool results into UI
// message stream chunks, in the order and with the ids the UI message of
// the stored turn has (see toUI): the assistant message "a_<submission>",
// step n's text "t<n>". It keeps every chunk it made, as JSON, so that a
// client that reconnects mid-turn is sent the same chunks again.
type chatStream struct {
	requestID  string   // the chat request's id, or the submission's
	messageIDs []string // the ids of the user messages the request sent
	isFinal    func(name string) bool
	// continuation: the turn continues after a client tool's result or an
	// approval; its frames say so, as the pinned server's do, which lets a
	// client skip the chunks it got live when they are replayed to it.
	// Unlike the pinned server's, its answer is an assistant message of
	// its own (start names it): the pinned client applies a continuation's
	// resumed stream to a new message, whose id must be the one the
	// conversation then has, or a late write of the stream would leave a
	// second copy beside the server's snapshot.
	continuation bool
	// silent: the submission only stores a tool result or an approval
	// (no autoContinue); nothing is streamed, the snapshot says it all.
	silent bool

	bodies   [][]byte           // every chunk so far, in order: chunk i has seq i
	reason   model.FinishReason // the last model call's
	step     int
	stepOpen bool // start-step was sent: the step showed something
	textOpen bool
	calls    map[int]model.ToolCall // this step's tool calls by index
	hidden   map[int]bool           // this step's final-answer calls, never shown
}

func newChatStream(s *store.Submission) *chatStream {
	cs := &chatStream{requestID: s.ID, isFinal: func(string) bool { return false }}
	if meta := chatMetaOf(s); meta != nil {
		cs.requestID, cs.messageIDs = meta.RequestID, meta.MessageIDs
		cs.continuation, cs.silent = meta.Continuation, meta.StoreOnly
	}
	return cs
}

// add appends a chunk and returns its seq and JSON.
func (cs *chatStream) add(c chunk) (int, []byte) {
	b, _ := json.Marshal(c) // no field of chunk fails to encode
	cs.bodies = append(cs.bodies, b)
	return len(cs.bodies) - 1, b
}

// start is the turn's first chunk.
func (cs *chatStream) start(submissionID string) []chunk {
	return []chunk{{Type: "start", MessageID: assistantUIID(submissionID)}}
}

// startStep begins model call step. Its start-step chunk waits for the
// step's first text or tool call: a step that shows nothing (only a
// prompt's final answer, or nothing at all) is not stored either.
func (cs *chatStream) startStep(step int) []chunk {
	cs.step, cs.stepOpen, cs.textOpen = step, false, false
	cs.calls, cs.hidden = map[int]model.ToolCall{}, map[int]bool{}
	return nil
}

// open returns the step's start-step chunk if it was not sent yet.
func (cs *chatStream) open() []chunk {
	if cs.stepOpen {
		return nil
	}
	cs.stepOpen = true
	return []chunk{{Type: "start-step"}}
}

func (cs *chatStream) textID() string { return fmt.Sprintf("t%d", cs.step) }

// closeText ends the step's text part if it is open.
func (cs *chatStream) closeText() []chunk {
	if !cs.textOpen {
		return nil
	}
	cs.textOpen = false
	return []chunk{{Type: "text-end", ID: cs.textID()}}
}

// event is what one model event adds to the stream.
func (cs *chatStream) event(ev model.Event) []chunk {
	switch ev.Kind {
	case model.EventText:
		if ev.Text == "" {
			return nil
		}
		out := cs.open()
		if !cs.textOpen {
			cs.textOpen = true
			out = append(out, chunk{Type: "text-start", ID: cs.textID()})
		}
		d := ev.Text
		return append(out, chunk{Type: "text-delta", ID: cs.textID(), Delta: &d})
	case model.EventToolCallStart:
		if cs.isFinal(ev.ToolCall.Name) {
			cs.hidden[ev.Index] = true
			return nil
		}
		out := append(cs.open(), cs.closeText()...)
		cs.calls[ev.Index] = ev.ToolCall
		return append(out, chunk{Type: "tool-input-start", ToolCallID: ev.ToolCall.ID, ToolName: ev.ToolCall.Name})
	case model.EventToolCallDelta:
		c, ok := cs.calls[ev.Index]
		if !ok || ev.ArgumentsDelta == "" {
			return nil
		}
		d := ev.ArgumentsDelta
		return []chunk{{Type: "tool-input-delta", ToolCallID: c.ID, InputTextDelta: &d}}
	case model.EventToolCallEnd:
		if cs.hidden[ev.Index] || cs.isFinal(ev.ToolCall.Name) {
			return nil
		}
		var out []chunk
		c, ok := cs.calls[ev.Index]
		if !ok { // a provider that sent no start
			out = append(append(cs.open(), cs.closeText()...), chunk{Type: "tool-input-start", ToolCallID: ev.ToolCall.ID, ToolName: ev.ToolCall.Name})
			c = ev.ToolCall
		}
		if ev.ToolCall.ID != "" {
			c.ID = ev.ToolCall.ID
		}
		// A call whose arguments are not a JSON object is stored with
		// empty arguments and answered with an error (turn.go); the stream
		// says the same.
		input := json.RawMessage("{}")
		if ev.Invalid == "" {
			input = jsonOr(ev.ToolCall.Arguments, "{}")
		}
		cs.calls[ev.Index] = c
		return append(out, chunk{Type: "tool-input-available", ToolCallID: c.ID, ToolName: c.Name, Input: input})
	case model.EventFinish:
		return cs.closeText()
	}
	return nil
}

// result is the chunk of a tool result message.
func (cs *chatStream) result(m model.Message) []chunk {
	if cs.isFinal(m.ToolName) {
		return nil
	}
	if m.IsError {
		return []chunk{{Type: "tool-output-error", ToolCallID: m.ToolCallID, ErrorText: m.Content}}
	}
	return []chunk{{Type: "tool-output-available", ToolCallID: m.ToolCallID, Output: toolOutput(m.Content)}}
}

// approvalRequest is the chunk of a call that waits for approval.
func (cs *chatStream) approvalRequest(callID string) []chunk {
	return []chunk{{Type: "tool-approval-request", ApprovalID: approvalID(callID), ToolCallID: callID}}
}

// endStep ends the model call step.
func (cs *chatStream) endStep() []chunk {
	if !cs.stepOpen {
		return nil
	}
	cs.stepOpen = false
	return append(cs.closeText(), chunk{Type: "finish-step"})
}

// finish is the last chunk of a turn that ended with status.
func (cs *chatStream) finish(status store.SubmissionStatus, reason model.FinishReason) []chunk {
	switch status {
	case store.SubmissionAborted:
		return []chunk{{Type: "abort"}}
	case store.SubmissionError:
		return nil // the terminal frame carries the error
	}
	return []chunk{{Type: "finish", FinishReason: uiFinishReason(reason)}}
}

// uiFinishReason maps a model finish reason onto the AI SDK's.
func uiFinishReason(r model.FinishReason) string {
	switch r {
	case model.FinishStop:
		return "stop"
	case model.FinishToolCalls:
		return "tool-calls"
	case model.FinishLength:
		return "length"
	case model.FinishFilter:
		return "content-filter"
	case "":
		return ""
	}
	return "other"
}

// outcome is the chat protocol's name of how a submission ended.
func outcome(status store.SubmissionStatus) string {
	switch status {
	case store.SubmissionCompleted:
		return "completed"
	case store.SubmissionAborted:
		return "aborted"
	case store.SubmissionSkipped:
		return "skipped"
	}
	return "error"
}
