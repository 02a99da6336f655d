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
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Tally is a counter that also answers plain HTTP with its count.
type Tally struct{ counter.Counter }

func (t *Tally) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Tally", "yes")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "count=%d body=%s rest=%s", t.State().Count, body, agent.Rest(r))
}

const clusterSecret = "c1uster-s3cret"

// clusterNode is one node of a test cluster: an engine and a runtime on
// the shared store, serving its handler on a loopback port it advertises.
type clusterNode struct {
	*env
	url string // base URL of the server
	srv *httptest.Server
}

// newClusterNode starts a node; register (nil for none) registers its
// classes.
func newClusterNode(t *testing.T, st store.Store, register func(*agent.Runtime), o agent.HandlerOptions) *clusterNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	e := newEnv(t, envOptions{store: st, rt: agent.Options{AdvertiseURL: base + "/agents", ClusterSecret: clusterSecret},
		setup: register})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: e.rt.Handler(o)}}
	srv.Start()
	t.Cleanup(srv.Close)
	return &clusterNode{env: e, url: base, srv: srv}
}

func registerTally(rt *agent.Runtime) {
	agent.MustRegister[Tally](rt, "Tally", agent.ClassOptions{Callable: []string{"increment", "countdown"}})
}

// Two nodes of one class: whichever node a request or call reaches, it is
// served by the one node the agent is live on.
func TestClusterRoutesToTheOwner(t *testing.T) {
	t.Parallel()
	a := newClusterNode(t, nil, registerTally, agent.HandlerOptions{})
	b := newClusterNode(t, a.store, registerTally, agent.HandlerOptions{})
	ctx := t.Context()

	// Live on a after its first call there.
	if n, err := agent.Call(ctx, a.rt, "alice", (*Tally).Increment, 2); err != nil || n != 2 {
		t.Fatalf("Call on a = %d, %v", n, err)
	}
	t.Run("Ref.Call", func(t *testing.T) {
		res, err := b.rt.Ref("Tally", "alice").Call(ctx, "increment", 3)
		if err != nil || string(res) != "5" {
			t.Fatalf("Ref.Call through b = %s, %v; want 5", res, err)
		}
	})
	t.Run("typed Call", func(t *testing.T) {
		n, err := agent.Call(ctx, b.rt, "alice", (*Tally).Increment, 1)
		if err != nil || n != 6 {
			t.Fatalf("agent.Call through b = %d, %v; want 6", n, err)
		}
	})
	t.Run("streaming", func(t *testing.T) {
		var chunks []string
		res, err := b.rt.Ref("Tally", "alice").CallWith(ctx, "countdown", agent.CallOptions{
			OnChunk: func(c json.RawMessage) error { chunks = append(chunks, string(c)); return nil }}, 3)
		if err != nil || string(res) != `"liftoff"` || strings.Join(chunks, ",") != "3,2,1" {
			t.Fatalf("countdown through b = %s, %v, chunks %v", res, err, chunks)
		}
	})
	t.Run("errors keep their kind", func(t *testing.T) {
		_, err := b.rt.Ref("Tally", "alice").Call(ctx, "nope")
		if !errors.Is(err, agent.ErrMethodNotFound) {
			t.Fatalf("unknown method through b: %v, want ErrMethodNotFound", err)
		}
		_, err = b.rt.Ref("Tally", "alice").Call(ctx, "increment", "x")
		if !errors.Is(err, agent.ErrBadArguments) {
			t.Fatalf("bad argument through b: %v, want ErrBadArguments", err)
		}
	})
	t.Run("state", func(t *testing.T) {
		st, err := b.rt.Ref("Tally", "alice").State(ctx)
		if err != nil || string(st) != `{"count":6}` {
			t.Fatalf("State through b = %s, %v", st, err)
		}
	})
	t.Run("HTTP", func(t *testing.T) {
		resp, err := http.Post(b.url+"/agents/tally/alice/x?q=1", "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Tally") != "yes" || string(body) != "count=6 body=hi rest=/x" {
			t.Fatalf("POST through b: %s %v %q", resp.Status, resp.Header, body)
		}
	})
	t.Run("WebSocket", func(t *testing.T) {
		viaB := dial(t, wsURL(b.url, "/agents/tally/alice"))
		viaB.expect(map[string]any{"type": "cf_agent_identity", "name": "alice", "agent": "tally"})
		viaB.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 6}})
		viaA := dial(t, wsURL(a.url, "/agents/tally/alice"))
		viaA.expect(map[string]any{"type": "cf_agent_identity"})
		viaA.expect(map[string]any{"type": "cf_agent_state"})

		viaB.send(`{"type":"rpc","id":"1","method":"increment","args":[4]}`)
		viaB.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 10}})
		viaB.expect(map[string]any{"type": "rpc", "id": "1", "success": true, "result": 10, "done": true})
		viaA.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 10}})

		viaA.send(`{"type":"cf_agent_state","state":{"count":20}}`)
		viaB.expect(map[string]any{"type": "cf_agent_state", "state": map[string]any{"count": 20}})

		viaB.send(`{"type":"rpc","id":"2","method":"countdown","args":[2]}`)
		viaB.expect(map[string]any{"id": "2", "success": true, "result": 2, "done": false})
		viaB.expect(map[string]any{"id": "2", "success": true, "result": 1, "done": false})
		viaB.expect(map[string]any{"id": "2", "success": true, "result": "liftoff", "done": true})
	})
	if a.rt.Live() != 1 || b.rt.Live() != 0 {
		t.Fatalf("Live: a %d, b %d; want the agent on a alone", a.rt.Live(), b.rt.Live())
	}
}

