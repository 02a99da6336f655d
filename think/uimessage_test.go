package think

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"agentflow/model"
	"agentflow/store"
)

// clientCapture is testdata/chat/client.json, written by
// chatclient/capture.mjs from the pinned AI SDK client.
type clientCapture struct {
	Versions map[string]string `json:"versions"`
	Turns    []struct {
		Sent struct {
			Trigger  string      `json:"trigger"`
			Messages []UIMessage `json:"messages"`
		} `json:"sent"`
		Chunks   []json.RawMessage `json:"chunks"`
		Messages []UIMessage       `json:"messages"`
	} `json:"turns"`
}

func loadCapture(t *testing.T) clientCapture {
	t.Helper()
	b, err := os.ReadFile("testdata/chat/client.json")
	if err != nil {
		t.Fatal(err)
	}
	var c clientCapture
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Versions["@cloudflare/ai-chat"] != "0.12.2" || c.Versions["ai"] != "6.0.333" {
		t.Fatalf("the capture is of %v, not the pinned packages", c.Versions)
	}
	return c
}

// sameJSON reports whether a and b encode the same JSON value.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	var x, y any
	for _, p := range []struct {
		v   any
		dst *any
	}{{a, &x}, {b, &y}} {
		raw, err := json.Marshal(p.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, p.dst); err != nil {
			t.Fatal(err)
		}
	}
	return reflect.DeepEqual(x, y)
}

func show(v any) string { b, _ := json.MarshalIndent(v, "", "  "); return string(b) }

// TestConverterMatchesClient stores the user messages the pinned client
// sent, as a chat request stores them, and the turns as the runner stores
// them (text, tool calls, a tool result, a tool error, reasoning), and
// checks that toUI gives exactly the messages the client assembled from
// the stream: so the snapshot a client gets after a turn is the message it
// streamed.
func TestConverterMatchesClient(t *testing.T) {
	c := loadCapture(t)
	if len(c.Turns) != 2 {
		t.Fatalf("capture has %d turns, want 2", len(c.Turns))
	}
	var rows []store.ConversationMessage
	row := func(sub string, m any) {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, store.ConversationMessage{Seq: int64(len(rows) + 1), SubmissionID: sub, Message: b})
	}
	// What each turn's runner stores (turn.go), by submission.
	turns := []struct {
		sub  string
		rows []storedMessage
	}{
		{"sub1", []storedMessage{
			{Message: model.Message{Role: model.RoleAssistant, ToolCalls: []model.ToolCall{
				{ID: "call_1", Name: "get_time", Arguments: json.RawMessage(`{"zone":"Asia/Tokyo"}`)}}}},
			{Message: model.Message{Role: model.RoleTool, ToolCallID: "call_1", ToolName: "get_time",
				Content: `{"zone":"Asia/Tokyo","time":"2026-01-02T12:00:00+09:00","weekday":"Friday"}`}},
			{Message: model.Message{Role: model.RoleAssistant, Content: "It is noon in Tokyo."}},
		}},
		{"sub2", []storedMessage{
			{Message: model.Message{Role: model.RoleAssistant, Content: "Adding.", ToolCalls: []model.ToolCall{
				{ID: "call_2", Name: "add", Arguments: json.RawMessage(`{"numbers":[]}`)}}}, Reasoning: "The user wants a sum."},
			{Message: model.Message{Role: model.RoleTool, ToolCallID: "call_2", ToolName: "add", IsError: true,
				Content: "add: give at least one number"}},
			{Message: model.Message{Role: model.RoleAssistant, Content: "The add tool failed."}},
		}},
	}
	for i, turn := range c.Turns {
		sent := turn.Sent.Messages[len(turn.Sent.Messages)-1]
		sm, err := fromUI(sent)
		if err != nil {
			t.Fatalf("turn %d: fromUI(%s): %v", i, show(sent), err)
		}
		if !strings.Contains(sm.Content, "?") && !strings.Contains(sm.Content, ".") {
			t.Errorf("turn %d: the model would see %q", i, sm.Content)
		}
		row(turns[i].sub, sm)
		for _, m := range turns[i].rows {
			row(turns[i].sub, m)
		}
		got, err := toUI(rows)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, got, turn.Messages) {
			t.Errorf("turn %d: toUI =\n%s\nthe client assembled\n%s", i, show(got), show(turn.Messages))
		}
	}
}

