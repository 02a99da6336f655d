package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/store"
)

// wsClient is a protocol-level client for tests.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { ws.CloseNow() })
	return &wsClient{t: t, ws: ws}
}

func (c *wsClient) send(msg string) {
	c.t.Helper()
	if err := c.ws.Write(c.t.Context(), websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next reads the next frame as a map.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return m
}

// expect reads the next frame and checks the given fields.
func (c *wsClient) expect(fields map[string]any) map[string]any {
	c.t.Helper()
	m := c.next()
	for k, want := range fields {
		got, _ := json.Marshal(m[k])
		w, _ := json.Marshal(want)
		if string(got) != string(w) {
			c.t.Fatalf("frame %v: %s = %s, want %s", m, k, got, w)
		}
	}
	return m
}

// Guarded is Counter with a readonly switch and a message hook.
type Guarded struct {
	counter.Counter
}

func (g *Guarded) OnConnect(ctx context.Context, c *agent.Conn, r *http.Request) error {
	if r.URL.Query().Get("reject") != "" {
		return errors.New("go away")
	}
	c.SetReadonly(r.URL.Query().Get("readonly") == "1")
	return nil
}

func (g *Guarded) OnMessage(ctx context.Context, c *agent.Conn, msg []byte) {
	c.Send("echo:" + string(msg))
}

func (g *Guarded) Bump(ctx context.Context) (int, error) { return g.Increment(ctx, 1) }

func serve(t *testing.T, e *env, o agent.HandlerOptions) string {
	srv := httptest.NewServer(e.rt.Handler(o))
	t.Cleanup(srv.Close)
	return srv.URL
}

func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

func TestWebSocketProtocol(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{rt: agent.Options{MaxMessageBytes: 1024}, setup: func(rt *agent.Runtime) {
		counter.Register(rt)
		agent.MustRegister[Guarded](rt, "Guarded", agent.ClassOptions{Callable: []string{"increment", "countdown", "bump"}})
	}})
	base := serve(t, e, agent.HandlerOptions{})

	a := dial(t, wsURL(base, "/agents/counter/room?_pk=client-a"))
	a.expect(map[string]any{"type": "cf_agent_identity", "name": "room", "agent": "counter", "stateFollows": true})
	a.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 0}})
	b := dial(t, wsURL(base, "/agents/counter/room"))
	b.expect(map[string]any{"type": "cf_agent_identity"})
	b.expect(map[string]any{"type": "cf_agent_state"})

	t.Run("rpc", func(t *testing.T) {
		a.send(`{"type":"rpc","id":"1","method":"increment","args":[2]}`)
		// A method's state change reaches every connection, the caller's
		// included, before the reply (as on the original server).
		a.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 2}})
		a.expect(map[string]any{"type": "rpc", "id": "1", "success": true, "done": true, "result": 2})
		b.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 2}})
	})
	t.Run("stream", func(t *testing.T) {
		a.send(`{"type":"rpc","id":"s","method":"countdown","args":[3]}`)
		for _, n := range []int{3, 2, 1} {
			a.expect(map[string]any{"id": "s", "success": true, "done": false, "result": n})
		}
		a.expect(map[string]any{"id": "s", "success": true, "done": true, "result": "liftoff"})
	})
	t.Run("state push", func(t *testing.T) {
		a.send(`{"type":"cf_agent_state","state":{"count":10}}`)
		b.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 10}})
		// No echo to the sender: its next frame answers its next request.
		a.send(`{"type":"rpc","id":"2","method":"increment","args":[1]}`)
		a.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 11}})
		a.expect(map[string]any{"id": "2", "result": 11})
		b.expect(map[string]any{"state": map[string]any{"count": 11}})
	})
	t.Run("state rejected", func(t *testing.T) {
		a.send(`{"type":"cf_agent_state","state":{"count":-1}}`)
		m := a.expect(map[string]any{"type": "cf_agent_state_error"})
		if !strings.Contains(m["error"].(string), "must not be negative") {
			t.Errorf("error = %v", m["error"])
		}
		a.send(`{"type":"cf_agent_state","state":{"count":"many"}}`)
		a.expect(map[string]any{"type": "cf_agent_state_error"})
		a.send(`{"type":"cf_agent_state"}`)
		m = a.expect(map[string]any{"type": "cf_agent_state_error"})
		if !strings.Contains(m["error"].(string), `"state" is missing`) {
			t.Errorf("error = %v", m["error"])
		}
	})
	t.Run("bad calls", func(t *testing.T) {
		for _, tc := range []struct{ frame, id, want string }{
			{`{"type":"rpc","id":"3","method":"reset","args":[]}`, "3", "Method reset is not callable"},
			{`{"type":"rpc","id":"4","method":"fly","args":[]}`, "4", "Method fly does not exist"},
			{`{"type":"rpc","id":"5","method":"increment","args":["x"]}`, "5", "argument 1"},
			{`{"type":"rpc","id":"6","method":"increment","args":[1,2]}`, "6", "got 2 argument(s), want 1"},
			{`{"type":"rpc","id":"7","method":"increment"}`, "7", "got 0 argument(s), want 1"},
			{`{"type":"rpc","id":"8","method":"increment","args":{"by":1}}`, "8", `"args" must be an array`},
			{`{"type":"rpc","id":"9","method":""}`, "9", `"method" must be a non-empty string`},
			{`{"type":"rpc","id":"10","method":"countdown","args":[5000]}`, "10", "between 0 and 1000"},
		} {
			a.send(tc.frame)
			m := a.expect(map[string]any{"type": "rpc", "id": tc.id, "success": false})
			if !strings.Contains(m["error"].(string), tc.want) {
				t.Errorf("%s: error = %q, want it to contain %q", tc.frame, m["error"], tc.want)
			}
		}
		for _, tc := range []struct{ frame, want string }{
			{`not json`, "unrecognized message"},
			{`{"type":"rpc","method":"increment"}`, `"id" is missing`},
			{`{"type":"hello"}`, "unrecognized message"},
			{`[1,2]`, "unrecognized message"},
			{strings.Repeat("x", 5000), "exceeds the limit of 1024 bytes"},
		} {
			a.send(tc.frame)
			m := a.expect(map[string]any{"type": "cf_agent_error"})
			if !strings.Contains(m["error"].(string), tc.want) {
				t.Errorf("%.40s: error = %q, want it to contain %q", tc.frame, m["error"], tc.want)
			}
		}
		// The connection and the agent are still healthy.
		a.send(`{"type":"rpc","id":"ok","method":"increment","args":[1]}`)
		a.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 12}})
		a.expect(map[string]any{"id": "ok", "success": true, "result": 12})
		b.expect(map[string]any{"state": map[string]any{"count": 12}})
	})

	t.Run("readonly", func(t *testing.T) {
		r := dial(t, wsURL(base, "/agents/guarded/g?readonly=1"))
		r.next()
		r.next()
		r.send(`{"type":"cf_agent_state","state":{"count":5}}`)
		r.expect(map[string]any{"type": "cf_agent_state_error", "error": "Connection is readonly"})
		r.send(`{"type":"rpc","id":"1","method":"bump","args":[]}`)
		m := r.expect(map[string]any{"id": "1", "success": false})
		if !strings.Contains(m["error"].(string), "readonly") {
			t.Errorf("bump over a readonly connection: error = %v", m["error"])
		}
		r.send(`hello`)
		if _, b, err := r.ws.Read(t.Context()); err != nil || string(b) != "echo:hello" {
			t.Errorf("OnMessage echo = %q, %v", b, err)
		}
	})
	t.Run("connect refused", func(t *testing.T) {
		c := dial(t, wsURL(base, "/agents/guarded/g?reject=1"))
		c.next()
		c.next()
		_, _, err := c.ws.Read(t.Context())
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Errorf("read after refused connect: %v, want close 1008", err)
		}
	})
}

func TestHTTPRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		counter.Register(rt)
		agent.MustRegister[Hooked](rt, "Hooked", agent.ClassOptions{})
	}})
	base := serve(t, e, agent.HandlerOptions{
		CORS: &agent.CORS{AllowedOrigins: []string{"https://app.example"}},
		BeforeRequest: func(r *http.Request, key store.AgentKey) error {
			if key.Name == "secret" && r.Header.Get("Authorization") != "Bearer ok" {
				return &agent.HTTPError{Status: http.StatusUnauthorized, Message: "no token"}
			}
			return nil
		},
		BeforeConnect: func(r *http.Request, key store.AgentKey) error {
			if key.Name == "secret" {
				return errors.New("forbidden")
			}
			return nil
		},
	})
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		status             int
		body               string
	}{
		{"request hook", "GET", "/agents/hooked/h1/stats/today", nil, 200, "hello from h1/stats/today"},
		{"root of instance", "GET", "/agents/hooked/h1", nil, 200, "hello from h1"},
		{"escaped name", "GET", "/agents/hooked/a%2Fb", nil, 200, "hello from a/b"},
		{"unknown class", "GET", "/agents/nope/x", nil, 400, `unknown agent class "nope"`},
		{"no name", "GET", "/agents/counter", nil, 404, "not found"},
		{"empty name", "GET", "/agents/counter/", nil, 404, "not found"},
		{"outside prefix", "GET", "/other/counter/x", nil, 404, "not found"},
		{"no request hook", "GET", "/agents/counter/x", nil, 404, "does not serve HTTP"},
		{"before request refuses", "GET", "/agents/hooked/secret", nil, 401, "no token"},
		{"before request allows", "GET", "/agents/hooked/secret", map[string]string{"Authorization": "Bearer ok"}, 200, "hello from secret"},
		{"preflight", "OPTIONS", "/agents/hooked/h1", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}, 204, ""},
		{"websocket refused", "GET", "/agents/hooked/secret", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, 403, "forbidden"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, base+tc.path, nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s: %s %s = %d %q, want %d containing %q", tc.name, tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
		if tc.name == "preflight" && resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
			t.Errorf("preflight: Access-Control-Allow-Origin = %q", resp.Header.Get("Access-Control-Allow-Origin"))
		}
	}
}
