package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"agentflow/model"
	"agentflow/model/internal/wiretest"
)

const path = "/v1/messages"

func newProvider(t *testing.T, url string, retry model.Retry) *Provider {
	t.Helper()
	p, err := New(Options{BaseURL: url, APIKey: "sk-ant-test", Model: "claude-sonnet-4-5", Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var weatherTool = model.Tool{
	Name:        "get_weather",
	Description: "Current weather for a place.",
	Parameters:  json.RawMessage(`{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false}`),
}

func user(s string) model.Message { return model.Message{Role: model.RoleUser, Content: s} }

func TestWireStreams(t *testing.T) {
	t.Parallel()
	temp := 0.3
	forced := model.ToolChoice{Mode: model.ToolChoiceTool, Name: "think_final_answer"}
	cases := []struct {
		name    string
		file    string
		req     model.Request
		check   func(t *testing.T, body map[string]any)
		want    []string
		wantErr model.ErrorKind
	}{{
		name: "text, pings and usage",
		file: "text_usage.sse",
		req:  model.Request{System: "Be brief.", Messages: []model.Message{user("Hi")}, Temperature: &temp},
		check: func(t *testing.T, b map[string]any) {
			if got := wiretest.JSON(b["system"]); got != `[{"text":"Be brief.","type":"text"}]` {
				t.Errorf("system = %s", got)
			}
			if got := wiretest.JSON(b["messages"]); got != `[{"content":[{"text":"Hi","type":"text"}],"role":"user"}]` {
				t.Errorf("messages = %s", got)
			}
			if b["max_tokens"] != 4096.0 || b["temperature"] != 0.3 {
				t.Errorf("max_tokens %v temperature %v", b["max_tokens"], b["temperature"])
			}
			if _, ok := b["tools"]; ok {
				t.Error("tools sent without tools")
			}
		},
		want: []string{"text:Hello! How can I help?", "usage:325/15", "finish:stop"},
	}, {
		name: "tool_use streamed in pieces, with history",
		file: "tool_use_streamed.sse",
		req: model.Request{
			Messages: []model.Message{
				user("Weather in SF and Rome, and the time?"),
				{Role: model.RoleAssistant, Content: "Looking.", ToolCalls: []model.ToolCall{
					{ID: "toolu_rome", Name: "get_weather", Arguments: json.RawMessage(`{"location":"Rome"}`)},
					{ID: "toolu_time", Name: "get_time"},
				}},
				{Role: model.RoleTool, ToolCallID: "toolu_rome", ToolName: "get_weather", Content: `{"temp":21}`},
				{Role: model.RoleTool, ToolCallID: "toolu_time", ToolName: "get_time", Content: "clock broken", IsError: true},
				user("And SF?"),
			},
			Tools:      []model.Tool{weatherTool},
			ToolChoice: model.ToolChoice{Mode: model.ToolChoiceAuto},
			MaxTokens:  1000,
		},
		check: func(t *testing.T, b map[string]any) {
			want := `[{"content":[{"text":"Weather in SF and Rome, and the time?","type":"text"}],"role":"user"},` +
				`{"content":[{"text":"Looking.","type":"text"},{"id":"toolu_rome","input":{"location":"Rome"},"name":"get_weather","type":"tool_use"},{"id":"toolu_time","input":{},"name":"get_time","type":"tool_use"}],"role":"assistant"},` +
				`{"content":[{"content":[{"text":"{\"temp\":21}","type":"text"}],"tool_use_id":"toolu_rome","type":"tool_result"},{"content":[{"text":"clock broken","type":"text"}],"is_error":true,"tool_use_id":"toolu_time","type":"tool_result"},{"text":"And SF?","type":"text"}],"role":"user"}]`
			if got := wiretest.JSON(b["messages"]); got != want {
				t.Errorf("messages =\n%s\nwant\n%s", got, want)
			}
			wantTools := `[{"description":"Current weather for a place.","input_schema":{"additionalProperties":false,"properties":{"location":{"type":"string"}},"required":["location"],"type":"object"},"name":"get_weather"}]`
			if got := wiretest.JSON(b["tools"]); got != wantTools {
				t.Errorf("tools =\n%s\nwant\n%s", got, wantTools)
			}
			if got := wiretest.JSON(b["tool_choice"]); got != `{"type":"auto"}` {
				t.Errorf("tool_choice = %s", got)
			}
			if b["max_tokens"] != 1000.0 {
				t.Errorf("max_tokens = %v", b["max_tokens"])
			}
		},
		want: []string{
			"text:Okay, let's check the weather.",
			"start:0:toolu_01T1x1fJ34qAmk2tNTrN7Up6:get_weather",
			`args:0:{"location":"San Francisco, CA","unit":"fahrenheit"}`,
			`end:0:toolu_01T1x1fJ34qAmk2tNTrN7Up6:get_weather:{"location":"San Francisco, CA","unit":"fahrenheit"}`,
			"usage:472/89", "finish:tool_calls",
		},
	}, {
		name: "parallel tool_use blocks",
		file: "parallel_tool_use.sse",
		req:  model.Request{Messages: []model.Message{user("Paris?")}, Tools: []model.Tool{weatherTool}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceRequired}},
		check: func(t *testing.T, b map[string]any) {
			if got := wiretest.JSON(b["tool_choice"]); got != `{"type":"any"}` {
				t.Errorf("tool_choice = %s", got)
			}
		},
		want: []string{
			"start:0:toolu_01A:get_weather", `args:0:{"location": "Paris"}`, `end:0:toolu_01A:get_weather:{"location": "Paris"}`,
			"start:1:toolu_01B:get_time", `args:1:{"zone": "Europe/Paris"}`, `end:1:toolu_01B:get_time:{"zone": "Europe/Paris"}`,
			"usage:500/120", "finish:tool_calls",
		},
	}, {
		name: "empty input becomes {}",
		file: "empty_input.sse",
		req:  model.Request{Messages: []model.Message{user("time")}, Tools: []model.Tool{{Name: "get_time"}, {Name: "list_files"}}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceNone}},
		check: func(t *testing.T, b map[string]any) {
			if got := wiretest.JSON(b["tool_choice"]); got != `{"type":"none"}` {
				t.Errorf("tool_choice = %s", got)
			}
			if got := wiretest.JSON(wiretest.Get(b, "tools", 0, "input_schema")); got != `{"properties":{},"type":"object"}` {
				t.Errorf("input_schema = %s", got)
			}
		},
		want: []string{
			"start:0:toolu_01Now:get_time", "end:0:toolu_01Now:get_time:{}",
			"start:1:toolu_01List:list_files", "end:1:toolu_01List:list_files:{}",
			"usage:300/40", "finish:tool_calls",
		},
	}, {
		name: "whole input in content_block_start",
		file: "whole_call_in_start.sse",
		req:  model.Request{Messages: []model.Message{user("search")}, Tools: []model.Tool{{Name: "search"}}},
		want: []string{
			"start:0:toolu_01Search:search", `args:0:{"query":"go iterators","limit":3}`,
			`end:0:toolu_01Search:search:{"query":"go iterators","limit":3}`,
			"usage:300/30", "finish:tool_calls",
		},
	}, {
		name: "forced call ending with end_turn",
		file: "forced_call_end_turn.sse",
		req:  model.Request{Messages: []model.Message{user("answer")}, Tools: []model.Tool{{Name: "think_final_answer"}}, ToolChoice: forced},
		check: func(t *testing.T, b map[string]any) {
			if got := wiretest.JSON(b["tool_choice"]); got != `{"name":"think_final_answer","type":"tool"}` {
				t.Errorf("tool_choice = %s", got)
			}
		},
		want: []string{
			"start:0:toolu_01Final:think_final_answer", `args:0:{"answer":"42","confidence":0.9}`,
			`end:0:toolu_01Final:think_final_answer:{"answer":"42","confidence":0.9}`,
			"usage:700/33", "finish:stop",
		},
	}, {
		name: "text instead of a forced call",
		file: "forced_call_text_instead.sse",
		req:  model.Request{Messages: []model.Message{user("answer")}, Tools: []model.Tool{{Name: "think_final_answer"}}, ToolChoice: forced},
		want: []string{"text:The answer is 42.", "usage:700/9", "finish:stop"},
	}, {
		name: "input cut off by max_tokens",
		file: "max_tokens_truncated.sse",
		req:  model.Request{Messages: []model.Message{user("write")}, Tools: []model.Tool{{Name: "write_file"}}, MaxTokens: 16},
		want: []string{
			"start:0:toolu_01Write:write_file", `args:0:{"path": "notes.md", "content": "Once upon`,
			"invalid:0:toolu_01Write:write_file:arguments are not valid JSON (truncated?)",
			"usage:50/16", "finish:length",
		},
	}, {
		name: "stream cut off mid-input",
		file: "truncated_eof.sse",
		req:  model.Request{Messages: []model.Message{user("weather")}, Tools: []model.Tool{weatherTool}},
		want: []string{
			"start:0:toolu_01Cut:get_weather", `args:0:{"location": "Par`,
			"invalid:0:toolu_01Cut:get_weather:stream ended before the call was complete",
		},
		wantErr: model.ErrorTransient,
	}, {
		name:    "overloaded error event inside the stream",
		file:    "stream_error.sse",
		req:     model.Request{Messages: []model.Message{user("hi")}},
		want:    []string{"text:Partial"},
		wantErr: model.ErrorTransient,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wiretest.NewServer(t, path, wiretest.Reply{SSEFile: filepath.Join("testdata", tc.file)})
			p := newProvider(t, srv.URL, model.Retry{Attempts: 3, MinDelay: time.Millisecond})
			evs, err := wiretest.Drain(p.Stream(context.Background(), tc.req))
			if got := model.KindOf(err); got != tc.wantErr {
				t.Fatalf("error = %v (kind %q), want kind %q", err, got, tc.wantErr)
			}
			wiretest.CheckOrder(t, evs)
			if got := wiretest.Render(evs); !slices.Equal(got, tc.want) {
				t.Errorf("events:\n%q\nwant\n%q", got, tc.want)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1 (no retry after events)", len(reqs))
			}
			b := reqs[0]
			if b["model"] != "claude-sonnet-4-5" || b["stream"] != true {
				t.Errorf("model %v stream %v", b["model"], b["stream"])
			}
			h := srv.Headers()[0]
			if h.Get("X-Api-Key") != "sk-ant-test" || h.Get("Anthropic-Version") == "" {
				t.Errorf("headers: x-api-key %q anthropic-version %q", h.Get("X-Api-Key"), h.Get("Anthropic-Version"))
			}
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
}

func errBody(typ, msg string) string {
	return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`
}

func TestErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		reply  wiretest.Reply
		kind   model.ErrorKind
		status int
	}{
		{"429", wiretest.Reply{Status: 429, Body: errBody("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")}, model.ErrorRateLimit, 429},
		{"500", wiretest.Reply{Status: 500, Body: errBody("api_error", "Internal server error")}, model.ErrorTransient, 500},
		{"529 overloaded", wiretest.Reply{Status: 529, Body: errBody("overloaded_error", "Overloaded")}, model.ErrorTransient, 529},
		{"400 prompt is too long", wiretest.Reply{Status: 400, Body: errBody("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum")}, model.ErrorContextOverflow, 400},
		{"400 context window", wiretest.Reply{Status: 400, Body: errBody("invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length or `max_tokens` and try again; the context window is 200000")}, model.ErrorContextOverflow, 400},
		{"400 other", wiretest.Reply{Status: 400, Body: errBody("invalid_request_error", "tools.0.input_schema: JSON schema is invalid")}, model.ErrorFatal, 400},
		{"401", wiretest.Reply{Status: 401, Body: errBody("authentication_error", "invalid x-api-key")}, model.ErrorFatal, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wiretest.NewServer(t, path, tc.reply)
			p := newProvider(t, srv.URL, model.Retry{})
			_, err := wiretest.Drain(p.Stream(context.Background(), model.Request{Messages: []model.Message{user("hi")}}))
			var me *model.Error
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a *model.Error", err)
			}
			if me.Kind != tc.kind || me.Status != tc.status || me.Provider != "anthropic" {
				t.Errorf("error = %v (kind %s, status %d)", err, me.Kind, me.Status)
			}
			if n := len(srv.Requests()); n != 1 {
				t.Errorf("%d requests: the SDK retried", n)
			}
		})
	}
	t.Run("transport error", func(t *testing.T) {
		t.Parallel()
		srv := wiretest.NewServer(t, path, wiretest.Reply{})
		url := srv.URL
		srv.Close()
		p := newProvider(t, url, model.Retry{})
		_, err := wiretest.Drain(p.Stream(context.Background(), model.Request{Messages: []model.Message{user("hi")}}))
		if model.KindOf(err) != model.ErrorTransient {
			t.Errorf("error = %v, want transient", err)
		}
	})
}

func TestRetry(t *testing.T) {
	t.Parallel()
	ok := wiretest.Reply{SSEFile: "testdata/text_usage.sse"}
	cases := []struct {
		name     string
		replies  []wiretest.Reply
		requests int
		kind     model.ErrorKind
	}{
		{"429 then 529 then success", []wiretest.Reply{
			{Status: 429, Header: map[string]string{"Retry-After": "0"}, Body: errBody("rate_limit_error", "slow down")},
			{Status: 529, Body: errBody("overloaded_error", "Overloaded")},
			ok,
		}, 3, ""},
		{"400 is not retried", []wiretest.Reply{{Status: 400, Body: errBody("invalid_request_error", "bad")}, ok}, 1, model.ErrorFatal},
		{"no retry after events", []wiretest.Reply{{SSEFile: "testdata/stream_error.sse"}, ok}, 1, model.ErrorTransient},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wiretest.NewServer(t, path, tc.replies...)
			p := newProvider(t, srv.URL, model.Retry{Attempts: 3, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
			_, err := wiretest.Drain(p.Stream(context.Background(), model.Request{Messages: []model.Message{user("hi")}}))
			if model.KindOf(err) != tc.kind {
				t.Errorf("error = %v, want kind %q", err, tc.kind)
			}
			if n := len(srv.Requests()); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
		})
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	p, err := New(Options{BaseURL: "http://127.0.0.1:1", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []model.Request{
		{ToolChoice: model.ToolChoice{Mode: model.ToolChoiceTool}},
		{ToolChoice: model.ToolChoice{Mode: "sometimes"}},
		{Messages: []model.Message{{Role: model.RoleTool, Content: "x"}}},
		{Tools: []model.Tool{{Name: "t", Parameters: json.RawMessage(`{"type":"string"}`)}}},
	} {
		_, err := wiretest.Drain(p.Stream(context.Background(), req))
		if model.KindOf(err) != model.ErrorFatal {
			t.Errorf("%+v: error = %v, want fatal", req, err)
		}
	}
}
