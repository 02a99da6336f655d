package think_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// chatFrame is any frame of the chat protocol as a client receives it.
type chatFrame struct {
	Type           string            `json:"type"`
	ID             string            `json:"id"`
	Body           string            `json:"body"`
	Done           bool              `json:"done"`
	Error          any               `json:"error"`
	Replay         bool              `json:"replay"`
	ReplayComplete bool              `json:"replayComplete"`
	Seq            *int              `json:"seq"`
	Outcome        string            `json:"outcome"`
	MessageIDs     []string          `json:"messageIds"`
	Messages       []think.UIMessage `json:"messages"`
	Connect        bool              `json:"connect"`
	ProbeID        string            `json:"probeId"`
	Reason         string            `json:"reason"`

	raw string
}

// chunkType is the type of the UI message chunk a response frame carries.
func (f chatFrame) chunkType() string {
	var c struct{ Type string }
	_ = json.Unmarshal([]byte(f.Body), &c)
	return c.Type
}

// chatClient is a raw WebSocket client of the chat protocol.
type chatClient struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan chatFrame
}

func dialChat(t *testing.T, srv *httptest.Server, path string) *chatClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	c := &chatClient{t: t, ws: ws, frames: make(chan chatFrame, 1024)}
	go func() {
		defer close(c.frames)
		for {
			_, raw, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			var f chatFrame
			if err := json.Unmarshal(raw, &f); err != nil {
				f.Type = "(not JSON)"
			}
			f.raw = string(raw)
			c.frames <- f
		}
	}()
	t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *chatClient) send(v any) {
	c.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.ws.Write(c.t.Context(), websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// until returns the frames read up to and including the first that
// matches, failing after 10 s.
func (c *chatClient) until(what string, match func(chatFrame) bool) []chatFrame {
	c.t.Helper()
	var got []chatFrame
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("connection closed waiting for %s; read %s", what, raws(got))
			}
			got = append(got, f)
			if match(f) {
				return got
			}
		case <-timeout:
			c.t.Fatalf("timed out waiting for %s; read %s", what, raws(got))
		}
	}
}