// TestChatStreamMatchesCapture feeds a turn's model events through
// chatStream and checks that it sends the chunks the capture gave the
// client (which the client assembled into the message toUI gives).
func TestChatStreamMatchesCapture(t *testing.T) {
	c := loadCapture(t)
	cs := newChatStream(&store.Submission{ID: "sub1"})
	var got []chunk
	add := func(cc []chunk) { got = append(got, cc...) }
	add(cs.start("sub1"))
	add(cs.startStep(0))
	call := model.ToolCall{ID: "call_1", Name: "get_time"}
	add(cs.event(model.Event{Kind: model.EventToolCallStart, Index: 0, ToolCall: call}))
	add(cs.event(model.Event{Kind: model.EventToolCallDelta, Index: 0, ArgumentsDelta: `{"zone":"Asia/Tokyo"}`}))
	call.Arguments = json.RawMessage(`{"zone":"Asia/Tokyo"}`)
	add(cs.event(model.Event{Kind: model.EventToolCallEnd, Index: 0, ToolCall: call}))
	add(cs.event(model.Event{Kind: model.EventUsage}))
	add(cs.event(model.Event{Kind: model.EventFinish, FinishReason: model.FinishToolCalls}))
	add(cs.result(model.Message{Role: model.RoleTool, ToolCallID: "call_1", ToolName: "get_time",
		Content: `{"zone":"Asia/Tokyo","time":"2026-01-02T12:00:00+09:00","weekday":"Friday"}`}))
	add(cs.endStep())
	add(cs.startStep(1))
	add(cs.event(model.Event{Kind: model.EventText, Text: "It is noon "}))
	add(cs.event(model.Event{Kind: model.EventText, Text: "in Tokyo."}))
	add(cs.event(model.Event{Kind: model.EventFinish, FinishReason: model.FinishStop}))
	add(cs.endStep())
	add(cs.finish(store.SubmissionCompleted, model.FinishStop))
	if !sameJSON(t, got, c.Turns[0].Chunks) {
		t.Errorf("chunks =\n%s\nthe capture has\n%s", show(got), show(c.Turns[0].Chunks))
	}
}

func TestFromUIRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, msg, want string
	}{
		{"no id", `{"role":"user","parts":[{"type":"text","text":"hi"}]}`, `without an "id"`},
		{"assistant", `{"id":"m","role":"assistant","parts":[{"type":"text","text":"hi"}]}`, "user messages only"},
		{"no parts", `{"id":"m","role":"user","parts":[]}`, "has no parts"},
		{"part without type", `{"id":"m","role":"user","parts":[{"text":"hi"}]}`, `part 0 is not an object with a string "type"`},
		{"text without text", `{"id":"m","role":"user","parts":[{"type":"text"}]}`, `text part 0 has no "text"`},
		{"file without url", `{"id":"m","role":"user","parts":[{"type":"file","mediaType":"text/plain"}]}`, `needs "url" and "mediaType"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m UIMessage
			if err := json.Unmarshal([]byte(tc.msg), &m); err != nil {
				t.Fatal(err)
			}
			_, err := fromUI(m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("fromUI(%s) = %v, want an error containing %q", tc.msg, err, tc.want)
			}
		})
	}
}

// TestToUIGoSubmitted: messages submitted from Go (no UI id) get ids made
// of their submission and place in it, the same before and after they
// reach the conversation; a tool result whose call is not shown is left
// out, and a result that is not JSON is shown as a string.
func TestToUIGoSubmitted(t *testing.T) {
	rows := []store.ConversationMessage{
		{Seq: 1, SubmissionID: "s1", Message: json.RawMessage(`{"role":"user","content":"hi"}`)},
		{Seq: 2, SubmissionID: "s1", Message: json.RawMessage(`{"role":"tool","toolCallId":"x","content":"orphan"}`)},
		{Seq: 3, SubmissionID: "s1", Message: json.RawMessage(`{"role":"assistant","toolCalls":[{"id":"c","name":"t","arguments":{}}]}`)},
		{Seq: 4, SubmissionID: "s1", Message: json.RawMessage(`{"role":"tool","toolCallId":"c","toolName":"t","content":"plain text"}`)},
		{Seq: 5, SubmissionID: "s1", Message: json.RawMessage(`{"role":"system","content":"hidden"}`)},
	}
	got, err := toUI(rows)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"id":"s1-0","role":"user","parts":[{"type":"text","text":"hi"}]},
		{"id":"a_s1","role":"assistant","parts":[{"type":"step-start"},
		{"type":"tool-t","toolCallId":"c","state":"output-available","input":{},"output":"plain text"}]}]`
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, got, w) {
		t.Errorf("toUI = %s, want %s", show(got), want)
	}
}

