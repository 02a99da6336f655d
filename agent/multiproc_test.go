//go:build linux

package agent_test

// The harness of the multi-process tests (crash_test.go, placement_test.go):
// a second process running an engine and a runtime on the store the test
// names, which the test calls over HTTP and kills with SIGKILL.
//
// The child is this test binary run again with envChild set
// (internal/childproc); TestMain hands it to serveChild before any test
// runs. It opens the store, starts an engine
// and a runtime with the classes of registerProcClasses, serves rt.Handler
// under /agents/ and the control endpoints /call and /spin on a loopback
// port, prints its ready line (node id and address) and runs until it is
// killed, or stops gracefully on SIGTERM.
//
// Both processes record what they do in an audit file outside the store
// (childproc.Append), so that a line written before a kill -9 is there
// afterwards.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/childproc"
	"agentflow/internal/pgtest"
	"agentflow/internal/teststore"
	"agentflow/store"
	"agentflow/workflow"
)

// envChild makes the test binary a child process; it holds the child's
// childConfig as JSON.
const envChild = "AGENTFLOW_AGENT_TEST_CHILD"

func TestMain(m *testing.M) { childproc.Main(m, envChild, serveChild) }

// childConfig is what a child runs with.
type childConfig struct {
	Backend    string // "sqlite" or "postgres"
	SQLitePath string
	DSN        string
	Schema     string
	// Audit is the audit file the child's activations are recorded in
	// (see activationAudit); "" records none.
	Audit string
}

func (c childConfig) open(ctx context.Context) (store.Store, error) {
	return teststore.Open(ctx, c.Backend, c.SQLitePath, c.DSN, c.Schema)
}

// registerProcClasses registers the classes of the multi-process tests.
func registerProcClasses(rt *agent.Runtime) {
	agent.MustRegister[Stepper](rt, "Stepper", agent.ClassOptions{})
	agent.MustRegister[RecoveringStepper](rt, "RecoveringStepper", agent.ClassOptions{})
	agent.MustRegister[PlacedCounter](rt, "Counter", agent.ClassOptions{Callable: []string{"increment"}})
}

// procLogger is a logger for a runtime the test makes itself: silent, or
// into the test's log with -v.
func procLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// postgresSchema returns a fresh schema on the test server. Without a
// server the test is skipped, unless CI is set: then it fails.
func postgresSchema(t *testing.T) (dsn, schema string) {
	t.Helper()
	if os.Getenv(pgtest.EnvVar) == "" && os.Getenv("CI") != "" {
		t.Fatalf("%s is unset, and CI is set: the multi-process PostgreSQL tests must run in CI", pgtest.EnvVar)
	}
	return pgtest.Schema(t)
}

// auditRec is one line of an audit file.
type auditRec struct {
	Ev    string    `json:"ev"` // step, recovered, activated, call, callerr
	PID   int       `json:"pid"`
	At    time.Time `json:"at"`
	Agent string    `json:"agent"`
	I     int       `json:"i,omitempty"` // step: which; call: the result
	// recovered: the status OnFiberRecovered was handed, the ledger's
	// status at that moment, and the stash it was handed.
	Status store.FiberStatus `json:"status,omitempty"`
	Ledger store.FiberStatus `json:"ledger,omitempty"`
	Stash  json.RawMessage   `json:"stash,omitempty"`
	Err    string            `json:"err,omitempty"`
}

// appendAudit appends r to the audit file at path with one write.
func appendAudit(path string, r auditRec) error {
	r.PID, r.At = os.Getpid(), time.Now()
	return childproc.Append(path, r)
}

// readAudit returns the audit file's records. A line still being written
// (by a process that is alive) is left out.
func readAudit(t *testing.T, path string) []auditRec {
	t.Helper()
	return childproc.ReadAudit[auditRec](t, path)
}

// callRequest is the body of a child's /call and /spin.
type callRequest struct {
	Class  string            `json:"class"`
	Name   string            `json:"name"`
	Method string            `json:"method"`
	Args   []json.RawMessage `json:"args"`
	// Audit, for /spin, is the file each call's outcome is recorded in.
	Audit string `json:"audit,omitempty"`
}

// callResult is what a child's Go call returned.
type callResult struct {
	Result json.RawMessage `json:"result,omitempty"`
	Err    string          `json:"err,omitempty"`
	// Elsewhere is errors.Is(err, agent.ErrAgentElsewhere); OwnerNode and
	// OwnerPID are the node of the *store.AgentOwnedError in err.
	Elsewhere bool   `json:"elsewhere,omitempty"`
	OwnerNode string `json:"owner_node,omitempty"`
	OwnerPID  int    `json:"owner_pid,omitempty"`
}