// A node without a class sends requests and calls for it to a node that
// has it, and one that no node has is a clear error.
func TestClusterClassElsewhere(t *testing.T) {
	t.Parallel()
	a := newClusterNode(t, nil, registerTally, agent.HandlerOptions{})
	c := newClusterNode(t, a.store, nil, agent.HandlerOptions{}) // hosts no class
	ctx := t.Context()

	res, err := c.rt.Ref("Tally", "bob").Call(ctx, "increment", 7)
	if err != nil || string(res) != "7" {
		t.Fatalf("Ref.Call from a node without the class = %s, %v", res, err)
	}
	resp, err := http.Get(c.url + "/agents/tally/bob")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(string(body), "count=7") {
		t.Fatalf("GET through a node without the class: %s %q", resp.Status, body)
	}
	if a.rt.Live() != 1 || c.rt.Live() != 0 {
		t.Fatalf("Live: a %d, c %d; want the agent on a alone", a.rt.Live(), c.rt.Live())
	}

	_, err = c.rt.Ref("Nobody", "x").Call(ctx, "increment", 1)
	if !errors.Is(err, agent.ErrUnknownClass) || !strings.Contains(err.Error(), "no node of the cluster hosts it") {
		t.Fatalf("a class no node has: %v, want ErrUnknownClass saying so", err)
	}
	resp, err = http.Get(c.url + "/agents/nobody/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET of a class no node has: %s, want 400", resp.Status)
	}
}

// Requests between nodes need the cluster secret.
func TestClusterSecretRequired(t *testing.T) {
	t.Parallel()
	a := newClusterNode(t, nil, registerTally, agent.HandlerOptions{Token: "user-token"})
	body := `{"class":"Tally","name":"eve","method":"increment","args":[1]}`
	for _, tc := range []struct {
		name, secret string
		want         int
	}{
		{"none", "", http.StatusForbidden},
		{"wrong", "guess", http.StatusForbidden},
		{"right", clusterSecret, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, a.url+"/agents/_cluster/call", strings.NewReader(body))
			if tc.secret != "" {
				req.Header.Set("Agentflow-Cluster-Secret", tc.secret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s (%s), want %d", resp.Status, msg, tc.want)
			}
			if tc.want == http.StatusForbidden && !strings.Contains(string(msg), "secret") {
				t.Fatalf("refusal %q does not name the secret", msg)
			}
		})
	}
	// A forged forwarded request gets no further than the internal call.
	req, _ := http.NewRequest(http.MethodGet, a.url+"/agents/tally/eve", nil)
	req.Header.Set("Agentflow-Forwarded-By", "node_forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged forwarded request: %s, want 403", resp.Status)
	}
	if st, err := a.store.GetAgent(t.Context(), store.AgentKey{Class: "Tally", Name: "eve"}); err != nil || string(st.State) != `{"count":1}` {
		t.Fatalf("state after one allowed call among refused ones: %v, %v; want {\"count\":1}", st, err)
	}
}

// A node whose agents' node stops answering says so, with an error the
// caller can retry on; once the dead node is gone, the agent is taken
// over with its state.
func TestClusterOwnerUnavailable(t *testing.T) {
	t.Parallel()
	a := newClusterNode(t, nil, registerTally, agent.HandlerOptions{})
	b := newClusterNode(t, a.store, registerTally, agent.HandlerOptions{})
	ctx := t.Context()
	if _, err := agent.Call(ctx, a.rt, "carol", (*Tally).Increment, 1); err != nil {
		t.Fatal(err)
	}
	a.srv.Close() // a's process still holds the agent, but answers nothing

	_, err := b.rt.Ref("Tally", "carol").Call(ctx, "increment", 1)
	if !errors.Is(err, agent.ErrNodeUnavailable) {
		t.Fatalf("call to a node that does not answer: %v, want ErrNodeUnavailable", err)
	}
	resp, err := http.Get(b.url + "/agents/tally/carol")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("GET for an agent on a node that does not answer: %s, want 503 with Retry-After", resp.Status)
	}

	// a goes for good (a crash is the chaos test's); its agent is free.
	if err := a.rt.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.eng.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := agent.Call(ctx, b.rt, "carol", (*Tally).Increment, 1)
	if err != nil || n != 2 {
		t.Fatalf("after a is gone: Call through b = %d, %v; want 2 (taken over with its state)", n, err)
	}
}