// TestToUIWaitingCalls: a call waiting for approval is shown as
// approval-requested with its approval id, then output-available (approved)
// or output-denied once answered; a client tool's waiting call is
// input-available; a continuation's answer is an assistant message of its
// own.
func TestToUIWaitingCalls(t *testing.T) {
	t.Parallel()
	call := `{"role":"assistant","toolCalls":[{"id":"d1","name":"del","arguments":{"p":1}},{"id":"d2","name":"del","arguments":{"p":2}},{"id":"k1","name":"pick","arguments":{}}],"await":{"d1":"approval","d2":"approval","k1":"client"}}`
	for _, tc := range []struct {
		name    string
		answers []string // rows of the answer submissions
		want    string   // the assistant message of s1
		more    string   // the messages after it, as JSON
	}{
		{"waiting", nil,
			`[{"type":"step-start"},
			{"type":"tool-del","toolCallId":"d1","state":"approval-requested","input":{"p":1},"approval":{"id":"ap_d1"}},
			{"type":"tool-del","toolCallId":"d2","state":"approval-requested","input":{"p":2},"approval":{"id":"ap_d2"}},
			{"type":"tool-pick","toolCallId":"k1","state":"input-available","input":{}}]`, ``},
		{"answered", []string{
			`{"role":"tool","toolCallId":"d1","toolName":"del","content":"\"gone\""}`,
			`{"role":"tool","toolCallId":"d2","toolName":"del","isError":true,"content":"denied","denied":true}`,
			`{"role":"tool","toolCallId":"k1","toolName":"pick","content":"{\"color\":\"red\"}"}`,
			`{"role":"assistant","content":"Done."}`},
			`[{"type":"step-start"},
			{"type":"tool-del","toolCallId":"d1","state":"output-available","input":{"p":1},"output":"gone","approval":{"id":"ap_d1","approved":true}},
			{"type":"tool-del","toolCallId":"d2","state":"output-denied","input":{"p":2},"approval":{"id":"ap_d2","approved":false}},
			{"type":"tool-pick","toolCallId":"k1","state":"output-available","input":{},"output":{"color":"red"}}]`,
			`{"id":"a_chat_tr_k1","role":"assistant","parts":[{"type":"step-start"},{"type":"text","text":"Done.","state":"done"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := []store.ConversationMessage{
				{Seq: 1, SubmissionID: "s1", Message: json.RawMessage(`{"role":"user","content":"go"}`)},
				{Seq: 2, SubmissionID: "s1", Message: json.RawMessage(call)},
			}
			for i, a := range tc.answers {
				rows = append(rows, store.ConversationMessage{Seq: int64(3 + i), SubmissionID: "chat_tr_k1", Message: json.RawMessage(a)})
			}
			got, err := toUI(rows)
			if err != nil {
				t.Fatal(err)
			}
			want := `[{"id":"s1-0","role":"user","parts":[{"type":"text","text":"go"}]},{"id":"a_s1","role":"assistant","parts":` + tc.want + `}`
			if tc.more != "" {
				want += "," + tc.more
			}
			want += "]"
			var w any
			if err := json.Unmarshal([]byte(want), &w); err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, got, w) {
				t.Errorf("toUI = %s\nwant %s", show(got), want)
			}
		})
	}
}

// TestCloseWaiting: a call without a result gets an error result for the
// model, right after its message's results; answered calls are kept as
// they are.
func TestCloseWaiting(t *testing.T) {
	t.Parallel()
	h := []model.Message{
		{Role: model.RoleUser, Content: "go"},
		{Role: model.RoleAssistant, ToolCalls: []model.ToolCall{{ID: "a", Name: "t"}, {ID: "b", Name: "u"}}},
		{Role: model.RoleTool, ToolCallID: "a", ToolName: "t", Content: "1"},
		{Role: model.RoleUser, Content: "next"},
	}
	got := closeWaiting(h)
	if len(got) != 5 || got[3].ToolCallID != "b" || !got[3].IsError || got[3].Content != errNoResult || got[4].Content != "next" || got[2].Content != "1" {
		t.Errorf("closeWaiting = %+v", got)
	}
	if again := closeWaiting(got); len(again) != 5 {
		t.Errorf("closeWaiting of a closed history added %d messages", len(again)-5)
	}
}
