// Package wiretest helps the providers' wire-stream tests: a local HTTP
// server that records the request bodies the SDKs send and answers with
// recorded SSE bodies or errors, and a compact rendering of event
// sequences.
package wiretest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"agentflow/model"
)

// Reply is one answer of the server.
type Reply struct {
	Status  int               // default 200
	Header  map[string]string // extra headers
	SSEFile string            // a testdata file served as text/event-stream
	Body    string            // otherwise, a JSON body
}

// Server is a local provider endpoint answering Replies in order (the last
// one again when they run out).
type Server struct {
	*httptest.Server
	t       testing.TB
	path    string
	mu      sync.Mutex
	replies []Reply
	bodies  []map[string]any
	headers []http.Header
}

// NewServer starts a server answering POSTs to path.
func NewServer(t testing.TB, path string, replies ...Reply) *Server {
	s := &Server{t: t, path: path, replies: replies}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != s.path {
		s.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		s.t.Errorf("read body: %v", err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		s.t.Errorf("request body is not a JSON object: %v\n%s", err, raw)
	}
	s.mu.Lock()
	n := len(s.bodies)
	s.bodies = append(s.bodies, body)
	s.headers = append(s.headers, r.Header.Clone())
	rep := s.replies[min(n, len(s.replies)-1)]
	s.mu.Unlock()

	for k, v := range rep.Header {
		w.Header().Set(k, v)
	}
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	if rep.SSEFile != "" {
		data, err := os.ReadFile(rep.SSEFile)
		if err != nil {
			s.t.Errorf("read %s: %v", rep.SSEFile, err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(status)
		// Send it in small pieces so the SDK's decoder sees lines split
		// across reads, as on a real connection.
		f, _ := w.(http.Flusher)
		for len(data) > 0 {
			n := min(len(data), 97)
			_, _ = w.Write(data[:n])
			data = data[n:]
			if f != nil {
				f.Flush()
			}
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, rep.Body)
}

// Requests returns the request bodies received so far.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.bodies...)
}

// Headers returns the request headers received so far.
func (s *Server) Headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.headers...)
}

// Render turns events into compact lines, merging consecutive argument
// deltas and text deltas:
//
//	text:Hello
//	start:0:call_1:get_weather
//	args:0:{"location":"Paris"}
//	end:0:call_1:get_weather:{"location":"Paris"}
//	invalid:0:call_1:get_weather:reason
//	usage:10/5
//	finish:stop
func Render(evs []model.Event) []string {
	var out []string
	for _, ev := range evs {
		var line, merge string
		switch ev.Kind {
		case model.EventText:
			line, merge = "text:"+ev.Text, "text:"
		case model.EventToolCallStart:
			line = fmt.Sprintf("start:%d:%s:%s", ev.Index, ev.ToolCall.ID, ev.ToolCall.Name)
		case model.EventToolCallDelta:
			merge = fmt.Sprintf("args:%d:", ev.Index)
			line = merge + ev.ArgumentsDelta
		case model.EventToolCallEnd:
			if ev.Invalid != "" {
				line = fmt.Sprintf("invalid:%d:%s:%s:%s", ev.Index, ev.ToolCall.ID, ev.ToolCall.Name, ev.Invalid)
			} else {
				line = fmt.Sprintf("end:%d:%s:%s:%s", ev.Index, ev.ToolCall.ID, ev.ToolCall.Name, ev.ToolCall.Arguments)
			}
		case model.EventUsage:
			line = fmt.Sprintf("usage:%d/%d", ev.Usage.InputTokens, ev.Usage.OutputTokens)
		case model.EventFinish:
			line = "finish:" + string(ev.FinishReason)
		default:
			line = "?" + string(ev.Kind)
		}
		if merge != "" && len(out) > 0 && strings.HasPrefix(out[len(out)-1], merge) {
			out[len(out)-1] += strings.TrimPrefix(line, merge)
			continue
		}
		out = append(out, line)
	}
	return out
}

// CheckOrder checks the stream invariants every provider keeps: each call
// starts once, its deltas and its one end come after its start, its
// deltas add up to its final arguments (when valid), indexes count from
// 0, usage comes at most once, and finish comes at most once, last.
func CheckOrder(t testing.TB, evs []model.Event) {
	t.Helper()
	started := map[int]bool{}
	ended := map[int]bool{}
	args := map[int]string{}
	usage, finish := 0, 0
	for i, ev := range evs {
		if finish > 0 {
			t.Errorf("event %d (%s) after finish", i, ev.Kind)
		}
		switch ev.Kind {
		case model.EventToolCallStart:
			if started[ev.Index] {
				t.Errorf("call %d started twice", ev.Index)
			}
			if ev.Index != len(started) {
				t.Errorf("call index %d, want %d", ev.Index, len(started))
			}
			if ev.ToolCall.ID == "" {
				t.Errorf("call %d starts without an id", ev.Index)
			}
			started[ev.Index] = true
		case model.EventToolCallDelta:
			if !started[ev.Index] || ended[ev.Index] {
				t.Errorf("delta of call %d outside start..end", ev.Index)
			}
			args[ev.Index] += ev.ArgumentsDelta
		case model.EventToolCallEnd:
			if !started[ev.Index] || ended[ev.Index] {
				t.Errorf("end of call %d not after one start", ev.Index)
			}
			ended[ev.Index] = true
			if ev.Invalid == "" {
				if !json.Valid(ev.ToolCall.Arguments) || !strings.HasPrefix(string(ev.ToolCall.Arguments), "{") {
					t.Errorf("call %d ends valid with arguments %q", ev.Index, ev.ToolCall.Arguments)
				}
				if a := strings.TrimSpace(args[ev.Index]); a != "" && a != string(ev.ToolCall.Arguments) {
					t.Errorf("call %d: deltas %q, end %q", ev.Index, a, ev.ToolCall.Arguments)
				}
			} else if ev.ToolCall.Arguments != nil {
				t.Errorf("invalid call %d carries arguments %q", ev.Index, ev.ToolCall.Arguments)
			}
		case model.EventUsage:
			usage++
			if usage > 1 {
				t.Errorf("usage twice")
			}
		case model.EventFinish:
			finish++
		}
	}
	for i := range started {
		if !ended[i] {
			t.Errorf("call %d never ended", i)
		}
	}
}

// Drain runs a stream to its end, returning its events and error.
func Drain(seq func(func(model.Event, error) bool)) ([]model.Event, error) {
	var evs []model.Event
	for ev, err := range seq {
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// Get walks a decoded JSON value by object keys and array indexes,
// returning nil when the path does not exist.
func Get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// JSON renders v compactly (for comparisons in test messages).
func JSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
