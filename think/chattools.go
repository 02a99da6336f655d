package think

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/store"
)

// Client tools and tool approval over the chat protocol (chat.go).
//
// A chat request's body may declare client tools (clientTools: name,
// description, JSON schema; useAgentChat sends the tools given to it that
// have an execute function): they are offered to the model in that turn
// beside the class's tools. A call of a client tool, or of a Tool with
// NeedsApproval, is streamed (tool-input-*, and tool-approval-request for
// an approval) and stored with the assistant message as waiting
// (storedMessage.Await); the turn's step still runs its other calls, and
// the turn then ends: the call waits in the conversation, across
// restarts.
//
// The client answers with cf_agent_tool_result {toolCallId, toolName,
// output, state?, errorText?, autoContinue?, clientTools?} or
// cf_agent_tool_approval {toolCallId, approved, autoContinue?}. The answer
// is a submission of the ledger like a chat request (id "chat_tr_<call>"
// or "chat_ap_<call>", so a second answer is refused): a result's tool
// message, a denial's ("output-denied"), or, for an approval, the call to
// run. With autoContinue, once no call of that step waits any more, its
// turn continues the conversation (its frames with continuation set, as
// the pinned server's); without it, the answer is stored and shown and the model is not called.
// The continued answer is an assistant message of its own, "a_<answer's
// submission>" (see chatStream.continuation for why).
// Every client gets the conversation with the answer at once.
//
// An answer for a call the conversation does not have, that is already
// answered, that a later user message passed by, that the server runs, or
// of the wrong kind (a result for a call that needs approval, an approval
// for a client tool's call) is refused with a cf_agent_error frame and
// changes nothing.
//
// A continuation streams what the model does next. The answer itself,
// and an approved tool's output, reach the clients as snapshots
// (cf_agent_chat_messages), not as chunks of the continuation: the pinned
// client applies a resumed stream to a new message unless a tool input
// is still streaming, so a tool-output chunk there would find no call.

// denialText is the tool result the model sees for a denied approval.
const denialText = "The user denied this tool call; it was not run."

// waiting is a waiting tool call found for an answer.
type waiting struct {
	call model.ToolCall
	kind string // awaitClient or awaitApproval
	// others are the calls of the same step that still wait once this
	// one is answered.
	others int
}

// answerID is the submission id of the answer to call id.
func answerID(kind, callID string) string {
	if kind == awaitApproval {
		return chatSubmissionPrefix + "ap_" + callID
	}
	return chatSubmissionPrefix + "tr_" + callID
}

