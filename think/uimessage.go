package think

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"agentflow/model"
	"agentflow/store"
)

// This file is the one place where think's stored messages and the AI
// SDK's UI messages (ai 6 UIMessage, what useChat renders and the chat
// protocol carries; see chat.go for the pinned versions) are converted.
//
// A conversation row is a model.Message as JSON, plus, for a message a
// chat client sent, its UI id and its parts as the client sent them
// (storedMessage). In UI form:
//
//   - a user message is the client's message as it was sent (id and parts
//     kept verbatim), or, for one submitted from Go, a text part with the
//     id "<submission>-<n>", n its place among the submission's messages
//     (so it is the same before and after the submission is applied);
//   - the assistant and tool messages one turn added are one assistant
//     message with the id "a_<submission>" (the id its stream's start
//     chunk carries, so the stream and the snapshot name one message):
//     each model call is a step-start part, then the call's reasoning, its
//     text (state "done") and a "tool-<name>" part per tool call, whose
//     state becomes "output-available" (with the result as JSON) or
//     "output-error" (with the error text) when its result row follows;
//   - system messages are not shown.
//
// This is what the pinned client itself assembles from the stream think
// sends for the turn (testdata/chat/client.json, captured by
// chatclient/capture.mjs, is the proof).

// UIMessage is an AI SDK UI message.
type UIMessage struct {
	ID       string            `json:"id"`
	Role     string            `json:"role"`
	Metadata json.RawMessage   `json:"metadata,omitempty"`
	Parts    []json.RawMessage `json:"parts"`
}

