package openai

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"agentflow/model"
	"agentflow/model/internal/wiretest"
)

const path = "/v1/chat/completions"

func newProvider(t *testing.T, url string, retry model.Retry) *Provider {
	t.Helper()
	p, err := New(Options{BaseURL: url + "/v1", APIKey: "sk-test", Model: "gpt-4o-mini", Retry: retry})
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

// checkCommon checks what every request must carry.
func checkCommon(t *testing.T, body map[string]any, wantModel string) {
	t.Helper()
	if got := wiretest.Get(body, "model"); got != wantModel {
		t.Errorf("model = %v, want %s", got, wantModel)
	}
	if got := wiretest.Get(body, "stream"); got != true {
		t.Errorf("stream = %v", got)
	}
	if got := wiretest.Get(body, "stream_options", "include_usage"); got != true {
		t.Errorf("stream_options.include_usage = %v", got)
	}
}

func TestWireStreams(t *testing.T) {
	t.Parallel()
	temp, topP := 0.2, 0.9
	cases := []struct {
		name    string
		file    string
		req     model.Request
		check   func(t *testing.T, body map[string]any)
		want    []string
		wantErr model.ErrorKind
	}{{
		name: "text and final usage chunk",
		file: "text_usage.sse",
		req:  model.Request{System: "Be brief.", Messages: []model.Message{user("Hi")}, Temperature: &temp, TopP: &topP, MaxTokens: 256},
		check: func(t *testing.T, b map[string]any) {
			want := `[{"content":"Be brief.","role":"system"},{"content":"Hi","role":"user"}]`
			if got := wiretest.JSON(b["messages"]); got != want {
				t.Errorf("messages = %s, want %s", got, want)
			}
			if b["temperature"] != 0.2 || b["top_p"] != 0.9 || b["max_completion_tokens"] != 256.0 {
				t.Errorf("sampling = %v %v %v", b["temperature"], b["top_p"], b["max_completion_tokens"])
			}
			if _, ok := b["tools"]; ok {
				t.Errorf("tools sent without tools")
			}
			if _, ok := b["tool_choice"]; ok {
				t.Errorf("tool_choice sent without one")
			}
		},
		want: []string{"text:Hello! How can I help?", "usage:19/8", "finish:stop"},
	}, {
		name: "one call streamed in pieces, with history",
		file: "tool_call_streamed.sse",
		req: model.Request{
			Messages: []model.Message{
				user("Weather in Paris? And in Rome?"),
				{Role: model.RoleAssistant, Content: "Let me look.", ToolCalls: []model.ToolCall{{ID: "call_rome", Name: "get_weather", Arguments: json.RawMessage(`{"location":"Rome"}`)}}},
				{Role: model.RoleTool, ToolCallID: "call_rome", ToolName: "get_weather", Content: `{"temp":21}`},
			},
			Tools:      []model.Tool{weatherTool},
			ToolChoice: model.ToolChoice{Mode: model.ToolChoiceAuto},
		},
		check: func(t *testing.T, b map[string]any) {
			want := `[{"content":"Weather in Paris? And in Rome?","role":"user"},` +
				`{"content":"Let me look.","role":"assistant","tool_calls":[{"function":{"arguments":"{\"location\":\"Rome\"}","name":"get_weather"},"id":"call_rome","type":"function"}]},` +
				`{"content":"{\"temp\":21}","role":"tool","tool_call_id":"call_rome"}]`
			if got := wiretest.JSON(b["messages"]); got != want {
				t.Errorf("messages =\n%s\nwant\n%s", got, want)
			}
			wantTools := `[{"function":{"description":"Current weather for a place.","name":"get_weather","parameters":{"additionalProperties":false,"properties":{"location":{"type":"string"}},"required":["location"],"type":"object"}},"type":"function"}]`
			if got := wiretest.JSON(b["tools"]); got != wantTools {
				t.Errorf("tools =\n%s\nwant\n%s", got, wantTools)
			}
			if b["tool_choice"] != "auto" {
				t.Errorf("tool_choice = %v", b["tool_choice"])
			}
		},
		want: []string{
			"start:0:call_DdmO9pD3xa9XTPNJ32zg2hcA:get_weather",
			`args:0:{"location":"Paris, France","unit":"celsius"}`,
			`end:0:call_DdmO9pD3xa9XTPNJ32zg2hcA:get_weather:{"location":"Paris, France","unit":"celsius"}`,
			"usage:82/18", "finish:tool_calls",
		},
	}, {
		name: "parallel calls on indexes 0 and 1",
		file: "parallel_indexed.sse",
		req:  model.Request{Messages: []model.Message{user("Paris and Tokyo?")}, Tools: []model.Tool{weatherTool}},
		want: []string{
			"text:Checking both.",
			"start:0:call_a1:get_weather", `args:0:{"location":"Paris"}`,
			"start:1:call_b2:get_weather", `args:1:{"location":"Tokyo"}`,
			`end:0:call_a1:get_weather:{"location":"Paris"}`,
			`end:1:call_b2:get_weather:{"location":"Tokyo"}`,
			"usage:90/40", "finish:tool_calls",
		},
	}, {
		name: "Ollama: parallel calls all on index 0",
		file: "ollama_index0.sse",
		req:  model.Request{Model: "qwen3:8b", Messages: []model.Message{user("Paris and Tokyo?")}, Tools: []model.Tool{weatherTool}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceRequired}},
		check: func(t *testing.T, b map[string]any) {
			if b["model"] != "qwen3:8b" {
				t.Errorf("request model override not sent: %v", b["model"])
			}
			if b["tool_choice"] != "required" {
				t.Errorf("tool_choice = %v", b["tool_choice"])
			}
		},
		want: []string{
			"start:0:call_6nf0rg8b:get_weather", `args:0:{"location":"Paris"}`,
			"start:1:call_x2k1vq0m:get_weather", `args:1:{"location":"Tokyo"}`,
			"start:2:call_p9s7d3ha:get_time", `args:2:{"zone":"Asia/Tokyo"}`,
			`end:0:call_6nf0rg8b:get_weather:{"location":"Paris"}`,
			`end:1:call_x2k1vq0m:get_weather:{"location":"Tokyo"}`,
			`end:2:call_p9s7d3ha:get_time:{"zone":"Asia/Tokyo"}`,
			"usage:181/62", "finish:tool_calls",
		},
	}, {
		name: "whole call in one chunk",
		file: "whole_call_one_chunk.sse",
		req:  model.Request{Messages: []model.Message{user("search")}, Tools: []model.Tool{{Name: "search"}}},
		check: func(t *testing.T, b map[string]any) {
			want := `[{"function":{"name":"search","parameters":{"properties":{},"type":"object"}},"type":"function"}]`
			if got := wiretest.JSON(b["tools"]); got != want {
				t.Errorf("tools = %s, want %s", got, want)
			}
		},
		want: []string{
			"start:0:chatcmpl-tool-8d2f1c0b:search", `args:0:{"query": "go iterators", "limit": 3}`,
			`end:0:chatcmpl-tool-8d2f1c0b:search:{"query": "go iterators", "limit": 3}`,
			"finish:tool_calls",
		},
	}, {
		name: "empty and absent arguments become {}",
		file: "empty_arguments.sse",
		req:  model.Request{Messages: []model.Message{user("time and files")}, Tools: []model.Tool{{Name: "get_time"}, {Name: "list_files"}}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceNone}},
		check: func(t *testing.T, b map[string]any) {
			if b["tool_choice"] != "none" {
				t.Errorf("tool_choice = %v", b["tool_choice"])
			}
		},
		want: []string{
			"start:0:call_now1:get_time", "start:1:call_list2:list_files",
			"end:0:call_now1:get_time:{}", "end:1:call_list2:list_files:{}",
			"usage:60/25", "finish:tool_calls",
		},
	}, {
		name: "forced call ending with finish reason stop",
		file: "forced_call_finish_stop.sse",
		req:  model.Request{Messages: []model.Message{user("answer")}, Tools: []model.Tool{{Name: "think_final_answer"}}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceTool, Name: "think_final_answer"}},
		check: func(t *testing.T, b map[string]any) {
			want := `{"function":{"name":"think_final_answer"},"type":"function"}`
			if got := wiretest.JSON(b["tool_choice"]); got != want {
				t.Errorf("tool_choice = %s, want %s", got, want)
			}
		},
		want: []string{
			"start:0:call_final1:think_final_answer", `args:0:{"answer":"42","confidence":0.9}`,
			`end:0:call_final1:think_final_answer:{"answer":"42","confidence":0.9}`,
			"usage:120/20", "finish:stop",
		},
	}, {
		name: "text instead of a forced call",
		file: "forced_call_text_instead.sse",
		req:  model.Request{Messages: []model.Message{user("answer")}, Tools: []model.Tool{{Name: "think_final_answer"}}, ToolChoice: model.ToolChoice{Mode: model.ToolChoiceTool, Name: "think_final_answer"}},
		want: []string{"text:The answer is 42.", "usage:120/6", "finish:stop"},
	}, {
		name: "arguments truncated by max tokens",
		file: "truncated_length.sse",
		req:  model.Request{Messages: []model.Message{user("write")}, Tools: []model.Tool{{Name: "write_file"}}, MaxTokens: 16},
		want: []string{
			"start:0:call_long1:write_file", `args:0:{"path":"notes.md","content":"Once upon a time`,
			"invalid:0:call_long1:write_file:arguments are not valid JSON (truncated?)",
			"usage:50/16", "finish:length",
		},
	}, {
		name: "stream cut off mid-arguments",
		file: "truncated_eof.sse",
		req:  model.Request{Messages: []model.Message{user("weather")}, Tools: []model.Tool{weatherTool}},
		want: []string{
			"start:0:call_cut1:get_weather", `args:0:{"location":"Par`,
			"invalid:0:call_cut1:get_weather:stream ended before the call was complete",
		},
		wantErr: model.ErrorTransient,
	}, {
		name: "cumulative usage on every chunk",
		file: "usage_every_chunk.sse",
		req:  model.Request{Messages: []model.Message{user("hi")}},
		want: []string{"text:Hi there", "usage:12/3", "finish:stop"},
	}, {
		name:    "error event inside the stream",
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
			want := "gpt-4o-mini"
			if tc.req.Model != "" {
				want = tc.req.Model
			}
			checkCommon(t, reqs[0], want)
			if h := srv.Headers()[0].Get("Authorization"); h != "Bearer sk-test" {
				t.Errorf("Authorization = %q", h)
			}
			if tc.check != nil {
				tc.check(t, reqs[0])
			}
		})
	}
}

