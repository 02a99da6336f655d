package think

// The chat protocol of @cloudflare/ai-chat, which useAgentChat (with
// useAgent from agents/react) speaks over the agent's WebSocket.
//
// Pinned from the packages themselves, not from memory: think/chatclient
// installs @cloudflare/ai-chat 0.12.2 (the newest stable release), agents
// 0.32.0, ai 6.0.333, @ai-sdk/react 3.0.328 and react 19.3.1 from its lock
// file (ai 7 and @ai-sdk/react 4 need Node 22; ai-chat accepts 6 and 3).
// @cloudflare/ai-chat re-exports the protocol from agents, where it was
// read:
//
//   - node_modules/agents/dist/wire-types-*.d.ts: the frame types
//     (CHAT_MESSAGE_TYPES, MessageType) and the fields of every frame
//     (OutgoingMessage, IncomingMessage);
//   - node_modules/agents/dist/ws-chat-transport-*.js: the client side,
//     WebSocketChatTransport — how a request is sent (its body is
//     {"messages", "trigger", …extra}), which response frames end or fail
//     it, and the resume handshake;
//   - node_modules/agents/dist/chat/react.js: useAgentChat — the initial
//     GET <agent>/get-messages, how cf_agent_chat_messages, clear and
//     responses of other clients' requests are applied;
//   - node_modules/agents/dist/chat/index.js (ResumeHandshake,
//     sendReplayBodies, sendReplayControl) and
//     node_modules/@cloudflare/ai-chat/dist/index.js (AIChatAgent's
//     onConnect, onMessage, onRequest): the server side this mirrors;
//   - node_modules/ai/dist/index.d.ts: UIMessage and UIMessageChunk.
//
// Frames think serves (client → server):
//
//	cf_agent_use_chat_request {id, init: {method: "POST", body}}  a turn; body {messages, trigger, clientTools?}
//	cf_agent_chat_request_cancel {id}                           cancel it
//	cf_agent_chat_clear                                         clear the conversation
//	cf_agent_chat_messages {messages}                           accepted only when it changes nothing
//	cf_agent_stream_resume_request {probeId}                    is a turn streaming?
//	cf_agent_stream_resume_ack {id}                             send me its stream
//	cf_agent_tool_result {toolCallId, toolName?, output, state?, errorText?, autoContinue?, clientTools?}
//	                                                            a client tool's result (chattools.go)
//	cf_agent_tool_approval {toolCallId, approved, autoContinue?}  approve or deny a waiting call
//
// and sends (server → client):
//
//	cf_agent_chat_messages {messages, connect?}   the conversation as UI messages, on connect and after each change
//	cf_agent_use_chat_response {id, body, done, seq, error?, replay?, replayComplete?, outcome?, messageIds?, continuation?}
//	cf_agent_chat_clear                           to the other clients
//	cf_agent_stream_resuming {id, probeId?}, cf_agent_stream_resume_none {reason: "idle", probeId?},
//	cf_agent_stream_pending {id, probeId?}
//	cf_agent_error {error}                        a chat frame think could not take, and why
//
// A request with trigger "regenerate-message" (drop the last answer and
// run the turn again) is refused: the conversation is an append-only
// record of applied submissions — each row belongs to the submission that
// added it, applied exactly once — and dropping a stored answer would
// break what the ledger promises of it (and what other clients and a
// crash recovery have seen).
//
// A chat request is a submission like any other (id "chat_<request id>",
// metadata {"chat": {"requestId", "messageIds"}}): the ledger, its FIFO
// order, idempotency and crash recovery are the ones SubmitMessages has.
// Every turn, whoever submitted it, streams to every client as
// cf_agent_use_chat_response frames; the cf_agent_think frames are still
// sent beside them, as the lower-level stream of model events that
// existing clients read.
//
// Resuming: a client told cf_agent_stream_resuming (on connect, or in
// answer to its probe) gets no live chunks of that turn until it acks;
// the ack is answered, under the lock the live chunks are sent under, with
// every chunk of the turn so far (replay, with their seqs) and
// replayComplete, after which the live chunks follow: none is lost or sent
// twice. The chunks of the running turn are kept in memory; what the turn
// stored is in the conversation, so a client that reconnects after the
// node restarted (which ends the cut-off turn as error, DESIGN §4.2) gets
// the stored messages and cf_agent_stream_resume_none.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/store"
)

