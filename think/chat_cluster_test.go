package think_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// chatNode starts a node of a two-node cluster on st (a new store when
// nil) serving a Waiter, and returns it with its server.
func chatNode(t *testing.T, st store.Store) (*env, *httptest.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	wait, err := think.NewTool("wait", "Waits until cancelled", func(ctx context.Context, _ noArgs) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{model: scripted.New(), store: st, advertise: base + "/agents", secret: "chat-cluster-secret",
		setup: func(_ *workflow.Engine, rt *agent.Runtime) {
			think.MustRegister[Waiter](rt, "Waiter", think.Options{
				Model: scripted.New(scripted.Turn{Text: "Waiting.", Calls: []model.ToolCall{{ID: "w1", Name: "wait", Arguments: json.RawMessage(`{}`)}}}, scripted.Say("done")),
				Tools: []think.Tool{wait}})
		}})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: e.rt.Handler(agent.HandlerOptions{})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return e, srv
}

// TestChatThroughAnotherNode: the chat WebSocket reaches the agent through
// a node that forwards it to the agent's owner. A turn requested through
// that node streams to its client and to the owner's; a client that
// connects through it mid-turn resumes the stream, every chunk once, in
// order; its cancel ends the turn everywhere.
func TestChatThroughAnotherNode(t *testing.T) {
	t.Parallel()
	a, srvA := chatNode(t, nil)
	b, srvB := chatNode(t, a.st)

	// The agent goes live on a, where its first client connects.
	x := dialChat(t, srvA, "/agents/waiter/w")
	x.until("the conversation on connect", isType("cf_agent_chat_messages"))
	y := dialChat(t, srvB, "/agents/waiter/w")
	y.until("the conversation on connect, through b", isType("cf_agent_chat_messages"))
	if a.rt.Live() != 1 || b.rt.Live() != 0 {
		t.Fatalf("Live: a %d, b %d; want the agent on a alone", a.rt.Live(), b.rt.Live())
	}

	y.send(chatRequest("r1", "submit-message", userMsg("u1", "Wait.")))
	fy := y.until("the tool call, through b", func(f chatFrame) bool { return f.chunkType() == "tool-input-available" })
	fx := x.until("the tool call, on a", func(f chatFrame) bool { return f.chunkType() == "tool-input-available" })

	// z connects through b mid-turn: offered the turn, it acks and gets
	// the chunks so far, then the live ones.
	z := dialChat(t, srvB, "/agents/waiter/w")
	fs := z.until("the offer of the running turn", isType("cf_agent_stream_resuming"))
	if f := fs[len(fs)-1]; f.ID != "r1" {
		t.Fatalf("offer %s", f.raw)
	}
	z.send(map[string]any{"type": "cf_agent_stream_resume_ack", "id": "r1"})
	fz := z.until("the end of the replay", func(f chatFrame) bool { return f.ReplayComplete })
	z.send(map[string]any{"type": "cf_agent_chat_request_cancel", "id": "r1"})

	fx = append(fx, x.until("the aborted end, on a", isDone("r1"))...)
	fy = append(fy, y.until("the aborted end, through b", isDone("r1"))...)
	fz = append(fz, z.until("the aborted end, through b", isDone("r1"))...)
	var want []string
	for i, fs := range [][]chatFrame{fx, fy, fz} {
		r := response(fs, "r1")
		if end := r[len(r)-1]; end.Outcome != "aborted" {
			t.Errorf("client %d: end %s", i, end.raw)
		}
		var bodies []string
		for _, f := range r[:len(r)-1] {
			if f.ReplayComplete {
				continue
			}
			if f.Seq == nil || *f.Seq != len(bodies) {
				t.Errorf("client %d: chunk %d has seq %v: %s", i, len(bodies), f.Seq, f.raw)
			}
			bodies = append(bodies, f.Body)
		}
		if i == 0 {
			want = bodies
		} else if !slices.Equal(bodies, want) {
			t.Errorf("client %d got %v\nwant %v", i, bodies, want)
		}
	}
	if want[len(want)-1] != `{"type":"abort"}` {
		t.Errorf("the turn's chunks end with %s", want[len(want)-1])
	}
	s, err := a.st.GetSubmission(t.Context(), store.AgentKey{Class: "Waiter", Name: "w"}, "chat_r1")
	if err != nil || s.Status != store.SubmissionAborted {
		t.Fatalf("the request's submission: %+v, %v", s, err)
	}
	if a.rt.Live() != 1 || b.rt.Live() != 0 {
		t.Errorf("Live: a %d, b %d; want the agent on a alone", a.rt.Live(), b.rt.Live())
	}
}
