//go:build linux

package agent_test

// The harness of the multi-process tests (crash_test.go, placement_test.go):
// a second process running an engine and a runtime on the store the test
// names, which the test calls over HTTP and kills with SIGKILL.
//
// The child is this test binary run again with envChild set; TestMain hands
// it to runChild before any test runs. It opens the store, starts an engine
// and a runtime with the classes of registerProcClasses, serves rt.Handler
// under /agents/ and the control endpoints /call and /spin on a loopback
// port, prints its ready line (node id and address) and runs until it is
// killed, or stops gracefully on SIGTERM.
//
// Both processes record what they do in an audit file outside the store:
// one JSON line per event, appended with a single write, so that a line
// written before a kill -9 is there afterwards.

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
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/pgtest"
	"agentflow/internal/teststore"
	"agentflow/store"
	"agentflow/workflow"
)

// envChild makes the test binary a child process; it holds the child's
// childConfig as JSON.
const envChild = "AGENTFLOW_AGENT_TEST_CHILD"

// readyLine starts the line a child prints once it serves: "<readyLine>
// <node id> <address>".
const readyLine = "agent-test-child: ready"

func TestMain(m *testing.M) {
	if cfg, ok := os.LookupEnv(envChild); ok {
		runChild(cfg) // never returns
	}
	os.Exit(m.Run())
}

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
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readAudit returns the audit file's records. A line still being written
// (by a process that is alive) is left out.
func readAudit(t *testing.T, path string) []auditRec {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read audit file: %v", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		b = nil
	}
	var out []auditRec
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" {
			continue
		}
		var r auditRec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
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

// runChild runs this process as a child configured by raw (a childConfig
// as JSON) and ends it.
func runChild(raw string) {
	if err := serveChild(raw); err != nil {
		fmt.Fprintf(os.Stderr, "agent test child %d: %v\n", os.Getpid(), err)
		os.Exit(3)
	}
	os.Exit(0)
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
	fmt.Printf("%s %s %s\n", readyLine, eng.NodeID(), ln.Addr())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return errors.Join(rt.Stop(sctx), eng.Stop(sctx))
}

// child is a child process, seen from the test.
type child struct {
	t    *testing.T
	cmd  *exec.Cmd
	node string // its engine's node id
	addr string // host:port it serves on
	done chan struct{}
	// hold, when set, keeps the child from being reaped until it is
	// closed (reap): killed, it stays a zombie meanwhile.
	hold chan struct{}

	mu     sync.Mutex
	out    bytes.Buffer
	lines  bytes.Buffer // stdout not yet split into lines
	ready  chan string  // the ready line
	sawRdy bool
}

// childOutput collects a child's output and watches for its ready line.
type childOutput child

func (w *childOutput) Write(p []byte) (int, error) {
	c := (*child)(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.Write(p)
	c.lines.Write(p)
	for {
		line, err := c.lines.ReadString('\n')
		if err != nil { // a partial line: keep it
			rest := []byte(line)
			c.lines.Reset()
			c.lines.Write(rest)
			break
		}
		if strings.HasPrefix(line, readyLine) && !c.sawRdy {
			c.sawRdy = true
			c.ready <- strings.TrimSpace(strings.TrimPrefix(line, readyLine))
		}
	}
	return len(p), nil
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// startChild starts a child with cfg and waits until it serves. The child
// is killed when the test ends (and, by the kernel, if the test process
// dies); a data race it reported fails the test.
func startChild(t *testing.T, cfg childConfig) *child {
	t.Helper()
	return startChildHolding(t, cfg, false)
}

// startHeldChild is startChild for a child that is not reaped when it
// dies, until reap: killed, it stays a zombie, as a process killed from a
// shell does until the shell waits for it. While it is held, a child that
// exits before it is ready is noticed only by the 30 s timeout.
func startHeldChild(t *testing.T, cfg childConfig) *child {
	t.Helper()
	return startChildHolding(t, cfg, true)
}

func startChildHolding(t *testing.T, cfg childConfig, hold bool) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, done: make(chan struct{}), ready: make(chan string, 1)}
	if hold {
		c.hold = make(chan struct{})
	}
	c.cmd = exec.Command(exe, "-test.run=^$")
	c.cmd.Env = append(os.Environ(), envChild+"="+string(b))
	c.cmd.Stdout = (*childOutput)(c)
	c.cmd.Stderr = (*childOutput)(c)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	// Wait reaps the child as soon as it dies, unless it is held.
	go func() {
		if c.hold != nil {
			<-c.hold
		}
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.kill()
		c.reap()
		out := c.output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("data race in child %d:\n%s", c.pid(), out)
		} else if t.Failed() {
			t.Logf("output of child %d (%s):\n%s", c.pid(), c.node, out)
		}
	})
	select {
	case line := <-c.ready:
		if _, err := fmt.Sscan(line, &c.node, &c.addr); err != nil {
			t.Fatalf("child's ready line %q: %v", line, err)
		}
	case <-c.done:
		t.Fatalf("child exited before it was ready: %v\n%s", c.cmd.ProcessState, c.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("child not ready after 30 s:\n%s", c.output())
	}
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// kill kills the child with SIGKILL and waits until it is reaped; a held
// child it leaves a zombie, returning once it has died.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	if c.hold == nil {
		<-c.done
		return
	}
	for !isZombie(c.pid()) {
		select {
		case <-c.done: // reaped already
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// reap lets a held child be reaped and waits until it is.
func (c *child) reap() {
	if c.hold != nil {
		select {
		case <-c.hold:
		default:
			close(c.hold)
		}
	}
	<-c.done
}

// isZombie reports whether process pid has died but not been reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state is the field after the parenthesized command name.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && bytes.HasPrefix(b[i+1:], []byte(" Z"))
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