func resultOf(res json.RawMessage, err error) callResult {
	if err == nil {
		return callResult{Result: res}
	}
	r := callResult{Err: err.Error(), Elsewhere: errors.Is(err, agent.ErrAgentElsewhere)}
	if owned, ok := errors.AsType[*store.AgentOwnedError](err); ok {
		r.OwnerNode, r.OwnerPID = owned.Node.ID, owned.Node.PID
	}
	return r
}

func serveChild(raw string) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", envChild, err)
	}
	if cfg.Audit != "" {
		activationAudit.Store(&cfg.Audit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	st, err := cfg.open(ctx)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: log})
	if err != nil {
		return err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: log, IdleTimeout: time.Hour})
	if err != nil {
		return err
	}
	registerProcClasses(rt)
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{}))
	decode := func(w http.ResponseWriter, r *http.Request) (callRequest, []any, bool) {
		var req callRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return req, nil, false
		}
		args := make([]any, len(req.Args))
		for i, a := range req.Args {
			args[i] = a
		}
		return req, args, true
	}
	// /call makes one Go call (Ref.Call) and answers with its callResult.
	mux.HandleFunc("POST /call", func(w http.ResponseWriter, r *http.Request) {
		req, args, ok := decode(w, r)
		if !ok {
			return
		}
		res := resultOf(rt.Ref(req.Class, req.Name).Call(r.Context(), req.Method, args...))
		_ = json.NewEncoder(w).Encode(res)
	})
	// /spin makes the call over and over in the background, every 2 ms,
	// until the process ends, recording each outcome in req.Audit: a
	// "call" line with the (integer) result or a "callerr" line.
	mux.HandleFunc("POST /spin", func(w http.ResponseWriter, r *http.Request) {
		req, args, ok := decode(w, r)
		if !ok {
			return
		}
		go func() {
			for ctx.Err() == nil {
				res, err := rt.Ref(req.Class, req.Name).Call(ctx, req.Method, args...)
				rec := auditRec{Ev: "call", Agent: req.Name}
				if err == nil {
					err = json.Unmarshal(res, &rec.I)
				}
				if err != nil {
					rec.Ev, rec.Err = "callerr", err.Error()
				}
				if err := appendAudit(req.Audit, rec); err != nil {
					log.Error("audit", "err", err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	childproc.Ready(eng.NodeID(), ln.Addr())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return errors.Join(rt.Stop(sctx), eng.Stop(sctx))
}

// child is a child process, seen from the test.
type child struct {
	*childproc.Child
	t    *testing.T
	node string // its engine's node id
	addr string // host:port it serves on
}

// startChild starts a child with cfg and waits until it serves. The child
// is killed when the test ends (and, by the kernel, if the test process
// dies); a data race it reported fails the test.
func startChild(t *testing.T, cfg childConfig) *child {
	t.Helper()
	return startChildWith(t, cfg, childproc.Options{})
}

// startHeldChild is startChild for a child that is not reaped when it
// dies, until Reap (childproc.Options.Hold): killed, it stays a zombie.
func startHeldChild(t *testing.T, cfg childConfig) *child {
	t.Helper()
	return startChildWith(t, cfg, childproc.Options{Hold: true})
}

func startChildWith(t *testing.T, cfg childConfig, opts childproc.Options) *child {
	t.Helper()
	c := &child{Child: childproc.Start(t, envChild, cfg, opts), t: t}
	if _, err := fmt.Sscan(c.Ready, &c.node, &c.addr); err != nil {
		t.Fatalf("child's ready line %q: %v", c.Ready, err)
	}
	return c
}

func (c *child) post(path string, req callRequest) *http.Response {
	c.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.Post("http://"+c.addr+path, "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatalf("child %s: POST %s: %v", c.node, path, err)
	}
	return resp
}

func rawArgs(t *testing.T, args []any) []json.RawMessage {
	t.Helper()
	out := make([]json.RawMessage, len(args))
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// call makes the child call a method from Go (Ref.Call) and returns what
// the call returned.
func (c *child) call(class, name, method string, args ...any) callResult {
	c.t.Helper()
	resp := c.post("/call", callRequest{Class: class, Name: name, Method: method, Args: rawArgs(c.t, args)})
	defer resp.Body.Close()
	var res callResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		c.t.Fatalf("child %s: /call: status %d, %v", c.node, resp.StatusCode, err)
	}
	return res
}

// spin makes the child make the call over and over until it dies,
// recording each outcome in the audit file.
func (c *child) spin(audit, class, name, method string, args ...any) {
	c.t.Helper()
	resp := c.post("/spin", callRequest{Class: class, Name: name, Method: method, Args: rawArgs(c.t, args), Audit: audit})
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("child %s: /spin: status %d", c.node, resp.StatusCode)
	}
}

// get makes an HTTP GET on the child's server and returns the status and
// body.
func (c *child) get(path string) (int, string) {
	c.t.Helper()
	return httpGet(c.t, "http://"+c.addr+path)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
