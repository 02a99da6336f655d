package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/internal/httpserver"
	"agentflow/store"
)

// Inbox keeps the bodies posted to it; GET answers them, after
// ?wait=<duration> when it is given.
type Inbox struct {
	agent.Agent[[]string]
}

func (b *Inbox) InitialState() []string { return []string{} }

func (b *Inbox) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil {
			select {
			case <-ctx.Done():
				http.Error(w, "cancelled while waiting: "+ctx.Err().Error(), http.StatusServiceUnavailable)
				return
			case <-time.After(d):
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(b.State())
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := b.SetState(ctx, append(append([]string{}, b.State()...), string(body))); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveTimeouts serves h on loopback with the server the binaries use,
// with o's timeouts, and returns its base URL.
func serveTimeouts(t *testing.T, h http.Handler, o httpserver.Options) string {
	t.Helper()
	o.Handler = h
	srv, err := httpserver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// noAgentRow fails the test when the agent has a row: a refused request
// must not have touched it.
func noAgentRow(t *testing.T, e *env, key store.AgentKey) {
	t.Helper()
	if a, err := e.store.GetAgent(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("agent %s: row %+v, %v; want none", key, a, err)
	}
}

// A client that sends its body slowly does not hold the instance: another
// request to it answers at once, and the server's ReadTimeout closes the
// slow connection.
func TestSlowBodyDoesNotLockTheInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Inbox](rt, "Inbox", agent.ClassOptions{})
	}})
	const readTimeout = 3 * time.Second
	base := serveTimeouts(t, e.rt.Handler(agent.HandlerOptions{}), httpserver.Options{
		ReadHeaderTimeout: time.Second, ReadTimeout: readTimeout, WriteTimeout: 10 * time.Second})

	slow, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	fmt.Fprintf(slow, "POST /agents/inbox/victim HTTP/1.1\r\nHost: agents\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nhello")
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(slow) // until the server closes the connection
		closed <- string(b)
	}()
	time.Sleep(200 * time.Millisecond) // the slow request is in the handler

	get := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/agents/inbox/victim", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(get); resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "[]" || took > readTimeout/2 {
		t.Errorf("GET beside the slow POST = %d %q after %s; want 200 [] well within the slow body's %s", resp.StatusCode, body, took, readTimeout)
	}

	select {
	case got := <-closed:
		took := time.Since(start)
		if !strings.HasPrefix(got, "HTTP/1.1 408 ") || took < readTimeout-100*time.Millisecond {
			t.Errorf("slow POST: closed after %s with %q; want a 408 after the %s ReadTimeout", took, got, readTimeout)
		}
	case <-time.After(readTimeout + 5*time.Second):
		t.Fatalf("the slow connection is still open %s after it started; the ReadTimeout is %s", time.Since(start), readTimeout)
	}

	// A body that arrives reaches OnRequest whole.
	resp, err = http.Post(base+"/agents/inbox/victim", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST hi = %d", resp.StatusCode)
	}
	got, err := agent.With(t.Context(), e.rt, "victim", func(ctx context.Context, b *Inbox) ([]string, error) { return b.State(), nil })
	if err != nil || len(got) != 1 || got[0] != "hi" {
		t.Errorf("inbox = %q, %v; want [hi]", got, err)
	}
}

