package triage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"agentflow/model"
	"agentflow/model/anthropic"
	"agentflow/model/openai"
	"agentflow/schema"
	"agentflow/think"
)

// These tests drive the real providers (model/openai, model/anthropic)
// against a local server that answers with recorded SSE bodies
// (testdata/*.sse), through the whole prompt step.

// sseServer answers POSTs to path with the files in order, the last one
// again when they run out, and records the request bodies.
type sseServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

func newSSEServer(t *testing.T, path string, files ...string) *sseServer {
	s := &sseServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != path {
			t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
			http.NotFound(w, r)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("request body is not JSON: %v", err)
		}
		s.mu.Lock()
		n := len(s.bodies)
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		data, err := os.ReadFile(filepath.Join("testdata", files[min(n, len(files)-1)]))
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for len(data) > 0 { // in pieces, as on a real connection
			k := min(len(data), 89)
			_, _ = w.Write(data[:k])
			f.Flush()
			data = data[k:]
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sseServer) requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bodies)
}

// get walks decoded JSON by keys and indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// wire is one provider's wire format.
type wire struct {
	name     string
	path     string
	provider func(t *testing.T, url string) model.Provider
	// tools returns the offered tools' names and their parameter schemas.
	tools func(body map[string]any) ([]string, []any)
	// required and named are the tool_choice values of a forced turn.
	required, named string
}