// The chat protocol's frame types.
const (
	frameChatMessages  = "cf_agent_chat_messages"
	frameChatRequest   = "cf_agent_use_chat_request"
	frameChatResponse  = "cf_agent_use_chat_response"
	frameChatClear     = "cf_agent_chat_clear"
	frameChatCancel    = "cf_agent_chat_request_cancel"
	frameResuming      = "cf_agent_stream_resuming"
	frameResumeAck     = "cf_agent_stream_resume_ack"
	frameResumeRequest = "cf_agent_stream_resume_request"
	frameResumeNone    = "cf_agent_stream_resume_none"
	frameStreamPending = "cf_agent_stream_pending"
	frameToolResult    = "cf_agent_tool_result"
	frameToolApproval  = "cf_agent_tool_approval"
	// frameError is the agent package's error frame type: clients ignore
	// it, people and tests read it.
	frameError = "cf_agent_error"
)

// chatSubmissionPrefix makes a chat request's id a submission id.
const chatSubmissionPrefix = "chat_"

// clearWait bounds how long a clear waits for a cancelled turn to stop.
const clearWait = 10 * time.Second

// chatMeta is what a chat submission's metadata records under "chat".
type chatMeta struct {
	RequestID  string   `json:"requestId"`
	MessageIDs []string `json:"messageIds,omitempty"`
	// ClientTools are the tools the client declared (the request body's
	// clientTools): offered to the model in this turn, run by the client.
	ClientTools []clientTool `json:"clientTools,omitempty"`
	// Continuation: the submission answers waiting tool calls (a client
	// tool's result, an approval) and its turn continues the
	// conversation (chatStream.continuation).
	Continuation bool `json:"continuation,omitempty"`
	// StoreOnly: the submission stores its answer and runs approved tools
	// but does not call the model (a result or an approval sent without
	// autoContinue, or while other calls of its step still wait).
	StoreOnly bool `json:"storeOnly,omitempty"`
	// Approved are the waiting calls this submission approved: the turn
	// runs them first.
	Approved []string `json:"approved,omitempty"`
}

// clientTool is a tool a chat client declared: useAgentChat's tools with
// an execute function, as extractClientToolSchemas sends them.
type clientTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// chatMetaOf returns the chat request a submission came from, or nil.
func chatMetaOf(s *store.Submission) *chatMeta {
	if len(s.Metadata) == 0 {
		return nil
	}
	var m struct {
		Chat *chatMeta `json:"chat"`
	}
	if json.Unmarshal(s.Metadata, &m) != nil || m.Chat == nil || m.Chat.RequestID == "" {
		return nil
	}
	return m.Chat
}

// chatHub is an agent's chat streaming state, in memory.
type chatHub struct {
	// snap orders the conversations sent to clients (cf_agent_chat_messages):
	// each is read and queued under it, so none read before another is
	// queued after it. Without it a request's broadcast of the
	// conversation with its new message, read before its turn ended, was
	// seen to reach the clients after the turn's own, newer one, and they
	// showed the older conversation until the next.
	snap    sync.Mutex
	mu      sync.Mutex
	cur     *chatStream            // the running turn's stream, nil between turns
	last    *chatStream            // the last ended turn's
	lastEnd []byte                 // last's terminal frame
	pending map[*agent.Conn]bool   // told of cur, not acked yet: no live chunks
	parked  map[*agent.Conn]string // probed while a turn was queued: its probe id
	// answered holds the clients that answered a waiting call with
	// autoContinue, by the request id of the continuation: each probes
	// for it right after (useAgentChat's tool continuation), so it gets
	// no live chunk of it before its ack, which replays them all; live
	// ones first would make the pinned client show the answer twice.
	answered map[*agent.Conn]string
	// missed holds the clients that were waiting to ack last's stream
	// when it ended: a probe of theirs is offered it.
	missed map[*agent.Conn]bool
	// cutOff is the request of the turn this activation's recovery ended
	// (a crash or a stop cut it off), until a later turn starts: a client
	// that probes is offered it, and told on its ack how it ended, so one
	// that was following it stops.
	cutOff string
}

