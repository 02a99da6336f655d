package assistant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/assistant"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestProvider(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		env      map[string]string
		desc     string // the description, when no error is wanted
		scripted bool
		err      []string // substrings of the error
	}{
		{name: "nothing configured", env: nil, desc: "scripted model (no provider configured)", scripted: true},
		{name: "blank values", env: map[string]string{assistant.EnvBaseURL: " ", assistant.EnvModel: ""},
			desc: "scripted model (no provider configured)", scripted: true},
		{name: "scripted asked for", env: map[string]string{assistant.EnvProvider: "scripted"},
			desc: "scripted model (AGENTFLOW_MODEL_PROVIDER=scripted)", scripted: true},
		{name: "ollama: base URL, no key", env: map[string]string{
			assistant.EnvBaseURL: "http://127.0.0.1:11434/v1", assistant.EnvModel: "llama3.1"},
			desc: "openai-compatible model llama3.1 at http://127.0.0.1:11434/v1"},
		{name: "openai: key only", env: map[string]string{
			assistant.EnvAPIKey: "sk-test", assistant.EnvModel: "gpt-4.1-mini"},
			desc: "openai-compatible model gpt-4.1-mini at https://api.openai.com/v1/"},
		{name: "workers ai", env: map[string]string{assistant.EnvProvider: "openai",
			assistant.EnvBaseURL: "https://api.cloudflare.com/client/v4/accounts/abc/ai/v1", assistant.EnvAPIKey: "cf-token",
			assistant.EnvModel: "@cf/meta/llama-3.1-8b-instruct"},
			desc: "openai-compatible model @cf/meta/llama-3.1-8b-instruct at https://api.cloudflare.com/client/v4/accounts/abc/ai/v1"},
		{name: "anthropic", env: map[string]string{assistant.EnvProvider: "Anthropic",
			assistant.EnvAPIKey: "sk-ant-test", assistant.EnvModel: "claude-sonnet-4-5"},
			desc: "anthropic model claude-sonnet-4-5 at https://api.anthropic.com/"},
		{name: "anthropic at a base URL", env: map[string]string{assistant.EnvProvider: "anthropic",
			assistant.EnvBaseURL: "http://127.0.0.1:9999", assistant.EnvModel: "claude-haiku-4-5"},
			desc: "anthropic model claude-haiku-4-5 at http://127.0.0.1:9999"},
		{name: "unknown provider", env: map[string]string{assistant.EnvProvider: "gemini", assistant.EnvModel: "x"},
			err: []string{`unknown AGENTFLOW_MODEL_PROVIDER "gemini"`, "openai", "anthropic"}},
		{name: "model without a provider", env: map[string]string{assistant.EnvModel: "llama3.1"},
			err: []string{`AGENTFLOW_MODEL is "llama3.1" but no provider is configured`, "AGENTFLOW_MODEL_BASE_URL"}},
		{name: "no model name", env: map[string]string{assistant.EnvBaseURL: "http://127.0.0.1:11434/v1"},
			err: []string{"AGENTFLOW_MODEL is required with provider openai"}},
		{name: "anthropic without model name", env: map[string]string{assistant.EnvProvider: "anthropic", assistant.EnvAPIKey: "k"},
			err: []string{"AGENTFLOW_MODEL is required with provider anthropic"}},
		{name: "base URL not http", env: map[string]string{assistant.EnvBaseURL: "127.0.0.1:11434", assistant.EnvModel: "m"},
			err: []string{`AGENTFLOW_MODEL_BASE_URL "127.0.0.1:11434" is not an http(s) URL`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, desc, err := assistant.Provider(envOf(tc.env))
			if tc.err != nil {
				if err == nil {
					t.Fatalf("Provider = %T %q, want an error", p, desc)
				}
				for _, want := range tc.err {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				if k := tc.env[assistant.EnvAPIKey]; k != "" && strings.Contains(err.Error(), k) {
					t.Errorf("error %q shows the API key", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if desc != tc.desc {
				t.Errorf("description = %q, want %q", desc, tc.desc)
			}
			if _, ok := p.(*scripted.Model); ok != tc.scripted {
				t.Errorf("provider %T: scripted = %v, want %v", p, ok, tc.scripted)
			}
			if k := tc.env[assistant.EnvAPIKey]; k != "" && strings.Contains(desc, k) {
				t.Errorf("description %q shows the API key", desc)
			}
		})
	}
}

func TestTools(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC)
	tools, err := assistant.Tools(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]think.Tool{}
	for _, tool := range tools {
		byName[tool.Name] = tool
	}
	for _, tc := range []struct {
		tool, args, want, err string
	}{
		{tool: "get_time", args: `{"zone":"Europe/Oslo"}`, want: `{"zone":"Europe/Oslo","time":"2026-03-29T14:00:00+02:00","weekday":"Sunday"}`},
		{tool: "get_time", args: `{"zone":"America/New_York"}`, want: `{"zone":"America/New_York","time":"2026-03-29T08:00:00-04:00","weekday":"Sunday"}`},
		{tool: "get_time", args: `{"zone":"Mars/Olympus"}`, err: `unknown time zone "Mars/Olympus"`},
		{tool: "get_time", args: `{"zone":"Local"}`, err: `"Local" is not an IANA time zone`},
		{tool: "add", args: `{"numbers":[1.5,2,3]}`, want: `6.5`},
		{tool: "add", args: `{"numbers":[]}`, err: "at least one number"},
	} {
		tool := byName[tc.tool]
		if err := tool.Schema.Validate(json.RawMessage(tc.args)); err != nil {
			t.Errorf("%s %s: schema: %v", tc.tool, tc.args, err)
			continue
		}
		out, err := tool.Run(t.Context(), json.RawMessage(tc.args))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %s: err = %v, want %q", tc.tool, tc.args, err, tc.err)
			}
			continue
		}
		b, _ := json.Marshal(out)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s %s = %s, %v; want %s", tc.tool, tc.args, b, err, tc.want)
		}
	}
}