// waitingCall finds the waiting call id in the conversation (with the
// messages of queued submissions) for a frame of type typ.
func (a *Agent[S]) waitingCall(ctx context.Context, typ, id string) (*waiting, error) {
	rows, err := a.conversationWithQueued(ctx)
	if err != nil {
		return nil, err
	}
	msgs := make([]storedMessage, len(rows))
	at := -1
	for i, r := range rows {
		if err := json.Unmarshal(r.Message, &msgs[i]); err != nil {
			return nil, fmt.Errorf("think: conversation of %s: message %d: %w", a.key(), r.Seq, err)
		}
		for _, c := range msgs[i].ToolCalls {
			if c.ID == id {
				at = i
			}
		}
	}
	if at < 0 {
		return nil, fmt.Errorf("%s frame: there is no tool call %q in the conversation", typ, id)
	}
	w := &waiting{kind: msgs[at].Await[id]}
	w.call, _ = findCall([]model.Message{msgs[at].Message}, id)
	switch {
	case w.kind == "":
		return nil, fmt.Errorf("%s frame: tool call %q (%s) is run by the server; it takes no result or approval from a client", typ, id, w.call.Name)
	case typ == frameToolResult && w.kind == awaitApproval:
		return nil, fmt.Errorf("%s frame: tool call %q (%s) needs approval: answer it with %s", typ, id, w.call.Name, frameToolApproval)
	case typ == frameToolApproval && w.kind == awaitClient:
		return nil, fmt.Errorf("%s frame: tool call %q (%s) is a client tool's and needs no approval: answer it with %s", typ, id, w.call.Name, frameToolResult)
	}
	answered := map[string]bool{}
	for _, m := range msgs[at+1:] {
		if m.Role == model.RoleUser {
			return nil, fmt.Errorf("%s frame: tool call %q (%s) no longer waits: a later message went on without it", typ, id, w.call.Name)
		}
		if m.Role == model.RoleTool {
			answered[m.ToolCallID] = true
		}
	}
	// An approved call has no result until its submission runs: the
	// submission says it was answered.
	isAnswered := func(callID, kind string) (bool, error) {
		if answered[callID] {
			return true, nil
		}
		_, err := a.store().GetSubmission(ctx, a.key(), answerID(kind, callID))
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	if done, err := isAnswered(id, w.kind); err != nil {
		return nil, err
	} else if done {
		return nil, fmt.Errorf("%s frame: tool call %q (%s) is already answered; the first answer stands", typ, id, w.call.Name)
	}
	for other, kind := range msgs[at].Await {
		if other == id {
			continue
		}
		done, err := isAnswered(other, kind)
		if err != nil {
			return nil, err
		}
		if !done {
			w.others++
		}
	}
	return w, nil
}

// boolField reads an optional boolean field of a frame.
func boolField(raw json.RawMessage, typ, name string, def bool) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, fmt.Errorf("%s frame: field %q must be a boolean", typ, name)
	}
	return b, nil
}

// stringField reads a string field of a frame.
func stringField(raw json.RawMessage, typ, name string, required bool) (string, error) {
	if len(raw) == 0 && !required {
		return "", nil
	}
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil || (required && s == "") {
		return "", fmt.Errorf("%s frame: field %q must be a non-empty string", typ, name)
	}
	return s, nil
}

// parseClientTools checks a clientTools list against the class's tools.
func (a *Agent[S]) parseClientTools(raw json.RawMessage, where string) ([]clientTool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var tools []clientTool
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, fmt.Errorf(`%s: field "clientTools" must be an array of {"name", "description", "parameters"}`, where)
	}
	seen := map[string]bool{}
	for i, t := range tools {
		switch {
		case t.Name == "":
			return nil, fmt.Errorf(`%s: clientTools[%d]: "name" must be a non-empty string`, where, i)
		case seen[t.Name]:
			return nil, fmt.Errorf("%s: clientTools[%d]: tool %q is listed twice", where, i, t.Name)
		case len(t.Parameters) > 0 && (t.Parameters[0] != '{'):
			return nil, fmt.Errorf(`%s: clientTools[%d] (%s): "parameters" must be a JSON schema object`, where, i, t.Name)
		}
		for _, st := range a.cfg.tools {
			if st.Name == t.Name {
				return nil, fmt.Errorf("%s: clientTools[%d]: %q is the name of a server tool", where, i, t.Name)
			}
		}
		seen[t.Name] = true
	}
	return tools, nil
}

// lastClientTools returns the client tools the newest chat submission
// that declared any declared.
func (a *Agent[S]) lastClientTools(ctx context.Context) ([]clientTool, error) {
	subs, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{})
	if err != nil {
		return nil, err
	}
	for i := len(subs) - 1; i >= 0; i-- {
		if m := chatMetaOf(&subs[i]); m != nil && len(m.ClientTools) > 0 {
			return m.ClientTools, nil
		}
	}
	return nil, nil
}