// A node that last found an agent on one node still finds it after it
// moved to another: the node it remembers answers 421 naming the owner.
func TestClusterFollowsAMovedAgent(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	// a evicts dave once idle, so that c can take it up; long enough idle
	// that a loaded machine does not evict it between the first two calls,
	// which would let b take it up instead.
	a := newEnv(t, envOptions{rt: agent.Options{AdvertiseURL: base + "/agents", ClusterSecret: clusterSecret,
		IdleTimeout: 500 * time.Millisecond}, setup: registerTally})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: a.rt.Handler(agent.HandlerOptions{})}}
	srv.Start()
	t.Cleanup(srv.Close)
	b := newClusterNode(t, a.store, registerTally, agent.HandlerOptions{})
	c := newClusterNode(t, a.store, registerTally, agent.HandlerOptions{})
	ctx := t.Context()

	if n, err := agent.Call(ctx, a.rt, "dave", (*Tally).Increment, 1); err != nil || n != 1 {
		t.Fatalf("Call on a = %d, %v", n, err)
	}
	if n, err := agent.Call(ctx, b.rt, "dave", (*Tally).Increment, 1); err != nil || n != 2 {
		t.Fatalf("Call through b = %d, %v", n, err)
	}
	if a.rt.Live() != 1 || b.rt.Live() != 0 {
		t.Fatalf("Live: a %d, b %d; want dave on a, b having forwarded to it", a.rt.Live(), b.rt.Live())
	}
	// a lets it go; c takes it up.
	for a.rt.Live() > 0 {
		time.Sleep(25 * time.Millisecond)
		a.rt.EvictIdle(ctx)
	}
	if n, err := agent.Call(ctx, c.rt, "dave", (*Tally).Increment, 1); err != nil || n != 3 {
		t.Fatalf("Call on c = %d, %v", n, err)
	}
	if c.rt.Live() != 1 {
		t.Fatalf("c has %d agents live, want 1", c.rt.Live())
	}
	// b last found it on a.
	if n, err := agent.Call(ctx, b.rt, "dave", (*Tally).Increment, 1); err != nil || n != 4 {
		t.Fatalf("Call through b after the move = %d, %v; want 4", n, err)
	}
	resp, err := http.Get(b.url + "/agents/tally/dave")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(string(body), "count=4") {
		t.Fatalf("GET through b after the move: %s %q", resp.Status, body)
	}
	if a.rt.Live() != 0 || b.rt.Live() != 0 || c.rt.Live() != 1 {
		t.Fatalf("Live: a %d, b %d, c %d; want the agent on c alone", a.rt.Live(), b.rt.Live(), c.rt.Live())
	}
}

// lapsingStore fails heartbeats while lapse is set, as a node cut off from
// the store would see them fail.
type lapsingStore struct {
	store.Store
	lapse atomic.Bool
}

func (s *lapsingStore) Heartbeat(ctx context.Context, n store.Node) error {
	if s.lapse.Load() {
		return errors.New("store unreachable")
	}
	return s.Store.Heartbeat(ctx, n)
}

// A node whose heartbeat lapsed serves no agent, even one live in its
// memory, until a heartbeat succeeds again.
func TestLapsedLeaseServesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	inner, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "lapse.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	st := &lapsingStore{Store: inner}
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Lease: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	registerTally(rt)
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	if n, err := agent.Call(ctx, rt, "erin", (*Tally).Increment, 1); err != nil || n != 1 {
		t.Fatalf("Call = %d, %v", n, err)
	}

	st.lapse.Store(true)
	time.Sleep(400 * time.Millisecond) // past the lease
	_, err = agent.Call(ctx, rt, "erin", (*Tally).Increment, 1)
	if !errors.Is(err, agent.ErrLeaseLapsed) {
		t.Fatalf("Call with the lease lapsed: %v, want ErrLeaseLapsed", err)
	}
	srv := httptest.NewServer(rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/agents/tally/erin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET with the lease lapsed: %s, want 503", resp.Status)
	}

	st.lapse.Store(false) // the next heartbeat, which a refused call asks for, renews it
	if n, err := agent.Call(ctx, rt, "erin", (*Tally).Increment, 1); err != nil || n != 2 {
		t.Fatalf("Call after the lease was renewed = %d, %v; want 2", n, err)
	}
}