type env struct {
	rt *agent.Runtime
}

func newEnv(t *testing.T, p model.Provider, now time.Time) *env {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "assistant.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := assistant.Register(rt, assistant.Options{Model: p, Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
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
	return &env{rt: rt}
}

func (e *env) wait(t *testing.T, name, id string) think.SubmissionInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := agent.With(t.Context(), e.rt, name, func(ctx context.Context, a *assistant.Assistant) (think.SubmissionInfo, error) {
			return a.InspectSubmission(ctx, id)
		})
		if err != nil {
			t.Fatal(err)
		}
		if s.Status.Finished() {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("submission %s is still %s", id, s.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func roles(conv []model.Message) string {
	var rs []string
	for _, m := range conv {
		rs = append(rs, string(m.Role))
	}
	return strings.Join(rs, ",")
}

// TestAssistantAnswersWithTheScriptedModel: with nothing configured, the
// Assistant answers a submission through one get_time round.
func TestAssistantAnswersWithTheScriptedModel(t *testing.T) {
	t.Parallel()
	p, desc, err := assistant.Provider(envOf(nil))
	if err != nil || desc != assistant.ScriptedDescription {
		t.Fatalf("Provider = %q, %v", desc, err)
	}
	e := newEnv(t, p, time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC))
	asked, err := agent.Call(t.Context(), e.rt, "ada", (*assistant.Assistant).Ask, "What time is it in Europe/Oslo?")
	if err != nil {
		t.Fatal(err)
	}
	if !asked.Accepted || asked.Status != store.SubmissionPending || !strings.HasPrefix(asked.SubmissionID, "sub_") {
		t.Fatalf("Ask = %+v", asked)
	}
	done := e.wait(t, "ada", asked.SubmissionID)
	want := `{"finish":"answered","text":"It is 14:00 on Sunday 29 March 2026 in Europe/Oslo. (This answer is scripted: no model provider is configured.)"}`
	if done.Status != store.SubmissionCompleted || string(done.Output) != want {
		t.Fatalf("submission = %s %q (error %q), want completed with %s", done.Status, done.Output, done.Error, want)
	}
	if done.Usage.InputTokens != 20 || done.Usage.OutputTokens != 10 {
		t.Errorf("usage = %+v, want two scripted calls' worth", done.Usage)
	}
	conv, err := agent.With(t.Context(), e.rt, "ada", func(ctx context.Context, a *assistant.Assistant) ([]model.Message, error) {
		return a.Conversation(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := roles(conv); got != "user,assistant,tool,assistant" {
		t.Fatalf("conversation = %s", got)
	}
	if c := conv[1].ToolCalls; len(c) != 1 || c[0].Name != "get_time" || string(c[0].Arguments) != `{"zone":"Europe/Oslo"}` {
		t.Errorf("tool call = %+v", c)
	}

	// A second question: the tool call ids stay unique in the conversation,
	// and a zone in the state reaches the system prompt (BeforeTurn).
	_, err = agent.With(t.Context(), e.rt, "ada", func(ctx context.Context, a *assistant.Assistant) (struct{}, error) {
		return struct{}{}, a.SetState(ctx, assistant.State{Zone: "Asia/Tokyo"})
	})
	if err != nil {
		t.Fatal(err)
	}
	asked, err = agent.Call(t.Context(), e.rt, "ada", (*assistant.Assistant).Ask, "And now?")
	if err != nil {
		t.Fatal(err)
	}
	if done := e.wait(t, "ada", asked.SubmissionID); !strings.Contains(string(done.Output), "in UTC") {
		t.Errorf("second answer = %s", done.Output)
	}
	reqs := p.(*scripted.Model).Requests()
	if last := reqs[len(reqs)-1]; !strings.HasSuffix(last.System, "The user's time zone is Asia/Tokyo.") || len(last.Tools) != 2 {
		t.Errorf("last request: system %q, %d tools", last.System, len(last.Tools))
	}
	conv, _ = agent.With(t.Context(), e.rt, "ada", func(ctx context.Context, a *assistant.Assistant) ([]model.Message, error) {
		return a.Conversation(ctx)
	})
	if len(conv) != 8 || conv[5].ToolCalls[0].ID == conv[1].ToolCalls[0].ID {
		t.Errorf("conversation after two questions: %d messages, call ids %+v", len(conv), conv)
	}
	// A zone that is not one is refused.
	_, err = agent.With(t.Context(), e.rt, "ada", func(ctx context.Context, a *assistant.Assistant) (struct{}, error) {
		return struct{}{}, a.SetState(ctx, assistant.State{Zone: "Nowhere/Else"})
	})
	if err == nil || !strings.Contains(err.Error(), `"Nowhere/Else"`) {
		t.Errorf("SetState with a bad zone: %v", err)
	}
}

// TestAssistantOverHTTP posts a message to the instance's path and reads
// the submission back.
func TestAssistantOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, assistant.Scripted(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/agents/assistant/web", "text/plain", strings.NewReader("Time in America/Sao_Paulo?"))
	if err != nil {
		t.Fatal(err)
	}
	var asked assistant.Asked
	err = json.NewDecoder(resp.Body).Decode(&asked)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted || !asked.Accepted {
		t.Fatalf("POST: %d %+v %v", resp.StatusCode, asked, err)
	}
	e.wait(t, "web", asked.SubmissionID)
	resp, err = http.Get(srv.URL + "/agents/assistant/web?submission=" + asked.SubmissionID)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Status string          `json:"status"`
		Output json.RawMessage `json:"output"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || got.Status != "completed" || !strings.Contains(string(got.Output), "It is 21:00 on Wednesday 31 December 2025 in America/Sao_Paulo.") {
		t.Errorf("GET ?submission: %d %s %s %v", resp.StatusCode, got.Status, got.Output, err)
	}
	resp, err = http.Get(srv.URL + "/agents/assistant/web?submission=sub_nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET an unknown submission: %d, want 404", resp.StatusCode)
	}
	if resp, err = http.Post(srv.URL+"/agents/assistant/web", "text/plain", strings.NewReader("  ")); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST an empty message: %d, want 400", resp.StatusCode)
	}
}

// TestAssistantRefusesTooLargeAMessage: a message over MaxMessageBytes is
// refused with 413 naming the limit, rather than cut to its first part.
func TestAssistantRefusesTooLargeAMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, assistant.Scripted(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	question := "What time is it in UTC?"
	for _, tc := range []struct {
		name   string
		size   int
		status int
		body   string
	}{
		{"at the limit", assistant.MaxMessageBytes, http.StatusAccepted, `"accepted":true`},
		{"over the limit", assistant.MaxMessageBytes + 1, http.StatusRequestEntityTooLarge, "message too large: the limit is 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tc.name, " ", "-")
			msg := question + strings.Repeat(" ", tc.size-len(question))
			resp, err := http.Post(srv.URL+"/agents/assistant/"+name, "text/plain", strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Fatalf("POST %d bytes = %d %q, want %d containing %q", tc.size, resp.StatusCode, b, tc.status, tc.body)
			}
			if tc.status == http.StatusAccepted {
				var asked assistant.Asked
				if err := json.Unmarshal(b, &asked); err != nil {
					t.Fatal(err)
				}
				e.wait(t, name, asked.SubmissionID)
			}
			conv, err := agent.With(t.Context(), e.rt, name, func(ctx context.Context, a *assistant.Assistant) ([]model.Message, error) {
				return a.Conversation(ctx)
			})
			if err != nil {
				t.Fatal(err)
			}
			if tc.status != http.StatusAccepted {
				if len(conv) != 0 {
					t.Errorf("conversation after a refused message: %d messages, want none", len(conv))
				}
				return
			}
			if len(conv) == 0 || len(conv[0].Content) != tc.size {
				t.Errorf("conversation = %d messages, want the whole %d-byte message first", len(conv), tc.size)
			}
		})
	}
}

// TestAssistantWithAnOpenAICompatibleServer configures the Assistant from
// the environment to use a local OpenAI-compatible server, which streams a
// get_time call and then an answer, as Ollama would.
func TestAssistantWithAnOpenAICompatibleServer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies = append(bodies, body)
		n := len(bodies)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(delta, finish string) {
			f := "null"
			if finish != "" {
				f = `"` + finish + `"`
			}
			fmt.Fprintf(w, `data: {"id":"c%d","object":"chat.completion.chunk","created":1,"model":"llama3.1","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}`+"\n\n", n, delta, f)
		}
		if n == 1 {
			chunk(`{"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_time","arguments":"{\"zone\":"}}]}`, "")
			chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"\"Asia/Tokyo\"}"}}]}`, "tool_calls")
		} else {
			chunk(`{"role":"assistant","content":"It is 21:00 "}`, "")
			chunk(`{"content":"in Tokyo."}`, "stop")
		}
		fmt.Fprint(w, `data: {"id":"u","object":"chat.completion.chunk","created":1,"model":"llama3.1","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37}}`+"\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	p, desc, err := assistant.Provider(envOf(map[string]string{assistant.EnvBaseURL: srv.URL + "/v1", assistant.EnvModel: "llama3.1"}))
	if err != nil || desc != "openai-compatible model llama3.1 at "+srv.URL+"/v1" {
		t.Fatalf("Provider = %q, %v", desc, err)
	}
	e := newEnv(t, p, time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC))
	asked, err := agent.Call(t.Context(), e.rt, "tokyo", (*assistant.Assistant).Ask, "What time is it in Tokyo?")
	if err != nil {
		t.Fatal(err)
	}
	done := e.wait(t, "tokyo", asked.SubmissionID)
	if done.Status != store.SubmissionCompleted || string(done.Output) != `{"finish":"answered","text":"It is 21:00 in Tokyo."}` || done.Usage.InputTokens != 60 {
		t.Fatalf("submission = %+v", done)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0]["model"] != "llama3.1" {
		t.Fatalf("requests = %v", bodies)
	}
	msgs, _ := bodies[1]["messages"].([]any)
	if len(msgs) != 4 {
		t.Fatalf("second request's messages = %v", msgs)
	}
	tool, _ := msgs[3].(map[string]any)
	if tool["role"] != "tool" || tool["tool_call_id"] != "call_a" || !strings.Contains(fmt.Sprint(tool["content"]), `"time":"2026-03-29T21:00:00+09:00"`) {
		t.Errorf("tool result sent = %v", tool)
	}
}
