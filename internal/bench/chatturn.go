package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/think"
	"agentflow/workflow"
)

// This file is the chat-turn scenario: one Think agent on the scripted
// model, an HTTP server on loopback and one WebSocket client, which runs
// the same scripted turn (text, a tool call, its result, text) alternately
// over the @cloudflare/ai-chat chat protocol (cf_agent_use_chat_request →
// cf_agent_use_chat_response chunks) and over the cf_agent_think path (an
// rpc call of ask → cf_agent_think frames), one turn at a time, and times
// the first streamed frame and the turn's end frame of each.

const chatterClass = "BenchChatter"

// chatter is chat-turn's class. Both paths run on it: every turn streams
// both kinds of frame to every client.
type chatter struct {
	think.Agent[struct{}]
}

// Ask submits text as submission id, as a client's rpc call does on the
// cf_agent_think path (the Assistant's ask, with the id chosen by the
// client so that it knows which frames are its turn's before the reply).
func (a *chatter) Ask(ctx context.Context, id, text string) (string, error) {
	r, err := a.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: text}}, think.SubmitOptions{SubmissionID: id})
	if err != nil {
		return "", err
	}
	if !r.Accepted {
		return "", fmt.Errorf("submission %s was not accepted: %s", id, r.Submission.Status)
	}
	return r.Submission.ID, nil
}

// chatTurnModel answers every turn with a text delta and a call of lookup,
// then, given the tool's result, a text delta: two model steps.
func chatTurnModel() *scripted.Model {
	call := scripted.Turn{Text: "Let me look that up.",
		Calls: []model.ToolCall{{Name: "lookup", Arguments: json.RawMessage(`{"q":"x"}`)}},
		Usage: model.Usage{InputTokens: 10, OutputTokens: 5}}
	return toolLoopModel(call, scripted.Say("It is 42."))
}

// chatTurnFrame is the part of any server frame chat-turn reads.
type chatTurnFrame struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	SubmissionID string            `json:"submissionId"`
	Event        string            `json:"event"`
	Status       string            `json:"status"`
	Done         bool              `json:"done"`
	Body         string            `json:"body"`
	Outcome      string            `json:"outcome"`
	Success      *bool             `json:"success"`
	Error        json.RawMessage   `json:"error"`
	Messages     []json.RawMessage `json:"messages"`
}

// chatTurnTiming is one measured turn: from the request frame's write to
// the first frame streamed of the turn, to the first text delta, and to
// the turn's end frame.
type chatTurnTiming struct {
	first, firstText, end time.Duration
}

// chatClearEvery is how many pairs of turns run between two clears of the
// conversation (untimed), so that it stays short: each turn's requests
// and broadcasts carry the conversation, and the figures are to be of a
// turn, not of a conversation grown by the run.
const chatClearEvery = 10

