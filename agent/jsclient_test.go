package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/internal/nodetest"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// jsclientDir holds the Node project of the end-to-end test: package.json
// and package-lock.json pin the `agents` client and `ws`; e2e.mjs drives
// them.
const jsclientDir = "jsclient"

// readonlyCounter is Counter whose connections are readonly when the
// client asks with ?readonly=true, for the JavaScript client's readonly
// checks.
type readonlyCounter struct {
	counter.Counter
}

func (r *readonlyCounter) OnConnect(_ context.Context, c *agent.Conn, req *http.Request) error {
	c.SetReadonly(req.URL.Query().Get("readonly") == "true")
	return nil
}

// TestJavaScriptClient runs jsclient/e2e.mjs, which speaks to a real
// runtime through AgentClient from the npm package `agents`: identity and
// state on connect, calls, streaming, state sync between two clients,
// refused calls and state pushes, and a readonly connection.
//
// It needs Node and npm, and installs the pinned packages with `npm ci`
// when jsclient/node_modules is missing. Without Node it is skipped, unless
// the CI environment variable is set: then it fails.
func TestJavaScriptClient(t *testing.T) {
	t.Parallel()
	nodetest.Install(t, jsclientDir)

	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "agents.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Two nodes of one cluster on the store: client B connects through
	// the second, so two clients of one agent talk through two nodes.
	url1, rt := startJSNode(t, st)
	url2, _ := startJSNode(t, st)

	nodetest.Run(t, jsclientDir, 60*time.Second, "e2e.mjs", url1, "js-e2e", url2)

	// What the clients did is what the server stored.
	for _, tc := range []struct{ class, name, want string }{
		{counter.Name, "js-e2e", `{"count":11}`},
		{"ReadonlyCounter", "js-e2e-ro", `{"count":7}`},
	} {
		got, err := rt.Ref(tc.class, tc.name).State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(got, tc.want) {
			t.Errorf("%s %s state after the script = %s, want %s", tc.class, tc.name, got, tc.want)
		}
	}
}

// startJSNode starts a node of the test's cluster on st: an engine, a
// runtime with the classes e2e.mjs uses, and a loopback server it
// advertises. It returns the server's URL and the runtime.
func startJSNode(t *testing.T, st store.Store) (string, *agent.Runtime) {
	t.Helper()
	ctx := t.Context()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger,
		AdvertiseURL: base + "/agents", ClusterSecret: "js-e2e-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.Register(rt); err != nil {
		t.Fatal(err)
	}
	agent.MustRegister[readonlyCounter](rt, "ReadonlyCounter", agent.ClassOptions{Callable: []string{"increment"}})
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: rt.Handler(agent.HandlerOptions{})}}
	srv.Start()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Stop(sctx); err != nil {
			t.Errorf("stop runtime: %v", err)
		}
		srv.Close()
		if err := eng.Stop(sctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
	return base, rt
}

func jsonEqual(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
