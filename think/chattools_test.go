package think_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// Desk is the Think class of the client tool and approval tests: its
// delete_file tool needs approval, and its model calls the client tool
// pick_color when asked for a color.
type Desk struct {
	think.Agent[struct{}]
}

type deleteArgs struct {
	Path string `json:"path"`
}

// pickColor is the client tool the tests declare, as useAgentChat sends it.
const pickColor = `{"name":"pick_color","description":"Asks the user for a color","parameters":{"type":"object","properties":{"hint":{"type":"string"}}}}`

// deskModel calls delete_file when asked to delete, the client tool
// pick_color when asked for a color, and answers a tool result with
// "Done: <result>".
func deskModel() *scripted.Model {
	return scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		last := req.Messages[len(req.Messages)-1]
		switch {
		case last.Role == model.RoleTool:
			return scripted.Say("Done: " + last.Content)
		case strings.Contains(last.Content, "delete"):
			return scripted.Turn{Text: "Deleting.", Calls: []model.ToolCall{{ID: "d1", Name: "delete_file", Arguments: json.RawMessage(`{"path":"a.txt"}`)}}}
		case strings.Contains(last.Content, "color"):
			return scripted.Turn{Calls: []model.ToolCall{{ID: "k1", Name: "pick_color", Arguments: json.RawMessage(`{"hint":"sky"}`)}}}
		}
		return scripted.Say("Hello.")
	}})
}