// responseFrame is a cf_agent_use_chat_response frame.
type responseFrame struct {
	Type           string   `json:"type"`
	ID             string   `json:"id"`
	Body           string   `json:"body"`
	Done           bool     `json:"done"`
	Error          bool     `json:"error,omitempty"`
	Replay         bool     `json:"replay,omitempty"`
	ReplayComplete bool     `json:"replayComplete,omitempty"`
	Seq            *int     `json:"seq,omitempty"`
	MessageIDs     []string `json:"messageIds,omitempty"`
	Outcome        string   `json:"outcome,omitempty"`
	Continuation   bool     `json:"continuation,omitempty"`
}

func encode(v any) []byte {
	b, _ := json.Marshal(v) // frames are plain structs and maps of them
	return b
}

func (f responseFrame) bytes() []byte { f.Type = frameChatResponse; return encode(f) }

func chatError(msg string) []byte {
	return encode(map[string]string{"type": frameError, "error": msg})
}

// send sends a frame to one client; a closed connection drops it.
func send(c *agent.Conn, frame []byte) { _ = c.Send(frame) }

// chatSend streams chunks of the running turn cs to every client but those
// that have not acked its resume yet.
func (a *Agent[S]) chatSend(cs *chatStream, chunks []chunk) {
	if len(chunks) == 0 || cs.silent {
		return
	}
	h := &a.chat
	h.mu.Lock()
	defer h.mu.Unlock()
	except := h.pendingConns()
	for _, c := range chunks {
		seq, b := cs.add(c)
		frame := responseFrame{ID: cs.requestID, Body: string(b), Seq: &seq, Continuation: cs.continuation}
		if err := a.Broadcast(frame.bytes(), except...); err != nil {
			a.Logger().Warn("broadcasting a chat chunk failed", "err", err)
		}
	}
}

func (h *chatHub) pendingConns() []*agent.Conn {
	out := make([]*agent.Conn, 0, len(h.pending))
	for c := range h.pending {
		out = append(out, c)
	}
	return out
}

// chatCutOff notes the turn recovery ended after a crash or a stop.
func (a *Agent[S]) chatCutOff(s *store.Submission) {
	id := s.ID
	if m := chatMetaOf(s); m != nil {
		id = m.RequestID
	}
	a.chat.mu.Lock()
	a.chat.cutOff = id
	a.chat.mu.Unlock()
}

// chatBegin makes cs the running turn's stream and tells the clients that
// probed while it was queued.
func (a *Agent[S]) chatBegin(cs *chatStream) {
	if cs.silent {
		return
	}
	h := &a.chat
	h.mu.Lock()
	h.cur, h.cutOff, h.missed = cs, "", nil
	h.pending = map[*agent.Conn]bool{}
	for c, probe := range h.parked {
		send(c, encode(resumeFrame{Type: frameResuming, ID: cs.requestID, ProbeID: probe}))
		h.pending[c] = true
	}
	h.parked = nil
	for c, id := range h.answered {
		if id == cs.requestID {
			h.pending[c] = true
			delete(h.answered, c)
		}
	}
	h.mu.Unlock()
}

// chatAnswered notes that client c answered a waiting call and will probe
// for the continuation, request id.
func (a *Agent[S]) chatAnswered(c *agent.Conn, id string) {
	h := &a.chat
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.answered == nil {
		h.answered = map[*agent.Conn]string{}
	}
	h.answered[c] = id
}

