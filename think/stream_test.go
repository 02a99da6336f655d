package think_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// thinkFrame is a cf_agent_think frame as a client receives it.
type thinkFrame struct {
	Type         string          `json:"type"`
	Event        string          `json:"event"`
	SubmissionID string          `json:"submissionId"`
	Step         int             `json:"step"`
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Delta        string          `json:"delta"`
	Arguments    json.RawMessage `json:"arguments"`
	Usage        *model.Usage    `json:"usage"`
	FinishReason string          `json:"finishReason"`
	Status       string          `json:"status"`
	Error        string          `json:"error"`
}

// TestStreamOverWebSocket connects a WebSocket client to a Think agent and
// checks that a turn with one tool round reaches it as cf_agent_think
// frames, in order, ending with done.
func TestStreamOverWebSocket(t *testing.T) {
	t.Parallel()
	m := scripted.New(
		scripted.Turn{Text: "Let me look.", Calls: []model.ToolCall{{ID: "c1", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Oslo"}`)}},
			Usage: model.Usage{InputTokens: 10, OutputTokens: 7}},
		scripted.Say("It is sunny in Oslo."),
	)
	e := newEnv(t, m, nil)
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/agents/helper/ws1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// The connection is counted once the runtime has registered it for
	// broadcasts.
	deadline := time.Now().Add(5 * time.Second)
	for with(t, e, "ws1", func(ctx context.Context, h *Helper) (int, error) { return len(h.Connections()), nil }) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the WebSocket connection never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}

	res := with(t, e, "ws1", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("Weather in Oslo?"), think.SubmitOptions{SubmissionID: "s1"})
	})
	if !res.Accepted {
		t.Fatalf("submit = %+v", res)
	}

	var frames []thinkFrame
	for {
		_, raw, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d think frames: %v", len(frames), err)
		}
		var f thinkFrame
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("frame %s: %v", raw, err)
		}
		if f.Type != "cf_agent_think" {
			continue // identity and state frames
		}
		if f.SubmissionID != "s1" {
			t.Errorf("frame %s names submission %q", raw, f.SubmissionID)
		}
		frames = append(frames, f)
		if f.Event == "done" {
			break
		}
	}
	var seq []string
	for _, f := range frames {
		seq = append(seq, fmt.Sprintf("%d:%s", f.Step, f.Event))
	}
	want := []string{
		"0:text", "0:tool_call_start", "0:tool_call_delta", "0:tool_call_end", "0:usage", "0:finish",
		"1:text", "1:usage", "1:finish",
		"0:done",
	}
	if !slices.Equal(seq, want) {
		t.Fatalf("frames = %v, want %v", seq, want)
	}
	f := frames
	if f[0].Text != "Let me look." || f[6].Text != "It is sunny in Oslo." {
		t.Errorf("text deltas %q, %q", f[0].Text, f[6].Text)
	}
	if f[1].ID != "c1" || f[1].Name != "get_weather" || f[1].Index != 0 {
		t.Errorf("tool_call_start = %+v", f[1])
	}
	if f[2].Delta != `{"city":"Oslo"}` {
		t.Errorf("tool_call_delta = %+v", f[2])
	}
	if f[3].ID != "c1" || string(f[3].Arguments) != `{"city":"Oslo"}` {
		t.Errorf("tool_call_end = %+v (arguments %s)", f[3], f[3].Arguments)
	}
	if f[4].Usage == nil || *f[4].Usage != (model.Usage{InputTokens: 10, OutputTokens: 7}) {
		t.Errorf("usage = %+v", f[4].Usage)
	}
	if f[5].FinishReason != string(model.FinishToolCalls) || f[8].FinishReason != string(model.FinishStop) {
		t.Errorf("finish reasons %q, %q", f[5].FinishReason, f[8].FinishReason)
	}
	if done := f[9]; done.Status != string(store.SubmissionCompleted) || done.Error != "" {
		t.Errorf("done = %+v", done)
	}
	// The done frame is sent after the end is durable.
	s := with(t, e, "ws1", func(ctx context.Context, h *Helper) (think.SubmissionInfo, error) {
		return h.InspectSubmission(ctx, "s1")
	})
	if s.Status != store.SubmissionCompleted || s.Usage.InputTokens != 20 {
		t.Errorf("submission after done = %+v", s)
	}
}

// Planner is a Think class whose BeforeTurn hook reshapes each turn.
type Planner struct {
	think.Agent[struct{}]
}

type clockArgs struct {
	Zone string `json:"zone"`
}