// deskEnv serves a Desk on st (a new store when nil); deleted counts the
// runs of delete_file.
func deskEnv(t *testing.T, st store.Store, deleted *atomic.Int32, m *scripted.Model) (*env, *httptest.Server) {
	t.Helper()
	del, err := think.NewTool("delete_file", "Deletes a file", func(ctx context.Context, a deleteArgs) (string, error) {
		deleted.Add(1)
		return "deleted " + a.Path, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	del.NeedsApproval = true
	e := newEnvWith(t, envOptions{model: scripted.New(), store: st, setup: func(_ *workflow.Engine, rt *agent.Runtime) {
		think.MustRegister[Desk](rt, "Desk", think.Options{Model: m, Tools: []think.Tool{weatherTool(t), del}})
	}})
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	return e, srv
}

// withTools is a chat request whose body declares client tools.
func withTools(req map[string]any, tools ...string) map[string]any {
	init := req["init"].(map[string]any)
	body := init["body"].(string)
	init["body"] = strings.TrimSuffix(body, "}") + `,"clientTools":[` + strings.Join(tools, ",") + `]}`
	return req
}

// lastSnapshot reads frames until a conversation snapshot and returns it.
func lastSnapshot(c *chatClient, what string) []think.UIMessage {
	c.t.Helper()
	fs := c.until(what, isType("cf_agent_chat_messages"))
	return fs[len(fs)-1].Messages
}

// partOf returns the tool part of call id in msgs.
func partOf(t *testing.T, msgs []think.UIMessage, id string) map[string]any {
	t.Helper()
	for _, m := range msgs {
		for _, raw := range m.Parts {
			var p map[string]any
			_ = json.Unmarshal(raw, &p)
			if p["toolCallId"] == id {
				return p
			}
		}
	}
	t.Fatalf("no tool part of call %s in %s", id, jsonOf(msgs))
	return nil
}

// chunkTypes lists the chunk types of request id's response frames by
// seq: a chunk a client got live and again in a replay (a continuation it
// probed for after it had begun) counts once, as the client's ledger of
// applied seqs makes it.
func chunkTypes(fs []chatFrame, id string) []string {
	var out []string
	for _, f := range response(fs, id) {
		if f.Body == "" || f.Done || f.Seq == nil {
			continue
		}
		if *f.Seq < len(out) {
			if out[*f.Seq] != f.chunkType() {
				return append(out, "(seq "+fmt.Sprint(*f.Seq)+" was "+out[*f.Seq]+", now "+f.chunkType()+")")
			}
			continue
		}
		out = append(out, f.chunkType())
	}
	return out
}

// followContinuation does what useAgentChat does after it sent an answer
// with autoContinue: it probes for the continuation, acks the offer, and
// reads the stream to its end, which it returns.
func followContinuation(c *chatClient, id string) []chatFrame {
	c.t.Helper()
	c.send(map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p-" + id})
	fs := c.until("the continuation's offer", func(f chatFrame) bool {
		return f.ProbeID == "p-"+id && (f.Type == "cf_agent_stream_resuming" || f.Type == "cf_agent_stream_resume_none")
	})
	if f := fs[len(fs)-1]; f.Type != "cf_agent_stream_resuming" || f.ID != id {
		c.t.Fatalf("the continuation %s was not offered: %s", id, raws(fs))
	}
	c.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": id})
	fs = append(fs, c.until("the continuation's end", isDone(id))...)
	for _, f := range response(fs, id) {
		if !f.Replay && !f.Done && f.Body != "" {
			c.t.Errorf("a live chunk before the ack: %s", f.raw)
		}
		break
	}
	return fs
}

// finalSnapshot returns the first conversation snapshot of n messages
// among the frames read (fs) or, when there is none, read next: the one
// after a continuation, which may be sent before the client's probe is
// answered, and whose answer's own snapshot may come after it.
func finalSnapshot(c *chatClient, fs []chatFrame, n int) []think.UIMessage {
	c.t.Helper()
	is := func(f chatFrame) bool { return f.Type == "cf_agent_chat_messages" && len(f.Messages) == n }
	if i := slices.IndexFunc(fs, is); i >= 0 {
		return fs[i].Messages
	}
	fs = c.until("the conversation after the continuation", is)
	return fs[len(fs)-1].Messages
}

// expectError sends frame and checks the error frame it is answered with.
func expectError(t *testing.T, c *chatClient, frame any, want string) {
	t.Helper()
	c.send(frame)
	fs := c.until("an error", isType("cf_agent_error"))
	if msg, _ := fs[len(fs)-1].Error.(string); !strings.Contains(msg, want) {
		t.Errorf("error %q, want it to contain %q", msg, want)
	}
}

// TestChatClientTool: a client tool declared in the request is offered to
// the model; its call streams and waits; the client's result is stored
// through the ledger, shown to every client and, with autoContinue,
// continues the turn with an answer of its own. Bad answers are
// refused and change nothing.
func TestChatClientTool(t *testing.T) {
	t.Parallel()
	var deleted atomic.Int32
	m := deskModel()
	e, srv := deskEnv(t, nil, &deleted, m)
	a, b := dialChat(t, srv, "/agents/desk/d"), dialChat(t, srv, "/agents/desk/d")
	lastSnapshot(a, "the conversation on connect")
	lastSnapshot(b, "the conversation on connect")

	a.send(withTools(chatRequest("r1", "submit-message", userMsg("u1", "Pick a color.")), pickColor))
	fs := a.until("the turn's end", isDone("r1"))
	if got, want := chunkTypes(fs, "r1"), []string{"start", "start-step", "tool-input-start", "tool-input-delta", "tool-input-available", "finish-step", "finish"}; !slices.Equal(got, want) {
		t.Errorf("chunks = %v, want %v", got, want)
	}
	reqs := m.Requests()
	var offered []string
	for _, tl := range reqs[len(reqs)-1].Tools {
		offered = append(offered, tl.Name)
	}
	if !slices.Contains(offered, "pick_color") || !slices.Contains(offered, "delete_file") {
		t.Errorf("the model was offered %v", offered)
	}
	snap := lastSnapshot(a, "the conversation after the turn")
	if p := partOf(t, snap, "k1"); p["state"] != "input-available" || p["type"] != "tool-pick_color" {
		t.Errorf("the waiting call's part: %v", p)
	}

	// Bad answers first: each is refused, nothing changes.
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"zz","toolName":"pick_color","output":"red"}`, `no tool call "zz"`)
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"pick_color"}`, `field "output" is required`)
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"other","output":1}`, `a call of "pick_color", not of "other"`)
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"k1","output":1,"state":"weird"}`, `field "state" must be`)
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"k1","output":1,"autoContinue":"yes"}`, `field "autoContinue" must be a boolean`)
	expectError(t, a, `{"type":"cf_agent_tool_approval","toolCallId":"k1","approved":true}`, `needs no approval`)
	expectError(t, a, `{"type":"cf_agent_tool_result","output":1}`, `field "toolCallId" must be a non-empty string`)
	a.send(withTools(chatRequest("b1", "submit-message", userMsg("u9", "hi")), `{"name":"get_weather"}`))
	if f := a.until("the refusal", isDone("b1")); !strings.Contains(f[len(f)-1].Body, `"get_weather" is the name of a server tool`) {
		t.Errorf("a client tool named as a server tool: %s", f[len(f)-1].raw)
	}

	// The result, as useAgentChat's addToolOutput sends it, and the
	// continuation probe it starts.
	a.send(`{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"pick_color","output":{"color":"blue"},"autoContinue":true,"clientTools":[` + pickColor + `]}`)
	afs := followContinuation(a, "tr_k1")
	// (The continuation may run before the snapshot with the result is
	// sent: b's frames are read from here on.)
	fs = b.until("the continuation's end", isDone("tr_k1"))
	shown := func(f chatFrame) bool {
		return f.Type == "cf_agent_chat_messages" && strings.Contains(f.raw, `"state":"output-available","input":{"hint":"sky"},"output":{"color":"blue"}`)
	}
	bfs := fs
	if !slices.ContainsFunc(fs, shown) {
		bfs = append(bfs, b.until("the result, shown", shown)...)
	}
	for _, got := range [][]chatFrame{fs, afs} {
		resp := response(got, "tr_k1")
		if got, want := chunkTypes(got, "tr_k1"), []string{"start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish"}; !slices.Equal(got, want) {
			t.Errorf("continuation chunks = %v, want %v", got, want)
		}
		for _, f := range resp {
			if !strings.Contains(f.raw, `"continuation":true`) {
				t.Errorf("a continuation frame without continuation: %s", f.raw)
			}
		}
		if resp[0].Body != `{"type":"start","messageId":"a_chat_tr_k1"}` {
			t.Errorf("the continuation's start: %s", resp[0].raw)
		}
	}
	snap = finalSnapshot(b, bfs, 3)
	if len(snap) != 3 || snap[1].ID != "a_chat_r1" || snap[2].ID != "a_chat_tr_k1" {
		t.Fatalf("the conversation after the continuation: %s", jsonOf(snap))
	}
	parts := snap[2].Parts
	var last map[string]any
	_ = json.Unmarshal(parts[len(parts)-1], &last)
	if last["text"] != `Done: {"color":"blue"}` {
		t.Errorf("the assistant message ends with %v", last)
	}
	if got := m.Requests()[len(m.Requests())-1]; !slices.ContainsFunc(got.Tools, func(tl model.Tool) bool { return tl.Name == "pick_color" }) {
		t.Errorf("the continuation did not offer the client tool: %v", got.Tools)
	}

	// The call is answered: a second result is refused.
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"pick_color","output":"red"}`, `already answered`)
	expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"c1","output":"red"}`, `no tool call "c1"`)
	subs := withDesk(t, e, func(ctx context.Context, d *Desk) ([]think.SubmissionInfo, error) { return d.ListSubmissions(ctx) })
	var ids []string
	for _, s := range subs {
		ids = append(ids, s.ID+":"+string(s.Status))
	}
	if want := []string{"chat_r1:completed", "chat_tr_k1:completed"}; !slices.Equal(ids, want) {
		t.Errorf("the ledger: %v, want %v", ids, want)
	}
}

func withDesk[R any](t *testing.T, e *env, fn func(ctx context.Context, d *Desk) (R, error)) R {
	t.Helper()
	r, err := agent.With(t.Context(), e.rt, "d", fn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestChatApproval: a call of a tool that needs approval is not run; it
// waits, across a restart of the node; an approval runs it and continues
// the turn; a denial is recorded as the call's outcome and the model told.
func TestChatApproval(t *testing.T) {
	t.Parallel()
	for _, approve := range []bool{true, false} {
		name := map[bool]string{true: "approved", false: "denied"}[approve]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var deleted atomic.Int32
			e, srv := deskEnv(t, nil, &deleted, deskModel())
			a := dialChat(t, srv, "/agents/desk/d")
			lastSnapshot(a, "the conversation on connect")
			a.send(chatRequest("r1", "submit-message", userMsg("u1", "Please delete a.txt.")))
			fs := a.until("the turn's end", isDone("r1"))
			types := chunkTypes(fs, "r1")
			if i := slices.Index(types, "tool-approval-request"); i < 0 || types[i-1] != "tool-input-available" || slices.Contains(types, "tool-output-available") {
				t.Errorf("chunks %v: want tool-approval-request after tool-input-available and no output", types)
			}
			for _, f := range response(fs, "r1") {
				if f.chunkType() == "tool-approval-request" && f.Body != `{"type":"tool-approval-request","toolCallId":"d1","approvalId":"ap_d1"}` {
					t.Errorf("approval request %s", f.Body)
				}
			}
			p := partOf(t, lastSnapshot(a, "the conversation after the turn"), "d1")
			if ap, _ := p["approval"].(map[string]any); p["state"] != "approval-requested" || ap["id"] != "ap_d1" {
				t.Errorf("the waiting call's part: %v", p)
			}
			expectError(t, a, `{"type":"cf_agent_tool_result","toolCallId":"d1","output":1}`, `needs approval`)
			expectError(t, a, `{"type":"cf_agent_tool_approval","toolCallId":"zz","approved":true}`, `no tool call "zz"`)
			expectError(t, a, `{"type":"cf_agent_tool_approval","toolCallId":"d1"}`, `field "approved" must be a boolean`)

			// The node stops while the approval waits; the next serves it.
			srv.Close()
			e.stop()
			e2, srv2 := deskEnv(t, e.st, &deleted, deskModel())
			b := dialChat(t, srv2, "/agents/desk/d")
			if p := partOf(t, lastSnapshot(b, "the conversation after the restart"), "d1"); p["state"] != "approval-requested" {
				t.Fatalf("after the restart the call is %v", p)
			}
			b.send(map[string]any{"type": "cf_agent_tool_approval", "toolCallId": "d1", "approved": approve, "autoContinue": true})
			fs = followContinuation(b, "ap_d1")
			if got, want := chunkTypes(fs, "ap_d1"), []string{"start", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish"}; !slices.Equal(got, want) {
				t.Errorf("continuation chunks = %v, want %v", got, want)
			}
			snap := finalSnapshot(b, fs, 3)
			p = partOf(t, snap, "d1")
			ap, _ := p["approval"].(map[string]any)
			wantState := map[bool]string{true: "output-available", false: "output-denied"}[approve]
			if p["state"] != wantState || ap["approved"] != approve {
				t.Errorf("the answered call's part: %v, want state %s", p, wantState)
			}
			if n := deleted.Load(); n != map[bool]int32{true: 1, false: 0}[approve] {
				t.Errorf("delete_file ran %d times", n)
			}
			var last map[string]any
			wantText := map[bool]string{true: `Done: "deleted a.txt"`, false: "Done: The user denied this tool call; it was not run."}[approve]
			if len(snap) != 3 || snap[2].ID != "a_chat_ap_d1" {
				t.Fatalf("the conversation after the answer: %s", jsonOf(snap))
			}
			_ = json.Unmarshal(snap[2].Parts[len(snap[2].Parts)-1], &last)
			if last["text"] != wantText {
				t.Errorf("the conversation after the answer: %s", jsonOf(snap))
			}
			expectError(t, b, `{"type":"cf_agent_tool_approval","toolCallId":"d1","approved":true}`, `already answered`)
			expectError(t, b, `{"type":"cf_agent_chat_request_cancel","id":"ap_d1"}`, `has already ended (completed)`)
			subs := withDesk(t, e2, func(ctx context.Context, d *Desk) ([]think.SubmissionInfo, error) { return d.ListSubmissions(ctx) })
			var ids []string
			for _, s := range subs {
				ids = append(ids, s.ID+":"+string(s.Status))
			}
			if want := []string{"chat_r1:completed", "chat_ap_d1:completed"}; !slices.Equal(ids, want) {
				t.Errorf("the ledger: %v, want %v", ids, want)
			}
		})
	}
}

// TestChatToolResultSurvivesRestart: a client tool's result is stored
// through the ledger as it arrives; when the node stops while the
// continuation runs, the node that takes over has the result in the
// conversation (the call is answered, a second result is refused) and the
// cut-off continuation ended as error, not lost and not run twice.
func TestChatToolResultSurvivesRestart(t *testing.T) {
	t.Parallel()
	// asked is closed when the continuation calls the model: its messages
	// are in the conversation by then (the start chunk comes before).
	asked := make(chan struct{})
	var once sync.Once
	stalling := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		if last := req.Messages[len(req.Messages)-1]; last.Role == model.RoleTool {
			once.Do(func() { close(asked) })
			return scripted.Stall() // the continuation hangs until the node stops
		}
		return scripted.Turn{Calls: []model.ToolCall{{ID: "k1", Name: "pick_color", Arguments: json.RawMessage(`{"hint":"sky"}`)}}}
	}})
	var deleted atomic.Int32
	e, srv := deskEnv(t, nil, &deleted, stalling)
	a := dialChat(t, srv, "/agents/desk/d")
	lastSnapshot(a, "the conversation on connect")
	a.send(withTools(chatRequest("r1", "submit-message", userMsg("u1", "Pick a color.")), pickColor))
	a.until("the turn's end", isDone("r1"))
	a.send(`{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"pick_color","output":{"color":"blue"},"autoContinue":true}`)
	a.send(map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p"})
	a.until("the continuation's offer", func(f chatFrame) bool { return f.Type == "cf_agent_stream_resuming" && f.ID == "tr_k1" })
	a.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": "tr_k1"})
	a.until("the continuation's start", func(f chatFrame) bool { return f.ID == "tr_k1" && f.chunkType() == "start" })
	select {
	case <-asked:
	case <-time.After(20 * time.Second):
		t.Fatal("the continuation never called the model")
	}
	srv.Close()
	e.stop()

	e2, srv2 := deskEnv(t, e.st, &deleted, deskModel())
	b := dialChat(t, srv2, "/agents/desk/d")
	snap := lastSnapshot(b, "the conversation after the restart")
	if p := partOf(t, snap, "k1"); p["state"] != "output-available" || jsonOf(p["output"]) != `{"color":"blue"}` {
		t.Fatalf("after the restart the call is %v", p)
	}
	expectError(t, b, `{"type":"cf_agent_tool_result","toolCallId":"k1","toolName":"pick_color","output":"red"}`, `already answered`)
	subs := withDesk(t, e2, func(ctx context.Context, d *Desk) ([]think.SubmissionInfo, error) { return d.ListSubmissions(ctx) })
	var ids []string
	for _, s := range subs {
		ids = append(ids, s.ID+":"+string(s.Status))
	}
	if want := []string{"chat_r1:completed", "chat_tr_k1:error"}; !slices.Equal(ids, want) {
		t.Errorf("the ledger: %v, want %v", ids, want)
	}
}