// chatEnd ends the running turn's stream: its last chunks and the
// terminal frame to every client, then the conversation.
func (a *Agent[S]) chatEnd(ctx context.Context, cs *chatStream, status store.SubmissionStatus, errMsg string) {
	if cs.silent {
		a.broadcastChatMessages(ctx)
		return
	}
	a.chatSend(cs, cs.finish(status, cs.reason))
	end := responseFrame{ID: cs.requestID, Done: true, MessageIDs: cs.messageIDs, Outcome: outcome(status), Continuation: cs.continuation}
	if status == store.SubmissionError {
		end.Error, end.Body = true, errMsg
	}
	h := &a.chat
	h.mu.Lock()
	except := h.pendingConns()
	if err := a.Broadcast(end.bytes(), except...); err != nil {
		a.Logger().Warn("broadcasting a chat turn's end failed", "err", err)
	}
	h.cur, h.last, h.missed, h.pending = nil, cs, h.pending, nil
	end.Replay = true
	h.lastEnd = end.bytes()
	answered := maps.Clone(h.answered)
	h.mu.Unlock()
	// A client's note for a continuation that will not run (cancelled
	// while queued, or answered StoreOnly after all) is dropped here.
	for c, id := range answered {
		if s, err := a.chatSubmission(ctx, id); err != nil || s.Status.Finished() {
			h.mu.Lock()
			if h.answered[c] == id {
				delete(h.answered, c)
			}
			h.mu.Unlock()
		}
	}
	a.broadcastChatMessages(ctx)
}