// The server's timeouts bound reading a request, not the agent's work: a
// request may take longer than the ReadTimeout, and a WebSocket connection,
// hijacked from the server, stays open longer than every timeout.
func TestServerTimeoutsSpareAgentWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		counter.Register(rt)
		agent.MustRegister[Inbox](rt, "Inbox", agent.ClassOptions{})
	}})
	const (
		readTimeout  = 200 * time.Millisecond
		writeTimeout = time.Second
		work         = 3 * readTimeout
	)
	base := serveTimeouts(t, e.rt.Handler(agent.HandlerOptions{}), httpserver.Options{
		ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: readTimeout})

	t.Run("request", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get(base + "/agents/inbox/busy?wait=" + work.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET taking %s, beyond the %s ReadTimeout = %d %q; want 200", work, readTimeout, resp.StatusCode, body)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		// Active already, so that the upgrade is answered well within the
		// WriteTimeout, which bounds it.
		if _, err := agent.Call(t.Context(), e.rt, "patient", (*counter.Counter).Increment, 0); err != nil {
			t.Fatal(err)
		}
		c := dial(t, wsURL(base, "/agents/counter/patient"))
		c.expect(map[string]any{"type": "cf_agent_identity"})
		c.expect(map[string]any{"type": "cf_agent_state"})
		for i := 1; i <= 2; i++ {
			time.Sleep(writeTimeout + readTimeout)
			c.send(fmt.Sprintf(`{"type":"rpc","id":"%d","method":"increment","args":[1]}`, i))
			c.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": i}})
			c.expect(map[string]any{"type": "rpc", "id": fmt.Sprint(i), "success": true, "result": i})
		}
	})
}

func TestMaxBodyBytes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hooked := map[string]string{} // instance → the body BeforeRequest read
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Inbox](rt, "Inbox", agent.ClassOptions{})
	}})
	base := serve(t, e, agent.HandlerOptions{MaxBodyBytes: 16, BeforeRequest: func(r *http.Request, key store.AgentKey) error {
		b, err := io.ReadAll(r.Body)
		mu.Lock()
		hooked[key.Name] = string(b)
		mu.Unlock()
		return err
	}})
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool // sent without a Content-Length
		status  int
		message string
	}{
		{"at the limit", "0123456789abcdef", false, 204, ""},
		{"over the limit", "0123456789abcdefg", false, 413, "request body too large: the limit is 16 bytes"},
		{"chunked, over the limit", "0123456789abcdefg", true, 413, "request body too large: the limit is 16 bytes"},
		{"chunked, within", "01234567", true, 204, ""},
		{"empty", "", false, 204, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tc.name, " ", "-")
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // of unknown length
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/agents/inbox/"+name, body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(msg), tc.message) {
				t.Fatalf("POST = %d %q, want %d containing %q", resp.StatusCode, msg, tc.status, tc.message)
			}
			mu.Lock()
			seen, ok := hooked[name]
			mu.Unlock()
			if tc.status != 204 {
				if ok {
					t.Errorf("BeforeRequest ran for a refused body")
				}
				noAgentRow(t, e, store.AgentKey{Class: "Inbox", Name: name})
				return
			}
			got, err := agent.With(t.Context(), e.rt, name, func(ctx context.Context, b *Inbox) ([]string, error) { return b.State(), nil })
			if err != nil || len(got) != 1 || got[0] != tc.body || seen != tc.body {
				t.Errorf("OnRequest stored %q (%v), BeforeRequest read %q; want %q for both", got, err, seen, tc.body)
			}
		})
	}
}

// A request made with http.NewRequest and a nil body (as a program serving
// its own requests through the handler does) is served like an empty one.
func TestHandlerServesRequestsWithoutBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Inbox](rt, "Inbox", agent.ClassOptions{})
	}})
	h := e.rt.Handler(agent.HandlerOptions{})
	for _, tc := range []struct {
		method string
		status int
		body   string
	}{
		{http.MethodPost, http.StatusNoContent, ""},
		{http.MethodGet, http.StatusOK, `[""]`},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, "/agents/inbox/direct", nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := strings.TrimSpace(rec.Body.String()); rec.Code != tc.status || got != tc.body {
			t.Errorf("%s without a body = %d %q, want %d %q", tc.method, rec.Code, got, tc.status, tc.body)
		}
	}
}

func TestHandlerOptionsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name string
		o    agent.HandlerOptions
		want string
	}{
		{"negative body limit", agent.HandlerOptions{MaxBodyBytes: -1},
			"agent: HandlerOptions.MaxBodyBytes is -1; it must not be negative (0 takes the default, 1048576)"},
		{"token with a space", agent.HandlerOptions{Token: "two words"},
			"agent: HandlerOptions.Token: the token has ' ' at byte 3: it must be visible ASCII characters, without spaces"},
		{"token with a newline", agent.HandlerOptions{Token: "s3cret\n"}, "agent: HandlerOptions.Token: the token has '\\n' at byte 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if got := fmt.Sprint(recover()); !strings.Contains(got, tc.want) {
					t.Errorf("Handler panicked with %q, want %q", got, tc.want)
				}
			}()
			e.rt.Handler(tc.o)
		})
	}
}

// HandlerOptions.Token: every request but a CORS preflight carries the
// token, in the header or the query; others are refused before the hooks
// run and before the instance is touched.
func TestHandlerToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Hooked](rt, "Hooked", agent.ClassOptions{})
	}})
	var mu sync.Mutex
	hooks := map[string]string{} // instance → the hook that ran
	record := func(which string) func(*http.Request, store.AgentKey) error {
		return func(r *http.Request, key store.AgentKey) error {
			mu.Lock()
			hooks[key.Name] = which
			mu.Unlock()
			return nil
		}
	}
	base := serve(t, e, agent.HandlerOptions{
		Token:         "s3cret",
		CORS:          &agent.CORS{AllowedOrigins: []string{"https://app.example"}},
		BeforeRequest: record("request"), BeforeConnect: record("connect"),
	})
	for _, tc := range []struct {
		name      string
		ws        bool
		method    string
		query     string
		header    http.Header
		status    int    // for WebSockets, 101 when the upgrade succeeds
		challenge string // WWW-Authenticate
		hook      string // "": no hook ran
	}{
		{"no token", false, "GET", "", nil, 401, "Bearer", ""},
		{"wrong token", false, "POST", "", http.Header{"Authorization": {"Bearer s3cre"}}, 401, `Bearer error="invalid_token"`, ""},
		{"other scheme", false, "GET", "", http.Header{"Authorization": {"Basic czNjcmV0"}}, 401, "Bearer", ""},
		{"header", false, "GET", "", http.Header{"Authorization": {"Bearer s3cret"}}, 200, "", "request"},
		{"query parameter", false, "GET", "?token=s3cret", nil, 200, "", "request"},
		{"wrong query parameter", false, "GET", "?token=secret", nil, 401, `Bearer error="invalid_token"`, ""},
		{"preflight", false, "OPTIONS", "", http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"}}, 204, "", ""},
		{"OPTIONS that is no preflight", false, "OPTIONS", "", nil, 401, "Bearer", ""},
		{"websocket without", true, "", "", nil, 401, "Bearer", ""},
		{"websocket wrong", true, "", "?token=nope", nil, 401, `Bearer error="invalid_token"`, ""},
		{"websocket query parameter", true, "", "?token=s3cret", nil, 101, "", "connect"},
		{"websocket header", true, "", "", http.Header{"Authorization": {"Bearer s3cret"}}, 101, "", "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tc.name, " ", "-")
			path := "/agents/hooked/" + name + tc.query
			var resp *http.Response
			if tc.ws {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				ws, r, err := websocket.Dial(ctx, wsURL(base, path), &websocket.DialOptions{HTTPHeader: tc.header})
				if err == nil {
					c := &wsClient{t: t, ws: ws}
					c.expect(map[string]any{"type": "cf_agent_identity", "name": name})
					ws.Close(websocket.StatusNormalClosure, "")
				} else if r == nil {
					t.Fatalf("dial: %v", err)
				}
				resp = r
			} else {
				req, _ := http.NewRequestWithContext(t.Context(), tc.method, base+path, nil)
				for k, v := range tc.header {
					req.Header[k] = v
				}
				var err error
				if resp, err = http.DefaultClient.Do(req); err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			mu.Lock()
			hook := hooks[name]
			mu.Unlock()
			if hook != tc.hook {
				t.Errorf("hook run: %q, want %q", hook, tc.hook)
			}
			if tc.hook == "" {
				noAgentRow(t, e, store.AgentKey{Class: "Hooked", Name: name})
			}
		})
	}
}
