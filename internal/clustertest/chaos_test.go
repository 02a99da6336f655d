//go:build linux

package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
)

func TestMain(m *testing.M) {
	if IsChild() {
		RunChild() // never returns
	}
	os.Exit(m.Run())
}

// The chaos: how long, how often a node is killed, how many agents.
const (
	chaosFor    = 30 * time.Second
	killEvery   = 5 * time.Second
	shortFor    = 10 * time.Second // with -short
	shortKill   = 3 * time.Second
	agents      = 6
	nodes       = 3
	opPause     = 10 * time.Millisecond // between a client's operations
	opTimeout   = 15 * time.Second
	launchEvery = 6 // one operation in launchEvery starts a workflow
)

// TestChaos runs three nodes on one PostgreSQL schema and kills one with
// SIGKILL every killEvery, restarting it on its port at once, while
// clients increment counters and start workflows through random nodes
// over WebSocket, HTTP and named calls. Then it checks the audit log, the
// agents' state and the workflows (see the package documentation).
//
// By hand: AGENTFLOW_CHAOS_SECONDS sets the chaos's length, and
// AGENTFLOW_CHAOS_AUDIT a file to keep the audit log in (a failed run
// keeps it in the temporary directory anyway).
func TestChaos(t *testing.T) {
	dsn, schema := pgtest.Schema(t) // skips without AGENTFLOW_TEST_POSTGRES
	ctx := t.Context()
	st, err := postgres.Open(ctx, dsn, postgres.Options{Schema: schema, MaxConns: 4}) // migrates, once
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	duration, every := chaosFor, killEvery
	if testing.Short() {
		duration, every = shortFor, shortKill
	}
	if s := os.Getenv("AGENTFLOW_CHAOS_SECONDS"); s != "" { // longer runs by hand
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("AGENTFLOW_CHAOS_SECONDS=%q: %v", s, err)
		}
		duration = time.Duration(n) * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	if p := os.Getenv("AGENTFLOW_CHAOS_AUDIT"); p != "" { // to study a run that passed
		audit = p
		_ = os.Remove(p)
	}
	began := time.Now()

	cl := &cluster{t: t, st: st}
	for i := range nodes {
		p := startProc(t, Config{DSN: dsn, Schema: schema, Port: freePort(t), Audit: audit,
			Lease: 2 * time.Second, PollInterval: 200 * time.Millisecond}, i)
		cl.procs, cl.all = append(cl.procs, p), append(cl.all, p)
	}
	t.Logf("3 nodes ready in %v", time.Since(began).Round(time.Millisecond))

	// Clients.
	cctx, stopClients := context.WithCancel(ctx)
	var clients sync.WaitGroup
	rec := &recorder{}
	for i := range 3 {
		clients.Go(func() { cl.wsClient(cctx, rec, i, rand.New(rand.NewPCG(seed, uint64(10+i)))) })
		clients.Go(func() { cl.httpClient(cctx, rec, i, rand.New(rand.NewPCG(seed, uint64(20+i)))) })
	}
	for i := range 2 {
		clients.Go(func() { cl.callClient(cctx, rec, i, rand.New(rand.NewPCG(seed, uint64(30+i)))) })
	}

	// Chaos: every `every`, one node is killed and restarted on its port.
	// A slot that a slow restart (a loaded machine) made miss is skipped,
	// so that the chaos keeps to its length.
	chaosStart := time.Now()
	victim := rng.IntN(nodes)
	var restarts []time.Duration
	for k := 1; ; k++ {
		at := chaosStart.Add(time.Duration(k) * every)
		if at.After(chaosStart.Add(duration - time.Second)) {
			break
		}
		if time.Until(at) < -every/2 {
			continue
		}
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			t.Fatal("test ended during the chaos")
		}
		restarts = append(restarts, cl.restart(victim, audit))
		victim = (victim + 1 + rng.IntN(nodes-1)) % nodes // never the same twice in a row
	}
	time.Sleep(time.Until(chaosStart.Add(duration)))
	stopClients()
	clients.Wait()
	chaos := time.Since(chaosStart)

	// Let the workflows finish and their agents hear of it.
	ops := rec.all()
	settleStart := time.Now()
	flows, finals, err := cl.settle(ctx, ops, 30*time.Second)
	if err != nil {
		t.Errorf("settling: %v", err)
	}
	settle := time.Since(settleStart)
	for _, p := range cl.procs {
		p.kill()
	}
	recs, err := ReadAudit(audit)
	if err != nil {
		t.Fatal(err)
	}
	cl.checkRestarts(recs)
	rep := Check(recs, ops, finals, flows)
	t.Logf("chaos %v (restarts after kill: %v), settling %v, total %v\n%s",
		chaos.Round(time.Millisecond), roundAll(restarts), settle.Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond), rep)
	if w := cl.warnings(); len(w) > 0 {
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(w)) {
			fmt.Fprintf(&b, "\n  %5d %s", w[k], k)
		}
		t.Logf("the processes logged:%s", b.String())
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
	if t.Failed() { // keep the evidence
		kept := filepath.Join(os.TempDir(), fmt.Sprintf("agentflow-chaos-%d.jsonl", seed))
		if b, err := os.ReadFile(audit); err == nil && os.WriteFile(kept, b, 0o644) == nil {
			t.Logf("audit log kept in %s", kept)
		}
	}
	if rep.Increments[OutAck] == 0 || rep.Workflows == 0 || rep.Takeovers == 0 {
		t.Errorf("the chaos did too little to prove anything: %d increments acknowledged, %d workflows, %d take-overs",
			rep.Increments[OutAck], rep.Workflows, rep.Takeovers)
	}
	if n := rep.Ops["ws increment "+OutAck] + rep.Ops["http increment "+OutAck] + rep.Ops["call increment "+OutAck]; n == 0 {
		t.Errorf("no increment acknowledged")
	}
	for _, via := range []string{"ws", "http", "call"} {
		if rep.Ops[via+" increment "+OutAck] == 0 {
			t.Errorf("no increment over %s was acknowledged", via)
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ---- Processes -----------------------------------------------------------

// proc is a child process, seen from the test.
type proc struct {
	t    *testing.T
	cfg  Config
	cmd  *exec.Cmd
	node string
	done chan struct{}
	// readyAt is when it said it serves.
	readyAt time.Time

	mu    sync.Mutex
	out   bytes.Buffer
	ready chan string
	seen  bool
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Write(b)
	if !p.seen {
		for line := range strings.SplitSeq(p.out.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, ReadyLine+" "); ok && strings.Count(rest, " ") == 1 {
				p.seen = true
				p.ready <- rest
				break
			}
		}
	}
	return len(b), nil
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startProc starts a child and waits until it serves; a child that could
// not bind its port (the old process's socket lingering) is started again.
func startProc(t *testing.T, cfg Config, index int) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := tryStartProc(t, cfg)
		if err == nil {
			return p
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("node %d: %v", index, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tryStartProc(t *testing.T, cfg Config) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	p := &proc{t: t, cfg: cfg, done: make(chan struct{}), ready: make(chan string, 1)}
	p.cmd = exec.Command(exe, "-test.run=^$")
	p.cmd.Env = append(os.Environ(), EnvChild+"="+string(b))
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if out := p.output(); strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
			t.Errorf("child %d on port %d:\n%s", p.cmd.Process.Pid, cfg.Port, out)
		} else if t.Failed() && testing.Verbose() {
			t.Logf("output of child %d (%s):\n%s", p.cmd.Process.Pid, p.node, out)
		}
	})
	select {
	case line := <-p.ready:
		p.readyAt = time.Now()
		p.node, _, _ = strings.Cut(line, " ")
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("child exited before it was ready: %v\n%s", p.cmd.ProcessState, p.output())
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("child not ready after 30 s:\n%s", p.output())
	}
}