// TestCollect checks that Collect sees calls and invalid calls as the
// think loop will.
func TestCollect(t *testing.T) {
	t.Parallel()
	srv := wiretest.NewServer(t, path, wiretest.Reply{SSEFile: "testdata/truncated_length.sse"})
	p := newProvider(t, srv.URL, model.Retry{})
	r, err := model.Collect(context.Background(), p, model.Request{Messages: []model.Message{user("x")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.ToolCalls) != 0 || len(r.Invalid) != 1 || r.Invalid[0].Index != 0 || r.Invalid[0].Reason == "" || r.FinishReason != model.FinishLength {
		t.Errorf("response = %+v", r)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		reply  wiretest.Reply
		kind   model.ErrorKind
		status int
	}{
		{"429 rate limit", wiretest.Reply{Status: 429, Body: `{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}`}, model.ErrorRateLimit, 429},
		{"429 quota is fatal", wiretest.Reply{Status: 429, Body: `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`}, model.ErrorFatal, 429},
		{"500", wiretest.Reply{Status: 500, Body: `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`}, model.ErrorTransient, 500},
		{"503 plain text", wiretest.Reply{Status: 503, Body: `upstream connect error`}, model.ErrorTransient, 503},
		{"400 context_length_exceeded", wiretest.Reply{Status: 400, Body: `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`}, model.ErrorContextOverflow, 400},
		{"400 vLLM context", wiretest.Reply{Status: 400, Body: `{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}`}, model.ErrorContextOverflow, 400},
		{"400 llama.cpp context", wiretest.Reply{Status: 400, Body: `{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}`}, model.ErrorContextOverflow, 400},
		{"400 other", wiretest.Reply{Status: 400, Body: `{"error":{"message":"Invalid schema for function 'x'","type":"invalid_request_error","param":"tools[0].function.parameters","code":"invalid_function_parameters"}}`}, model.ErrorFatal, 400},
		{"401", wiretest.Reply{Status: 401, Body: `{"error":{"message":"Incorrect API key provided: sk-test.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`}, model.ErrorFatal, 401},
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
			if me.Kind != tc.kind || me.Status != tc.status || me.Provider != "openai" {
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
		{"429 then 500 then success", []wiretest.Reply{
			{Status: 429, Header: map[string]string{"Retry-After": "0"}, Body: `{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`},
			{Status: 500, Body: `{"error":{"message":"boom","type":"server_error"}}`},
			ok,
		}, 3, ""},
		{"400 is not retried", []wiretest.Reply{{Status: 400, Body: `{"error":{"message":"bad","type":"invalid_request_error"}}`}, ok}, 1, model.ErrorFatal},
		{"context overflow is not retried", []wiretest.Reply{{Status: 400, Body: `{"error":{"message":"too long","code":"context_length_exceeded"}}`}, ok}, 1, model.ErrorContextOverflow},
		{"gives up after Attempts", []wiretest.Reply{{Status: 503, Body: `{}`}}, 3, model.ErrorTransient},
		{"no retry after events", []wiretest.Reply{{SSEFile: "testdata/truncated_eof.sse"}, ok}, 1, model.ErrorTransient},
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
		{Tools: []model.Tool{{Name: "t", Parameters: json.RawMessage(`[1]`)}}},
	} {
		_, err := wiretest.Drain(p.Stream(context.Background(), req))
		if model.KindOf(err) != model.ErrorFatal {
			t.Errorf("%+v: error = %v, want fatal", req, err)
		}
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a model succeeded")
	}
	_ = http.StatusOK
}