var wires = []wire{{
	name: "openai",
	path: "/v1/chat/completions",
	provider: func(t *testing.T, url string) model.Provider {
		p, err := openai.New(openai.Options{BaseURL: url + "/v1", APIKey: "sk-test", Model: "gpt-4o-mini"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	},
	tools: func(body map[string]any) (names []string, params []any) {
		ts, _ := body["tools"].([]any)
		for _, tool := range ts {
			names = append(names, jsonOf(get(tool, "function", "name")))
			params = append(params, get(tool, "function", "parameters"))
		}
		return names, params
	},
	required: `"required"`,
	named:    `{"function":{"name":"think_final_answer"},"type":"function"}`,
}, {
	name: "anthropic",
	path: "/v1/messages",
	provider: func(t *testing.T, url string) model.Provider {
		p, err := anthropic.New(anthropic.Options{BaseURL: url, APIKey: "sk-ant-test", Model: "claude-haiku-4-5"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	},
	tools: func(body map[string]any) (names []string, params []any) {
		ts, _ := body["tools"].([]any)
		for _, tool := range ts {
			names = append(names, jsonOf(get(tool, "name")))
			params = append(params, get(tool, "input_schema"))
		}
		return names, params
	},
	required: `{"type":"any"}`,
	named:    `{"name":"think_final_answer","type":"tool"}`,
}}

// draftSchema is the Draft's provider schema, as the request must carry it.
func draftSchema(t *testing.T) any {
	full, err := schema.For[Draft]()
	if err != nil {
		t.Fatal(err)
	}
	strict, err := schema.Strict(full)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(strict.JSON(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkForced checks that a request offers get_issue and the final-answer
// tool with the Draft's schema, and forces tool use as choice says.
func checkForced(t *testing.T, w wire, body map[string]any, choice string) {
	t.Helper()
	names, params := w.tools(body)
	if !slices.Equal(names, []string{`"get_issue"`, `"think_final_answer"`}) {
		t.Errorf("tools = %v, want get_issue and think_final_answer", names)
		return
	}
	if want := draftSchema(t); !reflect.DeepEqual(params[1], want) {
		t.Errorf("think_final_answer's schema = %s, want the Draft's %s", jsonOf(params[1]), jsonOf(want))
	}
	if got := jsonOf(body["tool_choice"]); got != choice {
		t.Errorf("tool_choice = %s, want %s", got, choice)
	}
}

func TestRecordedStreams(t *testing.T) {
	t.Parallel()
	for _, w := range wires {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			t.Run("tool call then final answer", func(t *testing.T) {
				t.Parallel()
				srv := newSSEServer(t, w.path, w.name+"_get_issue.sse", w.name+"_final_answer.sse")
				e := newEnv(t, envOptions{model: w.provider(t, srv.URL), maxSteps: 2})
				id := e.triage(t, 42)
				d := e.draftOf(t, 42)
				want := Draft{Title: "App crashes when saving a file with an emoji in its name",
					Summary: "Saving a file whose name contains an emoji crashes the app in the path encoder.",
					Labels:  []string{"bug", "crash"}}
				if !reflect.DeepEqual(d, want) {
					t.Fatalf("draft = %+v, want %+v", d, want)
				}
				e.review(t, id, true)
				waitFor(t, "the labels", func() bool { return slices.Equal(e.state(t).Labels[42], want.Labels) })
				reqs := srv.requests()
				if len(reqs) != 2 {
					t.Fatalf("%d requests, want 2", len(reqs))
				}
				// The first step may call any tool; the last allowed step
				// (MaxSteps 2) must call the final-answer tool.
				checkForced(t, w, reqs[0], w.required)
				checkForced(t, w, reqs[1], w.named)
				if s := jsonOf(reqs[1]["messages"]); !strings.Contains(s, "get_issue") || !strings.Contains(s, "emoji in its name") {
					t.Errorf("second request lacks the get_issue round: %s", s)
				}
				conv := with(t, e, func(ctx context.Context, a *TriageAgent) ([]model.Message, error) { return a.Conversation(ctx) })
				if s := jsonOf(conv); strings.Contains(s, think.FinalAnswerTool) || len(conv) != 3 {
					t.Errorf("conversation (want user, get_issue call, its result) = %s", s)
				}
			})
			t.Run("text instead of an answer", func(t *testing.T) {
				t.Parallel()
				srv := newSSEServer(t, w.path, w.name+"_text_instead.sse")
				e := newEnv(t, envOptions{model: w.provider(t, srv.URL), maxSteps: 2})
				id := e.triage(t, 42)
				var ee *think.EndedError
				if err := e.errOf(t, id); !errors.As(err, &ee) || !ee.NoAnswer {
					t.Fatalf("workflow error = %v, want a *think.EndedError with NoAnswer", err)
				}
				if n := len(srv.requests()); n != 1 {
					t.Errorf("%d requests, want 1 (the model ended the turn)", n)
				}
				checkForced(t, w, srv.requests()[0], w.required)
			})
			t.Run("invalid output", func(t *testing.T) {
				t.Parallel()
				srv := newSSEServer(t, w.path, w.name+"_invalid_labels.sse")
				e := newEnv(t, envOptions{model: w.provider(t, srv.URL), maxSteps: 2})
				id := e.triage(t, 42)
				var ve *think.ValidationError
				if err := e.errOf(t, id); !errors.As(err, &ve) || !strings.Contains(string(ve.Answer), `"labels":"bug, crash"`) {
					t.Fatalf("workflow error = %v, want a *think.ValidationError", err)
				}
				if s := e.state(t); len(s.Labels) != 0 {
					t.Errorf("labels applied from an invalid answer: %+v", s)
				}
			})
			t.Run("truncated answer", func(t *testing.T) {
				t.Parallel()
				srv := newSSEServer(t, w.path, w.name+"_truncated_final.sse") // again and again
				e := newEnv(t, envOptions{model: w.provider(t, srv.URL), maxSteps: 2})
				id := e.triage(t, 42)
				var ee *think.EndedError
				if err := e.errOf(t, id); !errors.As(err, &ee) || !ee.NoAnswer {
					t.Fatalf("workflow error = %v, want a *think.EndedError with NoAnswer", err)
				}
				reqs := srv.requests()
				if len(reqs) != 2 {
					t.Fatalf("%d requests, want 2: the truncated answer is refused and the turn goes on", len(reqs))
				}
				checkForced(t, w, reqs[1], w.named)
				if s := jsonOf(reqs[1]["messages"]); !strings.Contains(s, "it was not executed") {
					t.Errorf("the model was not told its answer was cut off: %s", s)
				}
				conv := with(t, e, func(ctx context.Context, a *TriageAgent) ([]model.Message, error) { return a.Conversation(ctx) })
				if s := jsonOf(conv); strings.Contains(s, think.FinalAnswerTool) {
					t.Errorf("the truncated final answer entered the conversation: %s", s)
				}
			})
		})
	}
}