// kill kills the process with SIGKILL and waits until it is reaped.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) base() string { return fmt.Sprintf("http://127.0.0.1:%d", p.cfg.Port) }

// cluster is the test's view of the nodes.
type cluster struct {
	t        *testing.T
	st       store.Store
	mu       sync.Mutex
	procs    []*proc // the nodes now
	all      []*proc // every process started
	restarts []restarted
}

// warnings counts the messages the processes logged at warning level or
// above, by level and message.
func (c *cluster) warnings() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, p := range c.all {
		for line := range strings.SplitSeq(p.output(), "\n") {
			_, rest, ok := strings.Cut(line, " level=")
			if !ok {
				continue
			}
			level, rest, _ := strings.Cut(rest, " ")
			msg := rest
			if m, ok := strings.CutPrefix(rest, "msg="); ok {
				if q, err := strconv.QuotedPrefix(m); err == nil {
					msg, _ = strconv.Unquote(q)
				} else {
					msg, _, _ = strings.Cut(m, " ")
				}
			}
			out[level+" "+msg]++
		}
	}
	return out
}

func (c *cluster) pick(rng *rand.Rand) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[rng.IntN(len(c.procs))]
}

// restart kills node i with SIGKILL (recording it in the audit log first)
// and starts a new process on its port. The new process must have taken
// its predecessor's node over (removed its row) before it serves. It
// returns the time from the kill to the new process serving.
func (c *cluster) restart(i int, audit string) time.Duration {
	t := c.t
	c.mu.Lock()
	old := c.procs[i]
	c.mu.Unlock()
	if err := AppendAudit(audit, Record{Ev: EvKill, PID: old.cmd.Process.Pid, Node: old.node}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	old.kill()
	p := startProc(t, old.cfg, i)
	took := time.Since(killed)
	c.mu.Lock()
	c.procs[i] = p
	c.all = append(c.all, p)
	c.restarts = append(c.restarts, restarted{dead: old, by: p})
	c.mu.Unlock()
	return took
}

// restarted is a kill and the restart that followed.
type restarted struct{ dead, by *proc }

// checkRestarts checks that each process restarted after a kill served
// only once its dead predecessor's node had been removed (by itself as it
// started, or by another node before), so that it was free to take over
// the predecessor's agents and instances. The audit log says when: the
// store may still hold a write the dead process sent just before it died
// (its heartbeat, re-creating the row), so the rows as they are now would
// not.
func (c *cluster) checkRestarts(recs []Record) {
	for _, r := range c.restarts {
		ok := false
		for _, rec := range recs {
			if rec.Ev == EvReap && rec.Node == r.dead.node && rec.By != r.dead.node && rec.T1 <= r.by.readyAt.UnixNano() {
				ok = true
				break
			}
		}
		if !ok {
			c.t.Errorf("process %d (%s) restarted on port %d served before its dead predecessor %s (pid %d) was removed",
				r.by.cmd.Process.Pid, r.by.node, r.by.cfg.Port, r.dead.node, r.dead.cmd.Process.Pid)
		}
	}
}

// settle waits until every workflow that exists has completed and its
// agent has heard so, then returns the workflows and the agents' state.
func (c *cluster) settle(ctx context.Context, ops []Op, timeout time.Duration) (map[string]Flow, map[string]State, error) {
	deadline := time.Now().Add(timeout)
	for {
		flows, finals, pending, err := c.look(ctx, ops)
		if err == nil && pending == "" {
			return flows, finals, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("still waiting after %v: %s", timeout, pending)
			}
			return flows, finals, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// look reads the workflows and the agents' state, and says what is still
// pending ("" for nothing).
func (c *cluster) look(ctx context.Context, ops []Op) (map[string]Flow, map[string]State, string, error) {
	finals := map[string]State{}
	for i := range agents {
		name := agentName(i)
		a, err := c.st.GetAgent(ctx, store.AgentKey{Class: CounterClass, Name: name})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, "", err
		}
		var s State
		if err := json.Unmarshal(a.State, &s); err != nil && len(a.State) > 0 {
			return nil, nil, "", fmt.Errorf("agent %s: state %s: %w", name, a.State, err)
		}
		finals[name] = s
	}
	flows := map[string]Flow{}
	pending := ""
	for _, op := range ops {
		if op.Kind != "launch" {
			continue
		}
		f := Flow{ID: op.ID, Agent: op.Agent}
		inst, err := c.st.GetInstance(ctx, op.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, nil, "", err
		}
		if err == nil {
			f.Exists, f.Status, f.Output = true, inst.Status, string(inst.Output)
			w, err := c.st.GetAgentWorkflow(ctx, store.AgentKey{Class: CounterClass, Name: op.Agent}, op.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, nil, "", err
			}
			if err == nil {
				f.Tracking = w.Status
			}
			if pending == "" && (!f.Status.Finished() || f.Tracking != store.StatusComplete || finals[op.Agent].Done[op.ID] == 0) {
				pending = fmt.Sprintf("workflow %s of %s: %s, tracked as %q, heard %d times",
					op.ID, op.Agent, f.Status, f.Tracking, finals[op.Agent].Done[op.ID])
			}
		}
		flows[op.ID] = f
	}
	return flows, finals, pending, nil
}

func agentName(i int) string { return "a" + strconv.Itoa(i) }

// ---- Clients -------------------------------------------------------------

// recorder collects the operations.
type recorder struct {
	mu  sync.Mutex
	ops []Op
}

func (r *recorder) add(op Op) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

func (r *recorder) all() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// newOp makes the next operation of a client: an increment, or one time
// in launchEvery a workflow launch, on a random agent.
func newOp(via string, client int, n int, rng *rand.Rand) Op {
	kind := "increment"
	if rng.IntN(launchEvery) == 0 {
		kind = "launch"
	}
	return Op{ID: fmt.Sprintf("%s%d-%d", via, client, n), Agent: agentName(rng.IntN(agents)), Kind: kind, Via: via}
}

// refusedConn reports whether err is a connection that was never made,
// so that nothing was sent.
func refusedConn(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// classifyStatus sets an operation's outcome from an HTTP status other
// than 200.
func classifyStatus(op *Op, resp *http.Response, body string) {
	op.Status, op.Detail = resp.StatusCode, strings.TrimSpace(body)
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
		op.Outcome = OutRefused
		if resp.Header.Get("Retry-After") == "" {
			op.Outcome, op.Detail = OutError, "503 without Retry-After: "+op.Detail
		}
	case http.StatusBadGateway:
		op.Outcome = OutUnknown
	case http.StatusConflict:
		op.Outcome = OutConflict
	default:
		op.Outcome = OutError
	}
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: opTimeout}

// httpClient makes operations as plain HTTP requests to random nodes.
func (c *cluster) httpClient(ctx context.Context, rec *recorder, id int, rng *rand.Rand) {
	for n := 0; ctx.Err() == nil; n++ {
		op := newOp("http", id, n, rng)
		p := c.pick(rng)
		body, _ := json.Marshal(request{Op: op.ID, Do: op.Kind})
		resp, err := httpClient.Post(p.base()+"/agents/chaos-counter/"+op.Agent, "application/json", bytes.NewReader(body))
		switch {
		case err != nil && refusedConn(err):
			op.Outcome, op.Detail = OutRefused, err.Error()
		case err != nil:
			op.Outcome, op.Detail = OutUnknown, err.Error()
		default:
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				op.Outcome, op.Status, op.Detail = OutUnknown, resp.StatusCode, rerr.Error()
			case resp.StatusCode == http.StatusOK:
				op.Outcome, op.Status = OutAck, 200
			default:
				classifyStatus(&op, resp, string(b))
			}
		}
		rec.add(op)
		time.Sleep(opPause)
	}
}

// callClient makes operations as named calls (Ref.Call) from random nodes.
func (c *cluster) callClient(ctx context.Context, rec *recorder, id int, rng *rand.Rand) {
	for n := 0; ctx.Err() == nil; n++ {
		op := newOp("call", id, n, rng)
		p := c.pick(rng)
		body, _ := json.Marshal(CallRequest{Agent: op.Agent, Method: op.Kind, Op: op.ID})
		resp, err := httpClient.Post(p.base()+"/call", "application/json", bytes.NewReader(body))
		switch {
		case err != nil && refusedConn(err):
			op.Outcome, op.Detail = OutRefused, err.Error()
		case err != nil:
			op.Outcome, op.Detail = OutUnknown, "the calling node: "+err.Error()
		default:
			var res CallResult
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				op.Outcome, op.Detail = OutUnknown, "the calling node: "+rerr.Error()
			case resp.StatusCode != http.StatusOK:
				op.Outcome, op.Status, op.Detail = OutError, resp.StatusCode, string(b)
			case json.Unmarshal(b, &res) != nil:
				op.Outcome, op.Detail = OutError, "malformed answer "+string(b)
			default:
				op.Outcome, op.Detail = res.Outcome, res.Err
			}
		}
		rec.add(op)
		time.Sleep(opPause)
	}
}