var clockTool = func() think.Tool {
	tool, err := think.NewTool("get_time", "The time in a zone",
		func(ctx context.Context, a clockArgs) (string, error) { return "12:00 in " + a.Zone, nil })
	if err != nil {
		panic(err)
	}
	return tool
}()

var plannerTemperature = 0.25

// BeforeTurn: a submission whose first message says "remove" drops the
// registered tools (which fails the turn); any other gets a new system
// prompt, the clock tool, only the clock tool active, a forced call of it,
// two steps and a temperature.
func (p *Planner) BeforeTurn(ctx context.Context, s think.SubmissionInfo, c *think.TurnConfig) error {
	if s.Messages[0].Content == "remove" {
		c.Tools = nil
		return nil
	}
	c.System = "You plan. (" + s.ID + ")"
	c.Tools = append(c.Tools, clockTool)
	c.ActiveTools = []string{"get_time"}
	c.ToolChoice = model.ToolChoice{Mode: model.ToolChoiceTool, Name: "get_time"}
	c.MaxSteps = 2
	c.Temperature = &plannerTemperature
	return nil
}

func TestBeforeTurn(t *testing.T) {
	t.Parallel()
	m := scripted.New(scripted.Call("get_time", `{"zone":"Europe/Oslo"}`), scripted.Say("It is noon."))
	rt := startRuntime(t, func(rt *agent.Runtime) {
		think.MustRegister[Planner](rt, "Planner", think.Options{Model: m, System: "You help.", Tools: []think.Tool{weatherTool(t)}})
	})
	submit := func(id, text string) think.SubmissionInfo {
		t.Helper()
		_, err := agent.With(t.Context(), rt, "p1", func(ctx context.Context, p *Planner) (think.SubmitResult, error) {
			return p.SubmitMessages(ctx, user(text), think.SubmitOptions{SubmissionID: id})
		})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, err := agent.With(t.Context(), rt, "p1", func(ctx context.Context, p *Planner) (think.SubmissionInfo, error) {
				return p.InspectSubmission(ctx, id)
			})
			if err != nil {
				t.Fatal(err)
			}
			if s.Status.Finished() {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("submission %s still %s", id, s.Status)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	s := submit("plan1", "What time is it in Oslo?")
	if s.Status != store.SubmissionCompleted || string(s.Output) != `{"finish":"answered","text":"It is noon."}` {
		t.Fatalf("plan1 = %+v", s)
	}
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("model got %d requests, want 2", len(reqs))
	}
	for i, req := range reqs {
		var names []string
		for _, tool := range req.Tools {
			names = append(names, tool.Name)
		}
		if req.System != "You plan. (plan1)" {
			t.Errorf("request %d: system %q", i, req.System)
		}
		if !slices.Equal(names, []string{"get_time"}) {
			t.Errorf("request %d: tools %v, want only the added get_time (ActiveTools)", i, names)
		}
		if req.ToolChoice != (model.ToolChoice{Mode: model.ToolChoiceTool, Name: "get_time"}) {
			t.Errorf("request %d: tool choice %+v", i, req.ToolChoice)
		}
		if req.Temperature == nil || *req.Temperature != plannerTemperature {
			t.Errorf("request %d: temperature %v", i, req.Temperature)
		}
	}
	if len(reqs[0].Tools) == 1 && !strings.Contains(string(reqs[0].Tools[0].Parameters), `"zone"`) {
		t.Errorf("get_time's schema %s", reqs[0].Tools[0].Parameters)
	}
	// The added tool ran: its result is in the second request's history.
	if msgs := reqs[1].Messages; len(msgs) != 3 || msgs[2].Role != model.RoleTool || msgs[2].Content != `"12:00 in Europe/Oslo"` {
		t.Errorf("second request's messages = %+v", msgs)
	}

	// Removing tools fails the turn with a clear error, before any model call.
	bad := submit("plan2", "remove")
	if bad.Status != store.SubmissionError || !strings.Contains(bad.Error, "BeforeTurn: tools may be added, not removed") {
		t.Errorf("plan2 = %s %q, want error about removed tools", bad.Status, bad.Error)
	}
	if n := len(m.Requests()); n != 2 {
		t.Errorf("the model was called %d times in all, want 2 (none for the failed turn)", n)
	}
}

// startRuntime starts an engine and a runtime on a fresh SQLite store with
// the classes register registers, stopped when the test ends.
func startRuntime(t *testing.T, register func(*agent.Runtime)) *agent.Runtime {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "think.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	register(rt)
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Stop(sctx)
		eng.Stop(sctx)
	})
	return rt
}
