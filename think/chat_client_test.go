package think_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/nodetest"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// chatClientDir holds the Node project of the chat protocol's end-to-end
// test: package.json and package-lock.json pin @cloudflare/ai-chat, agents,
// ai, @ai-sdk/react, react and react-test-renderer; e2e.mjs drives them.
const chatClientDir = "chatclient"

// Talker is the Think class chatclient/e2e.mjs talks to.
type Talker struct {
	think.Agent[struct{}]
}

// talkerModel answers "wait" by calling the wait tool, and anything else by
// calling get_weather and then saying it is sunny.
func talkerModel() *scripted.Model {
	return scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		last := req.Messages[len(req.Messages)-1]
		switch {
		case last.Role == model.RoleTool && last.ToolName == "pick_color":
			return scripted.Say("You picked " + last.Content)
		case last.Role == model.RoleTool && last.ToolName == "delete_file":
			return scripted.Say("Done: " + last.Content)
		case last.Role == model.RoleTool:
			return scripted.Say("It is sunny in Oslo.")
		case strings.Contains(last.Content, "color"):
			return scripted.Call("pick_color", `{"hint":"sky"}`)
		case strings.Contains(last.Content, "delete"):
			return scripted.Call("delete_file", `{"path":"a.txt"}`)
		case strings.Contains(strings.ToLower(last.Content), "wait"):
			return scripted.Turn{Text: "Waiting.", Calls: []model.ToolCall{{Name: "wait", Arguments: json.RawMessage(`{}`)}}}
		}
		return scripted.Turn{Text: "Let me look.", Calls: []model.ToolCall{{Name: "get_weather", Arguments: json.RawMessage(`{"city":"Oslo"}`)}}}
	}})
}

// TestChatClient runs chatclient/e2e.mjs, which renders useAgentChat (with
// useAgent) of the pinned packages in Node against a real runtime on
// loopback: a message answered with a streamed text and a tool call, two
// clients seeing one conversation live, the history after reconnecting,
// a client that connects mid-turn resuming it and cancelling it, a client
// tool answered by onToolCall's addToolOutput, and an approval given and
// one refused with addToolApprovalResponse, each continuing the turn.
//
// It needs Node and npm, and installs the pinned packages with `npm ci`
// when chatclient/node_modules is missing. Without Node it is skipped,
// unless the CI environment variable is set: then it fails.
func TestChatClient(t *testing.T) {
	t.Parallel()
	nodetest.Install(t, chatClientDir)

	wait, err := think.NewTool("wait", "Waits until the turn is cancelled", func(ctx context.Context, _ noArgs) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	del, err := think.NewTool("delete_file", "Deletes a file", func(ctx context.Context, a deleteArgs) (string, error) {
		return "deleted " + a.Path, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	del.NeedsApproval = true
	var rt *agent.Runtime
	newEnvWith(t, envOptions{model: scripted.New(), setup: func(_ *workflow.Engine, r *agent.Runtime) {
		rt = r
		think.MustRegister[Talker](r, "Talker", think.Options{Model: talkerModel(), System: "You help.",
			Tools: []think.Tool{weatherTool(t), wait, del}})
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rt.Handler(agent.HandlerOptions{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()

	nodetest.Run(t, chatClientDir, 90*time.Second, "e2e.mjs", base, "e2e")

	// What the clients did is what the ledger holds.
	subs, err := agent.With(t.Context(), rt, "e2e", func(ctx context.Context, a *Talker) ([]think.SubmissionInfo, error) {
		return a.ListSubmissions(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []store.SubmissionStatus
	for _, s := range subs {
		if !strings.HasPrefix(s.ID, "chat_") {
			t.Errorf("submission %s is not a chat request's", s.ID)
		}
		got = append(got, s.Status)
	}
	// The client tool's result and the approval are submissions too.
	want := []store.SubmissionStatus{store.SubmissionCompleted, store.SubmissionCompleted, store.SubmissionAborted,
		store.SubmissionCompleted, store.SubmissionCompleted, store.SubmissionCompleted, store.SubmissionCompleted,
		store.SubmissionCompleted, store.SubmissionCompleted}
	if !slices.Equal(got, want) {
		t.Errorf("the ledger's statuses = %v, want %v", got, want)
	}
}