// response returns the response frames of request id among frames.
func response(frames []chatFrame, id string) []chatFrame {
	var out []chatFrame
	for _, f := range frames {
		if f.Type == "cf_agent_use_chat_response" && f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func raws(fs []chatFrame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("\n  " + f.raw)
	}
	return b.String()
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

func isType(typ string) func(chatFrame) bool { return func(f chatFrame) bool { return f.Type == typ } }

func isDone(id string) func(chatFrame) bool {
	return func(f chatFrame) bool { return f.Type == "cf_agent_use_chat_response" && f.ID == id && f.Done }
}

// chatRequest is a cf_agent_use_chat_request frame as WebSocketChatTransport
// sends it: the body is JSON in a string.
func chatRequest(id, trigger string, msgs ...string) map[string]any {
	body := fmt.Sprintf(`{"messages":[%s],"trigger":%q}`, strings.Join(msgs, ","), trigger)
	return map[string]any{"type": "cf_agent_use_chat_request", "id": id, "init": map[string]any{"method": "POST", "body": body}}
}

func userMsg(id, text string) string {
	return fmt.Sprintf(`{"id":%q,"role":"user","parts":[{"type":"text","text":%q}]}`, id, text)
}

// chatTurn connects two clients to a Helper, sends a chat request with one
// tool round from the first, and checks what both see. It returns the
// server, the clients and the snapshot after the turn.
func chatTurn(t *testing.T) (*env, *httptest.Server, *chatClient, *chatClient, []think.UIMessage) {
	t.Helper()
	e := newEnv(t, scripted.New(
		scripted.Turn{Text: "Let me look.", Calls: []model.ToolCall{{ID: "c1", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Oslo"}`)}}},
		scripted.Say("It is sunny in Oslo."),
	), nil)
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	a, b := dialChat(t, srv, "/agents/helper/chat"), dialChat(t, srv, "/agents/helper/chat")
	for _, c := range []*chatClient{a, b} {
		fs := c.until("the conversation on connect", isType("cf_agent_chat_messages"))
		if f := fs[len(fs)-1]; !f.Connect || f.Messages == nil || len(f.Messages) != 0 {
			t.Fatalf("on connect: %s", f.raw)
		}
	}

	a.send(chatRequest("r1", "submit-message", userMsg("u1", "Weather in Oslo?")))
	var snapshot []think.UIMessage
	for _, c := range []*chatClient{a, b} {
		fs := c.until("the turn's end", isDone("r1"))
		if c == b {
			// The other client is sent the conversation with the new
			// message as the request is taken; a fast turn may stream
			// (and end) before that frame goes out. Any conversation b
			// was sent starts with the new message (or is still empty:
			// a's connect sends the conversation to the others too).
			for _, f := range fs {
				if f.Type == "cf_agent_chat_messages" && len(f.Messages) > 0 && f.Messages[0].ID != "u1" {
					t.Fatalf("after the request, client b got %s", f.raw)
				}
			}
		}
		resp := response(fs, "r1")
		var types []string
		for i, f := range resp[:len(resp)-1] {
			types = append(types, f.chunkType())
			if f.Seq == nil || *f.Seq != i {
				t.Errorf("chunk %d has seq %v: %s", i, f.Seq, f.raw)
			}
		}
		want := []string{"start", "start-step", "text-start", "text-delta", "text-end",
			"tool-input-start", "tool-input-delta", "tool-input-available", "tool-output-available", "finish-step",
			"start-step", "text-start", "text-delta", "text-end", "finish-step", "finish"}
		if !slices.Equal(types, want) {
			t.Errorf("chunks = %v, want %v", types, want)
		}
		end := resp[len(resp)-1]
		if end.Outcome != "completed" || end.Error != nil || !slices.Equal(end.MessageIDs, []string{"u1"}) {
			t.Errorf("done frame %s", end.raw)
		}
		fs = c.until("the conversation after the turn", func(f chatFrame) bool {
			return f.Type == "cf_agent_chat_messages" && len(f.Messages) == 2
		})
		snapshot = fs[len(fs)-1].Messages
	}
	if len(snapshot) != 2 || snapshot[0].ID != "u1" || snapshot[1].ID != "a_chat_r1" || len(snapshot[1].Parts) != 5 {
		t.Fatalf("conversation after the turn: %s", jsonOf(snapshot))
	}
	s := with(t, e, "chat", func(ctx context.Context, h *Helper) (think.SubmissionInfo, error) {
		return h.InspectSubmission(ctx, "chat_r1")
	})
	if s.Status != store.SubmissionCompleted || len(s.Messages) != 1 || s.Messages[0].Content != "Weather in Oslo?" {
		t.Fatalf("the request's submission: %+v", s)
	}
	return e, srv, a, b, snapshot
}

// TestChatTurn: a chat request runs as a submission and streams to its
// client and the agent's other client; both then get the conversation,
// which GET get-messages also answers.
func TestChatTurn(t *testing.T) {
	t.Parallel()
	_, srv, _, _, snapshot := chatTurn(t)
	res, err := http.Get(srv.URL + "/agents/helper/chat/get-messages")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var got []think.UIMessage
	if err := json.Unmarshal(body, &got); err != nil || res.StatusCode != 200 {
		t.Fatalf("get-messages: %d %s", res.StatusCode, body)
	}
	if a, b := jsonOf(got), jsonOf(snapshot); a != b {
		t.Errorf("get-messages = %s, the snapshot was %s", a, b)
	}
}

// TestChatBadInput: every bad frame is answered with an error naming what
// is wrong, and the conversation and the ledger stay as they were.
func TestChatBadInput(t *testing.T) {
	t.Parallel()
	e, _, a, _, snapshot := chatTurn(t)
	history := userMsg("u1", "Weather in Oslo?") + `,` + `{"id":"a_chat_r1","role":"assistant","parts":[]}`
	ledger := func() []think.SubmissionInfo {
		return with(t, e, "chat", func(ctx context.Context, h *Helper) ([]think.SubmissionInfo, error) {
			return h.ListSubmissions(ctx)
		})
	}
	before := ledger()
	for _, tc := range []struct {
		name  string
		frame any
		want  string // in the error
	}{
		{"request without id", `{"type":"cf_agent_use_chat_request","init":{"method":"POST","body":"{}"}}`, `field "id" must be a non-empty string`},
		{"request without init", `{"type":"cf_agent_use_chat_request","id":"b1"}`, `field "init" must be an object`},
		{"request with a GET", `{"type":"cf_agent_use_chat_request","id":"b2","init":{"method":"GET"}}`, `method "POST"`},
		{"body not JSON", `{"type":"cf_agent_use_chat_request","id":"b3","init":{"method":"POST","body":"{"}}`, "the body is not a JSON object"},
		{"unknown message id", chatRequest("b4", "submit-message", userMsg("nope", "?"), userMsg("u9", "hi")), `unknown message id "nope"`},
		{"no new message", chatRequest("b5", "submit-message", history), "no new user message"},
		{"new assistant message", chatRequest("b6", "submit-message", history, `{"id":"x","role":"assistant","parts":[{"type":"text","text":"hi"}]}`), "user messages only"},
		{"regenerate", chatRequest("b7", "regenerate-message", userMsg("u1", "Weather in Oslo?")), `trigger "regenerate-message" is not supported`},
		{"cancel without id", `{"type":"cf_agent_chat_request_cancel"}`, `field "id" must be a non-empty string`},
		{"cancel of an unknown request", `{"type":"cf_agent_chat_request_cancel","id":"zz"}`, `no chat request "zz"`},
		{"cancel of a finished turn", `{"type":"cf_agent_chat_request_cancel","id":"r1"}`, `chat request "r1" has already ended (completed)`},
		{"tool result for no call", `{"type":"cf_agent_tool_result","toolCallId":"nope","toolName":"x","output":1}`, `no tool call "nope" in the conversation`},
		{"tool result for a server tool", `{"type":"cf_agent_tool_result","toolCallId":"c1","toolName":"get_weather","output":1}`, `"c1" (get_weather) is run by the server`},
		{"approval for no call", `{"type":"cf_agent_tool_approval","toolCallId":"nope","approved":true}`, `no tool call "nope"`},
		{"messages with an unknown id", `{"type":"cf_agent_chat_messages","messages":[{"id":"zz","role":"user","parts":[]}]}`, `unknown message id "zz"`},
		{"messages not an array", `{"type":"cf_agent_chat_messages","messages":3}`, `field "messages" must be an array`},
		{"not a frame", `hello`, "unrecognized message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.send(tc.frame)
			fs := a.until("an error", func(f chatFrame) bool {
				return f.Type == "cf_agent_error" || (f.Type == "cf_agent_use_chat_response" && f.Error == true)
			})
			f := fs[len(fs)-1]
			msg := f.Body
			if f.Type == "cf_agent_error" {
				msg, _ = f.Error.(string)
			} else if !f.Done {
				t.Errorf("error response is not done: %s", f.raw)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
		})
	}
	after := ledger()
	if len(after) != len(before) {
		t.Errorf("the ledger had %d submissions, now %d: %+v", len(before), len(after), after)
	}
	got, err := agent.With(t.Context(), e.rt, "chat", func(ctx context.Context, h *Helper) ([]think.UIMessage, error) {
		return h.UIMessages(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if jsonOf(got) != jsonOf(snapshot) {
		t.Errorf("the conversation changed: %s", jsonOf(got))
	}
}

// Waiter is a Think class whose tool waits until its turn is cancelled,
// for the tests of a turn that is running.
type Waiter struct {
	think.Agent[struct{}]
}

type noArgs struct{}

// waiterEnv serves a Waiter whose model calls the wait tool and, were the
// tool to answer, says "done", on st (a new store when nil).
func waiterEnv(t *testing.T, st store.Store) (*env, *httptest.Server) {
	t.Helper()
	wait, err := think.NewTool("wait", "Waits until cancelled", func(ctx context.Context, _ noArgs) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{model: scripted.New(), store: st, setup: func(_ *workflow.Engine, rt *agent.Runtime) {
		think.MustRegister[Waiter](rt, "Waiter", think.Options{
			Model: scripted.New(scripted.Turn{Text: "Waiting.", Calls: []model.ToolCall{{ID: "w1", Name: "wait", Arguments: json.RawMessage(`{}`)}}}, scripted.Say("done")),
			Tools: []think.Tool{wait}})
	}})
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	return e, srv
}

// TestChatResumeAndCancel: a client that connects while a turn streams is
// offered it, gets every chunk so far when it acks and the live ones
// after, none lost or twice; its cancel ends the turn for every client; a
// probe after the turn is answered idle.
func TestChatResumeAndCancel(t *testing.T) {
	t.Parallel()
	_, srv := waiterEnv(t, nil)
	a := dialChat(t, srv, "/agents/waiter/w")
	a.until("the conversation on connect", isType("cf_agent_chat_messages"))
	a.send(chatRequest("r1", "submit-message", userMsg("u1", "Wait.")))
	fa := a.until("the tool call", func(f chatFrame) bool { return f.chunkType() == "tool-input-available" })

	b := dialChat(t, srv, "/agents/waiter/w")
	fs := b.until("the offer of the running turn", isType("cf_agent_stream_resuming"))
	if f := fs[len(fs)-1]; f.ID != "r1" {
		t.Fatalf("offer %s", f.raw)
	}
	if m := fs[len(fs)-2]; m.Type != "cf_agent_chat_messages" || !m.Connect || len(m.Messages) == 0 || m.Messages[0].ID != "u1" {
		t.Fatalf("before the offer: %s", m.raw)
	}
	// As the client does after its handler is ready: a probe, answered
	// with the offer again, and the ack.
	b.send(map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p1"})
	fs = b.until("the probe's answer", isType("cf_agent_stream_resuming"))
	if f := fs[len(fs)-1]; f.ProbeID != "p1" || f.ID != "r1" {
		t.Fatalf("probe answered %s", f.raw)
	}
	b.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": "r1"})
	fb := b.until("the end of the replay", func(f chatFrame) bool { return f.ReplayComplete })
	b.send(map[string]any{"type": "cf_agent_chat_request_cancel", "id": "r1"})

	fa = append(fa, a.until("the aborted end", isDone("r1"))...)
	fb = append(fb, b.until("the aborted end", isDone("r1"))...)
	ra, rb := response(fa, "r1"), response(fb, "r1")
	for _, r := range [][]chatFrame{ra, rb} {
		if end := r[len(r)-1]; end.Outcome != "aborted" {
			t.Errorf("end %s", end.raw)
		}
	}
	// b got every chunk a got, each once, in order: the replay, then the
	// live ones.
	var bodiesA, bodiesB []string
	for _, f := range ra[:len(ra)-1] {
		bodiesA = append(bodiesA, f.Body)
	}
	replayed := 0
	for i, f := range rb[:len(rb)-1] {
		if f.ReplayComplete {
			continue
		}
		if f.Replay {
			replayed++
		}
		if f.Seq == nil || *f.Seq != len(bodiesB) {
			t.Errorf("b's frame %d has seq %v", i, f.Seq)
		}
		bodiesB = append(bodiesB, f.Body)
	}
	if !slices.Equal(bodiesA, bodiesB) || replayed == 0 || bodiesA[len(bodiesA)-1] != `{"type":"abort"}` {
		t.Errorf("a got %v\nb got %v (%d replayed)", bodiesA, bodiesB, replayed)
	}

	c := dialChat(t, srv, "/agents/waiter/w")
	c.send(map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p2"})
	fs = c.until("the probe's answer", func(f chatFrame) bool { return strings.HasPrefix(f.Type, "cf_agent_stream_") })
	if f := fs[len(fs)-1]; f.Type != "cf_agent_stream_resume_none" || f.Reason != "idle" || f.ProbeID != "p2" {
		t.Errorf("probe after the turn answered %s", f.raw)
	}
	// A late ack of the ended turn gets its chunks and its end.
	c.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": "r1"})
	fs = c.until("the ended turn's replay", isDone("r1"))
	if end := fs[len(fs)-1]; end.Outcome != "aborted" || !end.Replay || len(response(fs, "r1")) != len(ra) {
		t.Errorf("late ack: %s", raws(fs))
	}
}

// TestChatAfterRestart: a node that stops mid-turn leaves the turn to
// recovery; a client of the node that takes over gets the conversation as
// stored, is told no turn streams, and learns how the cut-off request
// ended when it acks it.
func TestChatAfterRestart(t *testing.T) {
	t.Parallel()
	e, srv := waiterEnv(t, nil)
	a := dialChat(t, srv, "/agents/waiter/w")
	a.until("the conversation on connect", isType("cf_agent_chat_messages"))
	a.send(chatRequest("r1", "submit-message", userMsg("u1", "Wait.")))
	a.until("the tool call", func(f chatFrame) bool { return f.chunkType() == "tool-input-available" })
	srv.Close()
	e.stop()

	_, srv2 := waiterEnv(t, e.st)
	b := dialChat(t, srv2, "/agents/waiter/w")
	fs := b.until("the conversation on connect", isType("cf_agent_chat_messages"))
	if m := fs[len(fs)-1].Messages; len(m) != 1 || m[0].ID != "u1" {
		t.Fatalf("after the restart the conversation is %s", fs[len(fs)-1].raw)
	}
	// A probe is offered the cut-off request, so that a client that was
	// following it learns how it ended.
	b.send(map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p"})
	fs = b.until("the probe's answer", func(f chatFrame) bool { return strings.HasPrefix(f.Type, "cf_agent_stream_") })
	if f := fs[len(fs)-1]; f.Type != "cf_agent_stream_resuming" || f.ID != "r1" || f.ProbeID != "p" {
		t.Fatalf("probe after the restart answered %s", f.raw)
	}
	for _, f := range fs {
		if f.Type == "cf_agent_use_chat_response" {
			t.Errorf("a chunk of the cut-off turn after the restart: %s", f.raw)
		}
	}
	b.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": "r1"})
	fs = b.until("the cut-off request's end", isDone("r1"))
	if f := fs[len(fs)-1]; !f.Replay || f.Outcome != "error" || f.Error != true || !strings.Contains(f.Body, "cut off by a crash") {
		t.Errorf("ack of the cut-off request answered %s", f.raw)
	}
	// The requester kept what it was streamed of the cut-off turn, and
	// sends it back with its next message: the server named that message,
	// so it is no unknown id.
	b.send(chatRequest("r2", "submit-message", userMsg("u1", "Wait."),
		`{"id":"a_chat_r1","role":"assistant","parts":[{"type":"text","text":"Waiting."}]}`, userMsg("u2", "Again.")))
	fs = b.until("the next turn", func(f chatFrame) bool { return f.ID == "r2" })
	if f := fs[len(fs)-1]; f.chunkType() != "start" {
		t.Errorf("a request after the cut-off turn answered %s", f.raw)
	}
	s, err := e.st.GetSubmission(t.Context(), store.AgentKey{Class: "Waiter", Name: "w"}, "chat_r1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != store.SubmissionError {
		t.Errorf("the cut-off request's submission is %s, want error", s.Status)
	}
}
