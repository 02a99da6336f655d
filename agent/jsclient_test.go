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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/counter"
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
	node := requireTool(t, "node")
	npmInstall(t, requireTool(t, "npm"))

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

	runCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(runCtx, node, "e2e.mjs", url1, "js-e2e", url2)
	cmd.Dir = jsclientDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("node e2e.mjs %s js-e2e %s (%s):\n%s", url1, url2, time.Since(start).Round(time.Millisecond), &out)
	if err != nil {
		t.Fatalf("node e2e.mjs failed: %v (its output is above)", err)
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatalf("node e2e.mjs exited 0 without printing PASS")
	}

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

// requireTool returns the path of a command the test needs. A missing one
// skips the test, or fails it when the CI environment variable is set.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not on PATH, and CI is set: the JavaScript client test must run in CI (install Node.js 20+ with npm)", name)
	}
	t.Skipf("skipping the JavaScript client test: %s is not on PATH (install Node.js 20+ with npm to run it; with CI set it fails instead)", name)
	return ""
}

// npmMu keeps runs of the test in one process (-count) from installing at
// the same time.
var npmMu sync.Mutex

// npmInstall runs `npm ci` in jsclientDir unless its node_modules already
// holds the versions package.json pins.
func npmInstall(t *testing.T, npm string) {
	t.Helper()
	npmMu.Lock()
	defer npmMu.Unlock()
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(jsclientDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("%s/package.json: %v", jsclientDir, err)
	}
	installed := true
	for dep, want := range pkg.Dependencies {
		var got struct{ Version string }
		b, err := os.ReadFile(filepath.Join(jsclientDir, "node_modules", dep, "package.json"))
		if err != nil || json.Unmarshal(b, &got) != nil || got.Version != want {
			installed = false
			break
		}
	}
	if installed {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = jsclientDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in agent/%s: %v\n%s", jsclientDir, err, out)
	}
	t.Logf("npm ci in agent/%s:\n%s", jsclientDir, out)
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