// resumeFrame is cf_agent_stream_resuming, _resume_none or _pending.
type resumeFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	ProbeID string `json:"probeId,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// resumeRequest answers a client's probe: the running turn, the turn a
// restart cut off (its ack is answered with how it ended), a queued one
// (the client then waits for cf_agent_stream_resuming), or none.
func (a *Agent[S]) resumeRequest(ctx context.Context, c *agent.Conn, probe string) {
	h := &a.chat
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur != nil {
		send(c, encode(resumeFrame{Type: frameResuming, ID: h.cur.requestID, ProbeID: probe}))
		h.pending[c] = true
		return
	}
	if h.cutOff != "" {
		send(c, encode(resumeFrame{Type: frameResuming, ID: h.cutOff, ProbeID: probe}))
		return
	}
	if h.missed[c] && h.last != nil {
		// It was to ack the turn that has just ended: its ack replays it.
		delete(h.missed, c)
		send(c, encode(resumeFrame{Type: frameResuming, ID: h.last.requestID, ProbeID: probe}))
		return
	}
	queued, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{
		Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}, Limit: 1})
	if err == nil && len(queued) > 0 {
		id := queued[0].ID
		if m := chatMetaOf(&queued[0]); m != nil {
			id = m.RequestID
		}
		send(c, encode(resumeFrame{Type: frameStreamPending, ID: id, ProbeID: probe}))
		if h.parked == nil {
			h.parked = map[*agent.Conn]string{}
		}
		h.parked[c] = probe
		return
	}
	send(c, encode(resumeFrame{Type: frameResumeNone, Reason: "idle", ProbeID: probe}))
}

// resumeAck sends a client that acked the stream of request id every chunk
// of it so far; from then on it gets the live ones.
func (a *Agent[S]) resumeAck(ctx context.Context, c *agent.Conn, id string) {
	h := &a.chat
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.pending, c)
	replay := func(cs *chatStream) {
		for i, b := range cs.bodies {
			seq := i
			send(c, responseFrame{ID: id, Body: string(b), Replay: true, Seq: &seq, Continuation: cs.continuation}.bytes())
		}
	}
	switch {
	case h.cur != nil && h.cur.requestID == id:
		replay(h.cur)
		send(c, responseFrame{ID: id, Replay: true, ReplayComplete: true, Continuation: h.cur.continuation}.bytes())
	case h.last != nil && h.last.requestID == id:
		replay(h.last)
		send(c, h.lastEnd)
	default:
		// An older request, or one a restarted node's recovery ended: the
		// ledger says how it ended.
		end := responseFrame{ID: id, Done: true, Replay: true}
		if s, err := a.chatSubmission(ctx, id); err == nil && s.Status.Finished() {
			end.Outcome = outcome(s.Status)
			if s.Status == store.SubmissionError {
				end.Error, end.Body = true, s.Error
			}
			if m := chatMetaOf(s); m != nil {
				end.MessageIDs = m.MessageIDs
			}
		}
		send(c, end.bytes())
	}
}

// UIMessages returns the conversation as AI SDK UI messages, followed by
// the messages of submissions that have not reached it yet.
func (a *Agent[S]) UIMessages(ctx context.Context) ([]UIMessage, error) {
	rows, err := a.conversationWithQueued(ctx)
	if err != nil {
		return nil, err
	}
	msgs, err := toUI(rows)
	if err != nil {
		return nil, fmt.Errorf("think: conversation of %s: %w", a.key(), err)
	}
	return msgs, nil
}

// conversationWithQueued returns the stored conversation followed by the
// messages of the pending and running submissions not applied to it yet.
func (a *Agent[S]) conversationWithQueued(ctx context.Context) ([]store.ConversationMessage, error) {
	rows, err := a.store().ListConversation(ctx, a.key())
	if err != nil {
		return nil, err
	}
	queued, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{
		Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
	if err != nil {
		return nil, err
	}
	for _, s := range queued {
		if s.Applied {
			continue
		}
		var msgs []json.RawMessage
		if err := json.Unmarshal(s.Messages, &msgs); err != nil {
			return nil, fmt.Errorf("think: submission %s: %w", s.ID, err)
		}
		for _, m := range msgs {
			rows = append(rows, store.ConversationMessage{SubmissionID: s.ID, Message: m})
		}
	}
	return rows, nil
}

// chatMessagesFrame is the cf_agent_chat_messages frame of the
// conversation now.
func (a *Agent[S]) chatMessagesFrame(ctx context.Context, connect bool) ([]byte, error) {
	msgs, err := a.UIMessages(ctx)
	if err != nil {
		return nil, err
	}
	return encode(struct {
		Type     string      `json:"type"`
		Messages []UIMessage `json:"messages"`
		Connect  bool        `json:"connect,omitempty"`
	}{frameChatMessages, msgs, connect}), nil
}

// broadcastChatMessages sends the conversation to every client but those
// listed.
func (a *Agent[S]) broadcastChatMessages(ctx context.Context, except ...*agent.Conn) {
	if len(a.Connections()) == 0 {
		// Nobody to tell, and reading the conversation is not free. A
		// client that connects after this look is sent the conversation
		// by ConnectChat, which reads it after this turn's writes (the
		// runtime adds a connection before its OnConnect).
		return
	}
	a.chat.snap.Lock()
	defer a.chat.snap.Unlock()
	frame, err := a.chatMessagesFrame(ctx, false)
	if err == nil {
		err = a.Broadcast(frame, except...)
	}
	if err != nil {
		a.Logger().Warn("broadcasting the chat messages failed", "err", err)
	}
}

// OnConnect sends a new client the conversation (cf_agent_chat_messages
// with connect set) and, when a turn is streaming, offers it
// (cf_agent_stream_resuming). A class with an OnConnect of its own calls
// ConnectChat from it.
func (a *Agent[S]) OnConnect(ctx context.Context, c *agent.Conn, _ *http.Request) error {
	return a.ConnectChat(ctx, c)
}

// ConnectChat is what OnConnect does for the chat protocol.
func (a *Agent[S]) ConnectChat(ctx context.Context, c *agent.Conn) error {
	h := &a.chat
	h.snap.Lock()
	defer h.snap.Unlock()
	frame, err := a.chatMessagesFrame(ctx, true)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	send(c, frame)
	if h.cur != nil {
		send(c, encode(resumeFrame{Type: frameResuming, ID: h.cur.requestID}))
		h.pending[c] = true
	}
	return nil
}

// OnRequest answers GET <agent>/get-messages, which useAgentChat asks for
// its first render, with the conversation as UI messages; other requests
// are 404. A class with an OnRequest of its own calls ServeChat from it.
func (a *Agent[S]) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if !a.ServeChat(ctx, w, r) {
		http.NotFound(w, r)
	}
}

// ServeChat answers GET <agent>/get-messages and reports whether r was
// that request.
func (a *Agent[S]) ServeChat(ctx context.Context, w http.ResponseWriter, r *http.Request) bool {
	if agent.Rest(r) != "/get-messages" || r.Method != http.MethodGet {
		return false
	}
	msgs, err := a.UIMessages(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(encode(msgs))
	return true
}

// OnMessage takes the chat protocol's frames; anything else is answered
// with a cf_agent_error frame. A class with an OnMessage of its own calls
// HandleChatMessage from it.
func (a *Agent[S]) OnMessage(ctx context.Context, c *agent.Conn, msg []byte) {
	if !a.HandleChatMessage(ctx, c, msg) {
		send(c, chatError(`unrecognized message: expected a JSON frame of type "cf_agent_state", "rpc" or a chat frame ("cf_agent_use_chat_request", …)`))
	}
}

// chatFrame is a client's chat frame; fields are raw so that a wrong type
// is reported by name.
type chatFrame struct {
	Type       string          `json:"type"`
	ID         json.RawMessage `json:"id"`
	Init       json.RawMessage `json:"init"`
	Messages   json.RawMessage `json:"messages"`
	ProbeID    json.RawMessage `json:"probeId"`
	ToolCallID json.RawMessage `json:"toolCallId"`
	// cf_agent_tool_result and cf_agent_tool_approval
	ToolName     json.RawMessage `json:"toolName"`
	Output       json.RawMessage `json:"output"`
	State        json.RawMessage `json:"state"`
	ErrorText    json.RawMessage `json:"errorText"`
	AutoContinue json.RawMessage `json:"autoContinue"`
	ClientTools  json.RawMessage `json:"clientTools"`
	Approved     json.RawMessage `json:"approved"`
}

// HandleChatMessage handles msg if it is a chat protocol frame and reports
// whether it was one. A malformed chat frame, or one think refuses, is
// answered with an error (see the package's chat.go) and changes nothing.
func (a *Agent[S]) HandleChatMessage(ctx context.Context, c *agent.Conn, msg []byte) bool {
	var f chatFrame
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &f) != nil {
		return false
	}
	str := func(raw json.RawMessage, name string, required bool) (string, error) {
		var s string
		if len(raw) == 0 && !required {
			return "", nil
		}
		if len(raw) == 0 || json.Unmarshal(raw, &s) != nil || (required && s == "") {
			return "", fmt.Errorf("%s frame: field %q must be a non-empty string", f.Type, name)
		}
		return s, nil
	}
	var err error
	switch f.Type {
	case frameChatRequest:
		var id string
		if id, err = str(f.ID, "id", true); err == nil {
			a.chatRequest(ctx, c, id, f.Init)
		}
	case frameChatCancel:
		var id string
		if id, err = str(f.ID, "id", true); err == nil {
			err = a.chatCancel(ctx, c, id)
		}
	case frameChatClear:
		err = a.chatClear(ctx, c)
	case frameChatMessages:
		err = a.chatMessagesFromClient(ctx, f.Messages)
	case frameResumeRequest:
		var probe string
		if probe, err = str(f.ProbeID, "probeId", false); err == nil {
			a.resumeRequest(ctx, c, probe)
		}
	case frameResumeAck:
		var id string
		if id, err = str(f.ID, "id", true); err == nil {
			a.resumeAck(ctx, c, id)
		}
	case frameToolResult:
		err = a.toolResult(ctx, c, &f)
	case frameToolApproval:
		err = a.toolApproval(ctx, c, &f)
	default:
		return false
	}
	if err != nil {
		send(c, chatError(err.Error()))
	}
	return true
}

// chatRequest turns a chat request into a submission. A request that
// cannot be taken is answered on its own response stream with an error,
// which fails it in the client; nothing is stored.
func (a *Agent[S]) chatRequest(ctx context.Context, c *agent.Conn, id string, rawInit json.RawMessage) {
	fail := func(format string, args ...any) {
		send(c, responseFrame{ID: id, Done: true, Error: true, Outcome: "error",
			Body: fmt.Sprintf("chat request %s: ", id) + fmt.Sprintf(format, args...)}.bytes())
	}
	var init struct {
		Method string  `json:"method"`
		Body   *string `json:"body"`
	}
	if len(rawInit) == 0 || json.Unmarshal(rawInit, &init) != nil {
		fail(`field "init" must be an object {"method": "POST", "body": "<JSON>"}`)
		return
	}
	if init.Method != http.MethodPost || init.Body == nil {
		fail(`"init" must have method "POST" and a string "body"`)
		return
	}
	var body struct {
		Messages    []UIMessage     `json:"messages"`
		Trigger     string          `json:"trigger"`
		ClientTools json.RawMessage `json:"clientTools"`
	}
	if err := json.Unmarshal([]byte(*init.Body), &body); err != nil {
		fail("the body is not a JSON object with a messages array: %v", err)
		return
	}
	if body.Trigger != "" && body.Trigger != "submit-message" {
		fail("trigger %q is not supported: this server takes new user messages (submit-message) only; "+
			"the conversation is an append-only record of applied submissions, so an answer is not dropped and run again", body.Trigger)
		return
	}
	clientTools, err := a.parseClientTools(body.ClientTools, "the body")
	if err != nil {
		fail("%v", err)
		return
	}
	sid := chatSubmissionPrefix + id
	if prev, err := a.store().GetSubmission(ctx, a.key(), sid); err == nil {
		// The same request again (a client resends what it buffered while
		// disconnected): it is already in the ledger.
		if prev.Status.Finished() {
			send(c, responseFrame{ID: id, Done: true, Outcome: outcome(prev.Status), Error: prev.Status == store.SubmissionError, Body: prev.Error}.bytes())
		}
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		fail("%v", err)
		return
	}
	known, err := a.UIMessages(ctx)
	if err != nil {
		fail("%v", err)
		return
	}
	ids := map[string]bool{}
	for _, m := range known {
		ids[m.ID] = true
	}
	// The request carries the client's conversation: messages the server
	// has, then the new user message (sendMessage adds one; sends buffered
	// while offline are requests of their own, in order, each carrying the
	// ones before).
	first := len(body.Messages)
	if first > 0 && !ids[body.Messages[first-1].ID] {
		first--
	}
	for _, m := range body.Messages[:first] {
		if !a.knownID(ctx, ids, m.ID) {
			fail("unknown message id %q: the conversation has no such message", m.ID)
			return
		}
	}
	news := body.Messages[first:]
	if len(news) == 0 {
		fail("no new user message: every message in the request is in the conversation already")
		return
	}
	stored := make([]storedMessage, len(news))
	meta := chatMeta{RequestID: id, ClientTools: clientTools}
	for i, m := range news {
		if stored[i], err = fromUI(m); err != nil {
			fail("%v", err)
			return
		}
		meta.MessageIDs = append(meta.MessageIDs, m.ID)
	}
	raw, err := json.Marshal(stored)
	if err != nil {
		fail("%v", err)
		return
	}
	_, err = a.create(ctx, raw, SubmitOptions{SubmissionID: sid, IdempotencyKey: "chat-message:" + news[len(news)-1].ID,
		Metadata: map[string]any{"chat": meta}}, "", "")
	if err != nil {
		fail("%v", err)
		return
	}
	a.broadcastChatMessages(ctx, c)
}

// knownID reports whether a client's message id names a message of the
// conversation (ids) or the answer of a turn in the ledger that stored
// nothing, such as one cut off by a restart before its first step was
// stored: the client keeps what it was streamed of it.
func (a *Agent[S]) knownID(ctx context.Context, ids map[string]bool, id string) bool {
	if ids[id] {
		return true
	}
	sub, ok := strings.CutPrefix(id, assistantUIID(""))
	if !ok || sub == "" {
		return false
	}
	_, err := a.store().GetSubmission(ctx, a.key(), sub)
	return err == nil
}

// chatSubmission finds the submission of request id: a chat request's, or
// a submission streamed under its own id.
func (a *Agent[S]) chatSubmission(ctx context.Context, id string) (*store.Submission, error) {
	s, err := a.store().GetSubmission(ctx, a.key(), chatSubmissionPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		s, err = a.store().GetSubmission(ctx, a.key(), id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s frame: there is no chat request %q", frameChatCancel, id)
	}
	return s, err
}

// chatCancel cancels a queued or running chat request.
func (a *Agent[S]) chatCancel(ctx context.Context, c *agent.Conn, id string) error {
	s, err := a.chatSubmission(ctx, id)
	if err != nil {
		return err
	}
	if s.Status.Finished() {
		return fmt.Errorf("%s frame: chat request %q has already ended (%s); nothing was cancelled", frameChatCancel, id, s.Status)
	}
	if _, err := a.CancelSubmission(ctx, s.ID); err != nil {
		return err
	}
	if s.Status == store.SubmissionPending {
		// It never runs, so no turn ends it: say so here.
		end := responseFrame{ID: id, Done: true, Outcome: "aborted"}
		if m := chatMetaOf(s); m != nil {
			end.MessageIDs = m.MessageIDs
		}
		if err := a.Broadcast(end.bytes()); err != nil {
			return err
		}
		a.broadcastChatMessages(ctx)
	}
	return nil
}

// chatClear clears the conversation: the running turn and the queued chat
// requests are cancelled first (queued submissions of other kinds, such
// as a workflow's prompt, stay queued).
func (a *Agent[S]) chatClear(ctx context.Context, c *agent.Conn) error {
	queued, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{
		Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
	if err != nil {
		return err
	}
	for _, s := range queued {
		if s.Status == store.SubmissionPending && chatMetaOf(&s) == nil {
			continue
		}
		if _, err := a.CancelSubmission(ctx, s.ID); err != nil {
			return fmt.Errorf("%s frame: cancel %s: %w", frameChatClear, s.ID, err)
		}
	}
	// A cancelled turn may still be writing its last step.
	deadline := time.Now().Add(clearWait)
	for a.turnRunning() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s frame: the running turn did not stop within %s; nothing was cleared", frameChatClear, clearWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.store().ClearConversation(ctx, a.key()); err != nil {
		return err
	}
	a.history.forget()
	if err := a.Broadcast(encode(map[string]string{"type": frameChatClear}), c); err != nil {
		return err
	}
	a.broadcastChatMessages(ctx)
	return nil
}

// turnRunning reports whether a turn runs now.
func (a *Agent[S]) turnRunning() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cancels) > 0
}

// chatMessagesFromClient takes a client's cf_agent_chat_messages. The
// conversation is the server's, kept through the ledger: a client's list
// is accepted when every message in it is one the server has, and changes
// nothing; new messages come in chat requests.
func (a *Agent[S]) chatMessagesFromClient(ctx context.Context, raw json.RawMessage) error {
	var msgs []UIMessage
	if len(raw) == 0 || json.Unmarshal(raw, &msgs) != nil {
		return fmt.Errorf(`%s frame: field "messages" must be an array of UI messages`, frameChatMessages)
	}
	known, err := a.UIMessages(ctx)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, k := range known {
		ids[k.ID] = true
	}
	for _, m := range msgs {
		if !a.knownID(ctx, ids, m.ID) {
			return fmt.Errorf("%s frame: unknown message id %q: new messages are sent with %s; the conversation is unchanged",
				frameChatMessages, m.ID, frameChatRequest)
		}
	}
	return nil
}