func (r *runner) chatTurn(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	rig, closeRig, err := r.openAgents(ctx, agent.Options{IdleTimeout: time.Hour}, func(rt *agent.Runtime, _ *workflow.Engine) error {
		lookup, err := think.NewTool("lookup", "Looks something up",
			func(_ context.Context, a lookupArgs) (map[string]string, error) {
				return map[string]string{"q": a.Q, "a": "42"}, nil
			})
		if err != nil {
			return err
		}
		return think.Register[chatter](rt, chatterClass, think.Options{Model: chatTurnModel(), System: "You look things up.",
			Tools: []think.Tool{lookup}, Class: agent.ClassOptions{Callable: []string{"ask"}}})
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeRig()) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: rig.rt.Handler(agent.HandlerOptions{}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	url := "ws://" + ln.Addr().String() + "/agents/" + agent.Kebab(chatterClass) + "/c"
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	cancel()
	if err != nil {
		return nil, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)

	read := func(ctx context.Context) (chatTurnFrame, []byte, error) {
		var f chatTurnFrame
		_, b, err := ws.Read(ctx)
		if err != nil {
			return f, nil, err
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return f, b, fmt.Errorf("frame %q: %w", b, err)
		}
		if f.Type == "cf_agent_error" {
			return f, b, fmt.Errorf("the server answered with an error: %s", b)
		}
		return f, b, nil
	}
	write := func(ctx context.Context, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return ws.Write(ctx, websocket.MessageText, b)
	}
	// The conversation on connect: the agent is active.
	for {
		f, _, err := read(ctx)
		if err != nil {
			return nil, fmt.Errorf("waiting for the conversation on connect: %w", err)
		}
		if f.Type == "cf_agent_chat_messages" {
			break
		}
	}

	// turn runs one turn on either path and waits, beyond the end frame
	// it times, for everything the turn sends (the other protocol's end
	// frame, the conversation after it, the rpc reply), so that the next
	// turn starts on a quiet agent.
	turn := func(ctx context.Context, chat bool, i int) (t chatTurnTiming, err error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var req any
		var sid, reqID string // the submission; the chat response frames' id
		replied := chat       // the rpc reply (none on the chat path)
		if chat {
			reqID = "c" + strconv.Itoa(i)
			sid = "chat_" + reqID
			body := fmt.Sprintf(`{"messages":[{"id":"u%d","role":"user","parts":[{"type":"text","text":"look up x"}]}],"trigger":"submit-message"}`, i)
			req = map[string]any{"type": "cf_agent_use_chat_request", "id": reqID, "init": map[string]any{"method": "POST", "body": body}}
		} else {
			sid = "think_" + strconv.Itoa(i)
			reqID = sid // a submission not from a chat request streams under its own id
			req = map[string]any{"type": "rpc", "id": "k" + strconv.Itoa(i), "method": "ask", "args": []any{sid, "look up x"}}
		}
		var chatEnd, thinkEnd, snapshot bool
		start := time.Now()
		if err := write(ctx, req); err != nil {
			return t, err
		}
		for !(chatEnd && thinkEnd && snapshot && replied) {
			f, raw, err := read(ctx)
			if err != nil {
				return t, fmt.Errorf("turn %s: %w", sid, err)
			}
			at := time.Since(start)
			switch {
			case f.Type == "cf_agent_use_chat_response" && f.ID == reqID:
				if chat && t.first == 0 {
					t.first = at
				}
				if f.Done {
					if f.Outcome != "completed" {
						return t, fmt.Errorf("turn %s ended: %s", sid, raw)
					}
					chatEnd = true
					if chat {
						t.end = at
					}
				} else if chat && t.firstText == 0 {
					var c struct{ Type string }
					if json.Unmarshal([]byte(f.Body), &c) == nil && c.Type == "text-delta" {
						t.firstText = at
					}
				}
			case f.Type == "cf_agent_think" && f.SubmissionID == sid:
				if !chat && t.first == 0 {
					t.first = at
				}
				if !chat && t.firstText == 0 && f.Event == "text" {
					t.firstText = at
				}
				if f.Event == "done" {
					if f.Status != "completed" {
						return t, fmt.Errorf("turn %s ended: %s", sid, raw)
					}
					thinkEnd = true
					if !chat {
						t.end = at
					}
				}
			case f.Type == "cf_agent_chat_messages" && chatEnd:
				snapshot = true // sent after the chat end frame
			case f.Type == "rpc" && !chat:
				if f.Success == nil || !*f.Success {
					return t, fmt.Errorf("ask %s: %s", sid, raw)
				}
				replied = true
			}
		}
		if t.first == 0 || t.firstText == 0 || t.end == 0 {
			return t, fmt.Errorf("turn %s: a frame timed is missing (%+v)", sid, t)
		}
		return t, nil
	}
	clearConv := func(ctx context.Context) error {
		if err := write(ctx, map[string]string{"type": "cf_agent_chat_clear"}); err != nil {
			return err
		}
		for {
			f, _, err := read(ctx)
			if err != nil {
				return fmt.Errorf("clearing the conversation: %w", err)
			}
			if f.Type == "cf_agent_chat_messages" && len(f.Messages) == 0 {
				return nil
			}
		}
	}
	pair := func(ctx context.Context, i int) (c, k chatTurnTiming, err error) {
		if i%chatClearEvery == 0 {
			if err := clearConv(ctx); err != nil {
				return c, k, err
			}
		}
		if c, err = turn(ctx, true, i); err != nil {
			return c, k, err
		}
		k, err = turn(ctx, false, i)
		return c, k, err
	}

	warm := max(cfg.ChatTurns/10, 5)
	for i := range warm {
		if _, _, err := pair(ctx, i); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	r.progress("warm after %d pairs; %d turns over the chat protocol and %d over cf_agent_think, alternately, one at a time", warm, cfg.ChatTurns, cfg.ChatTurns)
	n := cfg.ChatTurns
	var cFirst, cText, cEnd, kFirst, kText, kEnd []float64
	start := time.Now()
	for i := range n {
		c, k, err := pair(ctx, warm+i)
		if err != nil {
			return nil, err
		}
		cFirst, cText, cEnd = append(cFirst, ms(c.first)), append(cText, ms(c.firstText)), append(cEnd, ms(c.end))
		kFirst, kText, kEnd = append(kFirst, ms(k.first)), append(kText, ms(k.firstText)), append(kEnd, ms(k.end))
	}
	r.progress("%d pairs of turns in %s", n, time.Since(start).Round(time.Millisecond))
	_ = ws.Close(websocket.StatusNormalClosure, "")
	for _, s := range [][]float64{cFirst, cText, cEnd, kFirst, kText, kEnd} {
		slices.Sort(s)
	}
	return []Result{
		metric("chat_first_part_p50_ms", percentileSorted(cFirst, 50), "ms"),
		metric("chat_first_part_p99_ms", percentileSorted(cFirst, 99), "ms"),
		metric("chat_first_text_p50_ms", percentileSorted(cText, 50), "ms"),
		metric("chat_turn_p50_ms", percentileSorted(cEnd, 50), "ms"),
		metric("chat_turn_p99_ms", percentileSorted(cEnd, 99), "ms"),
		metric("think_first_part_p50_ms", percentileSorted(kFirst, 50), "ms"),
		metric("think_first_part_p99_ms", percentileSorted(kFirst, 99), "ms"),
		metric("think_first_text_p50_ms", percentileSorted(kText, 50), "ms"),
		metric("think_turn_p50_ms", percentileSorted(kEnd, 50), "ms"),
		metric("think_turn_p99_ms", percentileSorted(kEnd, 99), "ms"),
	}, nil
}