// uiPart is a part of a UI message as think writes one, its fields in the
// order the AI SDK client writes them. Parts a client sent are kept as it
// sent them.
type uiPart struct {
	Type       string          `json:"type"`
	ID         string          `json:"id,omitempty"`
	ToolCallID string          `json:"toolCallId,omitempty"`
	Text       *string         `json:"text,omitempty"`
	State      string          `json:"state,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
	ErrorText  string          `json:"errorText,omitempty"`
	Approval   *uiApproval     `json:"approval,omitempty"`
}

// uiApproval is a tool part's approval (a tool that needs one).
type uiApproval struct {
	ID       string `json:"id"`
	Approved *bool  `json:"approved,omitempty"`
}

// clientPart is what think reads of a part a client sent.
type clientPart struct {
	Type      string  `json:"type"`
	Text      *string `json:"text"`
	URL       string  `json:"url"`
	MediaType string  `json:"mediaType"`
}

// storedMessage is a conversation row: a model.Message, which is what the
// model sees, and what only the UI needs.
type storedMessage struct {
	model.Message
	// UIID is the id of the UI message a chat client sent.
	UIID string `json:"uiId,omitempty"`
	// UIParts are that message's parts as the client sent them.
	UIParts []json.RawMessage `json:"uiParts,omitempty"`
	// Reasoning is an assistant message's reasoning text.
	Reasoning string `json:"reasoning,omitempty"`
	// Await names an assistant message's tool calls that the turn left
	// waiting, by call id: awaitClient for a client tool's (the client
	// runs it and sends the result), awaitApproval for a tool that needs
	// approval.
	Await map[string]string `json:"await,omitempty"`
	// Denied marks a tool result that records a denied approval.
	Denied bool `json:"denied,omitempty"`
}

// What a waiting tool call waits for (storedMessage.Await).
const (
	awaitClient   = "client"
	awaitApproval = "approval"
)

// approvalID is the approval id of a call that needs approval.
func approvalID(callID string) string { return "ap_" + callID }

// assistantUIID is the UI id of the assistant message of a submission's
// turn.
func assistantUIID(submissionID string) string { return "a_" + submissionID }

// fromUI converts a user message a chat client sent into its stored form:
// the model sees its text parts, joined by blank lines; its parts are kept
// as sent. Files are kept and shown, not sent to the model (model.Message
// carries text only).
func fromUI(m UIMessage) (storedMessage, error) {
	var sm storedMessage
	if m.ID == "" {
		return sm, errors.New(`message without an "id"`)
	}
	if m.Role != "user" {
		return sm, fmt.Errorf("message %s: role %q: a chat request adds user messages only", m.ID, m.Role)
	}
	if len(m.Parts) == 0 {
		return sm, fmt.Errorf("message %s has no parts", m.ID)
	}
	var texts []string
	for i, raw := range m.Parts {
		var p clientPart
		if err := json.Unmarshal(raw, &p); err != nil || p.Type == "" {
			return sm, fmt.Errorf(`message %s: part %d is not an object with a string "type"`, m.ID, i)
		}
		switch p.Type {
		case "text":
			if p.Text == nil {
				return sm, fmt.Errorf(`message %s: text part %d has no "text"`, m.ID, i)
			}
			texts = append(texts, *p.Text)
		case "file":
			if p.URL == "" || p.MediaType == "" {
				return sm, fmt.Errorf(`message %s: file part %d needs "url" and "mediaType"`, m.ID, i)
			}
		}
	}
	sm.Role, sm.Content = model.RoleUser, strings.Join(texts, "\n\n")
	sm.UIID, sm.UIParts = m.ID, m.Parts
	return sm, nil
}

// toUI converts conversation rows, in order, into UI messages.
func toUI(rows []store.ConversationMessage) ([]UIMessage, error) {
	out := []UIMessage{} // JSON [], never null: clients take the list as it is
	var (
		turn  *UIMessage // the assistant message rows are being added to
		steps int        // its step-start parts
		sub   string     // the submission whose turn it is
		tools map[string]int
		nth   = map[string]int{} // rows seen per submission
	)
	add := func(m *UIMessage, p uiPart) {
		b, _ := json.Marshal(p) // no field of uiPart fails to encode
		m.Parts = append(m.Parts, b)
	}
	for _, r := range rows {
		var sm storedMessage
		if err := json.Unmarshal(r.Message, &sm); err != nil {
			return nil, fmt.Errorf("conversation message %d: %w", r.Seq, err)
		}
		n := nth[r.SubmissionID]
		nth[r.SubmissionID]++
		switch sm.Role {
		case model.RoleUser:
			turn = nil
			m := UIMessage{ID: sm.UIID, Role: "user", Parts: sm.UIParts}
			if m.ID == "" {
				m.ID = fmt.Sprintf("%s-%d", r.SubmissionID, n)
			}
			if len(m.Parts) == 0 {
				m.Parts = []json.RawMessage{}
				add(&m, uiPart{Type: "text", Text: &sm.Content})
			}
			out = append(out, m)
		case model.RoleAssistant:
			if turn == nil || sm.UIID != "" || sub != r.SubmissionID {
				id := sm.UIID
				if id == "" {
					id = assistantUIID(r.SubmissionID)
				}
				out = append(out, UIMessage{ID: id, Role: "assistant", Parts: []json.RawMessage{}})
				turn, steps, sub, tools = &out[len(out)-1], 0, r.SubmissionID, map[string]int{}
			}
			add(turn, uiPart{Type: "step-start"})
			if sm.Reasoning != "" {
				add(turn, uiPart{Type: "reasoning", ID: fmt.Sprintf("r%d", steps), Text: &sm.Reasoning, State: "done"})
			}
			steps++
			if sm.Content != "" {
				add(turn, uiPart{Type: "text", Text: &sm.Content, State: "done"})
			}
			for _, c := range sm.ToolCalls {
				tools[c.ID] = len(turn.Parts)
				p := uiPart{Type: "tool-" + c.Name, ToolCallID: c.ID, State: "input-available", Input: jsonOr(c.Arguments, "{}")}
				if sm.Await[c.ID] == awaitApproval {
					p.State, p.Approval = "approval-requested", &uiApproval{ID: approvalID(c.ID)}
				}
				add(turn, p)
			}
		case model.RoleTool:
			if turn == nil {
				continue // a result without its call is not shown
			}
			i, ok := tools[sm.ToolCallID]
			if !ok {
				continue
			}
			var p uiPart
			_ = json.Unmarshal(turn.Parts[i], &p) // think wrote it
			approved := !sm.Denied
			if p.Approval != nil {
				p.Approval.Approved = &approved
			}
			switch {
			case sm.Denied:
				p.State = "output-denied"
			case sm.IsError:
				p.State, p.ErrorText = "output-error", sm.Content
			default:
				p.State, p.Output = "output-available", toolOutput(sm.Content)
			}
			turn.Parts[i], _ = json.Marshal(p)
		}
	}
	return out, nil
}

// jsonOr returns raw, or def when raw is empty.
func jsonOr(raw json.RawMessage, def string) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(def)
	}
	return raw
}

// toolOutput is a tool result's content as a UI output: the JSON it is,
// or a JSON string of it when it is not JSON.
func toolOutput(content string) json.RawMessage {
	if json.Valid([]byte(content)) && strings.TrimSpace(content) != "" {
		return json.RawMessage(content)
	}
	b, _ := json.Marshal(content)
	return b
}