// wsClient connects to a random agent through a random node and makes up
// to 20 operations over the connection, as RPCs, then connects anew.
func (c *cluster) wsClient(ctx context.Context, rec *recorder, id int, rng *rand.Rand) {
	n := 0
	for ctx.Err() == nil {
		p := c.pick(rng)
		name := agentName(rng.IntN(agents))
		dctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		conn, resp, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(p.base(), "http")+"/agents/chaos-counter/"+name, nil)
		cancel()
		if err != nil {
			op := Op{ID: fmt.Sprintf("wsconnect%d-%d", id, n), Agent: name, Kind: "connect", Via: "ws"}
			n++
			switch {
			case resp != nil:
				b, _ := io.ReadAll(resp.Body)
				classifyStatus(&op, resp, string(b))
			case refusedConn(err):
				op.Outcome, op.Detail = OutRefused, err.Error()
			default:
				op.Outcome, op.Detail = OutUnknown, err.Error()
			}
			rec.add(op)
			time.Sleep(opPause)
			continue
		}
		conn.SetReadLimit(1 << 20)
		for range 20 {
			if ctx.Err() != nil {
				break
			}
			op := newOp("ws", id, n, rng)
			op.Agent = name
			n++
			ok := wsRPC(conn, &op)
			rec.add(op)
			if !ok {
				break
			}
			time.Sleep(opPause)
		}
		conn.CloseNow()
	}
}

// wsRPC makes op as an RPC over conn and reports whether the connection
// is still usable.
func wsRPC(conn *websocket.Conn, op *Op) bool {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	msg, _ := json.Marshal(map[string]any{"type": "rpc", "id": op.ID, "method": op.Kind, "args": []string{op.ID}})
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		// The frame may have gone out before the error.
		op.Outcome, op.Detail = OutUnknown, "send: "+err.Error()
		return false
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			op.Outcome, op.Detail = OutUnknown, "read: "+err.Error()
			return false
		}
		var f struct {
			Type    string `json:"type"`
			ID      string `json:"id"`
			Success bool   `json:"success"`
			Done    bool   `json:"done"`
			Error   string `json:"error"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			op.Outcome, op.Detail = OutError, "malformed frame "+string(b)
			return false
		}
		if f.Type != "rpc" || f.ID != op.ID {
			continue
		}
		if !f.Success {
			op.Outcome, op.Detail = OutError, f.Error
			return true
		}
		if f.Done {
			op.Outcome = OutAck
			return true
		}
	}
}