// toolResult takes a client tool's result.
func (a *Agent[S]) toolResult(ctx context.Context, c *agent.Conn, f *chatFrame) error {
	typ := f.Type
	id, err := stringField(f.ToolCallID, typ, "toolCallId", true)
	if err != nil {
		return err
	}
	name, err := stringField(f.ToolName, typ, "toolName", false)
	if err != nil {
		return err
	}
	state, err := stringField(f.State, typ, "state", false)
	if err != nil {
		return err
	}
	if state != "" && state != "output-available" && state != "output-error" {
		return fmt.Errorf(`%s frame: field "state" must be "output-available" or "output-error", not %q`, typ, state)
	}
	errText, err := stringField(f.ErrorText, typ, "errorText", false)
	if err != nil {
		return err
	}
	auto, err := boolField(f.AutoContinue, typ, "autoContinue", false)
	if err != nil {
		return err
	}
	tools, err := a.parseClientTools(f.ClientTools, typ+" frame")
	if err != nil {
		return err
	}
	if state != "output-error" && len(f.Output) == 0 {
		return fmt.Errorf(`%s frame: field "output" is required (the tool's output, any JSON)`, typ)
	}
	w, err := a.waitingCall(ctx, typ, id)
	if err != nil {
		return err
	}
	if name != "" && name != w.call.Name {
		return fmt.Errorf("%s frame: tool call %q is a call of %q, not of %q", typ, id, w.call.Name, name)
	}
	res := storedMessage{Message: model.Message{Role: model.RoleTool, ToolCallID: id, ToolName: w.call.Name, Content: string(f.Output)}}
	if state == "output-error" {
		if errText == "" {
			errText = "Tool execution denied by user" // the pinned client's default
		}
		res.IsError, res.Content = true, errText
	}
	if len(tools) == 0 {
		if tools, err = a.lastClientTools(ctx); err != nil {
			return err
		}
	}
	meta := chatMeta{RequestID: "tr_" + id, ClientTools: tools, Continuation: true, StoreOnly: !auto || w.others > 0}
	return a.answer(ctx, c, w, meta, []storedMessage{res})
}

// toolApproval takes a person's approval or denial of a waiting call.
func (a *Agent[S]) toolApproval(ctx context.Context, c *agent.Conn, f *chatFrame) error {
	typ := f.Type
	id, err := stringField(f.ToolCallID, typ, "toolCallId", true)
	if err != nil {
		return err
	}
	if len(f.Approved) == 0 {
		return fmt.Errorf(`%s frame: field "approved" must be a boolean`, typ)
	}
	approved, err := boolField(f.Approved, typ, "approved", false)
	if err != nil {
		return err
	}
	auto, err := boolField(f.AutoContinue, typ, "autoContinue", false)
	if err != nil {
		return err
	}
	w, err := a.waitingCall(ctx, typ, id)
	if err != nil {
		return err
	}
	tools, err := a.lastClientTools(ctx)
	if err != nil {
		return err
	}
	meta := chatMeta{RequestID: "ap_" + id, ClientTools: tools, Continuation: true, StoreOnly: !auto || w.others > 0}
	var msgs []storedMessage
	if approved {
		meta.Approved = []string{id}
	} else {
		msgs = []storedMessage{{Message: model.Message{Role: model.RoleTool, ToolCallID: id, ToolName: w.call.Name,
			IsError: true, Content: denialText}, Denied: true}}
	}
	return a.answer(ctx, c, w, meta, msgs)
}

// answer stores the answer to a waiting call as a submission and shows
// every client the conversation with it (the one that answered too: an
// approval's part becomes output-denied there only so).
func (a *Agent[S]) answer(ctx context.Context, c *agent.Conn, w *waiting, meta chatMeta, msgs []storedMessage) error {
	if msgs == nil {
		msgs = []storedMessage{}
	}
	raw, err := json.Marshal(msgs)
	if err != nil {
		return err
	}
	sid := answerID(w.kind, w.call.ID)
	if !meta.StoreOnly {
		a.chatAnswered(c, meta.RequestID)
	}
	res, err := a.create(ctx, raw, SubmitOptions{SubmissionID: sid, IdempotencyKey: "chat-tool:" + w.call.ID,
		Metadata: map[string]any{"chat": meta}}, "", "")
	if err != nil {
		return err
	}
	if !res.Accepted {
		return fmt.Errorf("tool call %q (%s) is already answered; the first answer stands", w.call.ID, w.call.Name)
	}
	a.broadcastChatMessages(ctx)
	return nil
}
