package bench

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
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// The cluster scenario: two nodes (an engine and an agent runtime each, with
// an HTTP server on loopback that they advertise) on one store, an agent
// live on node A, and the same requests made to A directly and through B,
// which forwards them to A, one after the other, alternating, so that both
// paths see the same machine:
//
//   - a WebSocket RPC round trip (B splices the connection to A's);
//   - a plain HTTP request to the agent's OnRequest (B sends each on);
//   - a call by name, Ref.Call, from A's runtime (in process) and from B's
//     (over A's /_cluster/call).
//
// Then the takeover of a dead node's agents: a node in a child process
// (this binary run again, see IsChild) holds agents and is killed with
// SIGKILL; the time from the kill until a request for one of them through
// B succeeds, served by B. Once with the child's node row naming this host
// (the survivor sees its process is gone) and once naming another host (the
// survivor must wait for the dead node's lease).

const (
	// nodePingerClass is the cluster scenario's class (URL form
	// bench-node-pinger).
	nodePingerClass = "BenchNodePinger"
	// clusterSecret is the scenario's cluster secret.
	clusterSecret = "bench-cluster-secret"
	// nodeHeader names the node that served an agent's HTTP request.
	nodeHeader = "Bench-Node"
	// takeoverAgents is how many agents a child node holds when killed.
	takeoverAgents = 100
)

// nodePinger answers Ping and plain HTTP requests without touching the
// store, so that the figures are the paths' own.
type nodePinger struct {
	agent.Agent[struct{}]
}

// Ping returns n.
func (p *nodePinger) Ping(_ context.Context, n int) (int, error) { return n, nil }

// OnRequest answers "ok", naming the node that served it.
func (p *nodePinger) OnRequest(_ context.Context, w http.ResponseWriter, _ *http.Request) {
	w.Header().Set(nodeHeader, p.Runtime().NodeID())
	_, _ = io.WriteString(w, "ok")
}

func registerNodePinger(rt *agent.Runtime) error {
	return agent.Register[nodePinger](rt, nodePingerClass, agent.ClassOptions{Callable: []string{"ping"}})
}

// clusterNode is a node of the scenario's cluster in this process.
type clusterNode struct {
	eng  *workflow.Engine
	rt   *agent.Runtime
	srv  *http.Server
	addr string // host:port of its server
}

// nodeOptions configure a node.
type nodeOptions struct {
	lease    time.Duration // the engine's Lease; 0 for its default
	maxConc  int
	idle     time.Duration // the runtime's IdleTimeout
	log      *slog.Logger
	listener net.Listener // nil: a fresh loopback port
}

// startClusterNode starts an engine, a runtime that hosts nodePinger and an
// HTTP server for its handler on st, advertising the server's URL.
func startClusterNode(ctx context.Context, st store.Store, o nodeOptions) (_ *clusterNode, stop func() error, err error) {
	ln := o.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, nil, err
		}
	}
	var undo []func() error
	stop = func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, stop())
		}
	}()
	undo = append(undo, func() error { ln.Close(); return nil })
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: o.log, MaxConcurrent: o.maxConc, Lease: o.lease})
	if err != nil {
		return nil, nil, err
	}
	rt, err := agent.NewRuntime(agent.Options{
		Engine: eng, Logger: o.log, IdleTimeout: o.idle,
		AdvertiseURL: "http://" + ln.Addr().String() + "/agents", ClusterSecret: clusterSecret,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := registerNodePinger(rt); err != nil {
		return nil, nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() error { return stopEngine(eng) })
	if err := rt.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return rt.Stop(sctx)
	})
	srv := &http.Server{Handler: rt.Handler(agent.HandlerOptions{}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	undo = append(undo, func() error { return srv.Close() })
	return &clusterNode{eng: eng, rt: rt, srv: srv, addr: ln.Addr().String()}, stop, nil
}

func (r *runner) cluster(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()
	no := nodeOptions{lease: cfg.Lease, maxConc: cfg.MaxConcurrent, idle: time.Hour, log: r.log}
	a, stopA, err := startClusterNode(ctx, e.st, no)
	if err != nil {
		return nil, fmt.Errorf("node A: %w", err)
	}
	defer func() { err = errors.Join(err, stopA()) }()
	b, stopB, err := startClusterNode(ctx, e.st, no)
	if err != nil {
		return nil, fmt.Errorf("node B: %w", err)
	}
	defer func() { err = errors.Join(err, stopB()) }()

	// The agent is live on A after a call there.
	if _, err := agent.Call(ctx, a.rt, "p", (*nodePinger).Ping, 1); err != nil {
		return nil, err
	}
	n := cfg.ClusterCalls
	warm := max(n/10, 100)
	path := "/agents/" + agent.Kebab(nodePingerClass) + "/p"

	r.progress("A on %s, B on %s: %d WebSocket RPC round trips to A directly and through B, alternating (after %d warm-up)", a.addr, b.addr, n, warm)
	direct, err := dialRPC(ctx, "ws://"+a.addr+path)
	if err != nil {
		return nil, fmt.Errorf("WebSocket to A: %w", err)
	}
	defer direct.close()
	viaB, err := dialRPC(ctx, "ws://"+b.addr+path)
	if err != nil {
		return nil, fmt.Errorf("WebSocket through B: %w", err)
	}
	defer viaB.close()
	wsDirect, wsForward, err := timePairs(ctx, warm, n,
		func(ctx context.Context, i int) error { return direct.call(ctx, "ping", i) },
		func(ctx context.Context, i int) error { return viaB.call(ctx, "ping", i) })
	if err != nil {
		return nil, fmt.Errorf("WebSocket RPC: %w", err)
	}

	r.progress("%d HTTP requests to the agent, to A and through B, alternating", n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	get := func(base, wantNode string) func(context.Context, int) error {
		u := "http://" + base + path
		return func(ctx context.Context, _ int) error {
			_, err := getOK(ctx, client, u, wantNode)
			return err
		}
	}
	httpDirect, httpForward, err := timePairs(ctx, warm, n, get(a.addr, a.rt.NodeID()), get(b.addr, a.rt.NodeID()))
	if err != nil {
		return nil, fmt.Errorf("HTTP: %w", err)
	}

	r.progress("%d calls by name (Ref.Call) from A and from B, alternating", n)
	refA, refB := a.rt.Ref(nodePingerClass, "p"), b.rt.Ref(nodePingerClass, "p")
	call := func(ref agent.Ref) func(context.Context, int) error {
		return func(ctx context.Context, i int) error {
			res, err := ref.Call(ctx, "ping", i)
			if err == nil && string(res) != strconv.Itoa(i) {
				err = fmt.Errorf("ping(%d) returned %s", i, res)
			}
			return err
		}
	}
	callDirect, callForward, err := timePairs(ctx, warm, n, call(refA), call(refB))
	if err != nil {
		return nil, fmt.Errorf("Ref.Call: %w", err)
	}
	if a.rt.Live() != 1 || b.rt.Live() != 0 {
		return nil, fmt.Errorf("live agents: %d on A, %d on B; want the one on A alone", a.rt.Live(), b.rt.Live())
	}
	rs := []Result{
		metric("direct_ws_rpc_p50_us", percentileSorted(wsDirect, 50), "us"),
		metric("direct_ws_rpc_p99_us", percentileSorted(wsDirect, 99), "us"),
		metric("forward_ws_rpc_p50_us", percentileSorted(wsForward, 50), "us"),
		metric("forward_ws_rpc_p99_us", percentileSorted(wsForward, 99), "us"),
		metric("direct_http_p50_us", percentileSorted(httpDirect, 50), "us"),
		metric("direct_http_p99_us", percentileSorted(httpDirect, 99), "us"),
		metric("forward_http_p50_us", percentileSorted(httpForward, 50), "us"),
		metric("forward_http_p99_us", percentileSorted(httpForward, 99), "us"),
		metric("direct_call_p50_us", percentileSorted(callDirect, 50), "us"),
		metric("direct_call_p99_us", percentileSorted(callDirect, 99), "us"),
		metric("forward_call_p50_us", percentileSorted(callForward, 50), "us"),
		metric("forward_call_p99_us", percentileSorted(callForward, 99), "us"),
	}
	direct.close()
	viaB.close()

	// An agent's notice from a workflow of another service, run by another
	// handle on the store, as the cross-service scenario measures it.
	other, err := r.openAnother(ctx, e)
	if err != nil {
		return rs, err
	}
	r.progress("%d rounds of the cross-service scenario", cfg.CrossServiceRounds)
	xs, err := measureCrossService(ctx, e.st, other, cfg.CrossServiceRounds, r.log)
	if err = errors.Join(err, other.Close()); err != nil {
		return rs, fmt.Errorf("cross-service: %w", err)
	}
	for _, x := range xs {
		if x.Name == "cross_service_notice_p50_ms" || x.Name == "cross_service_notice_p99_ms" {
			rs = append(rs, x)
		}
	}

	// Takeover: a node in a child process, on this host and then as if on
	// another, killed while holding agents.
	loc, err := e.location(ctx)
	if err != nil {
		return rs, err
	}
	lease := cfg.Lease
	if lease <= 0 {
		lease = 10 * time.Second // the engine's default
	}
	for _, other := range []bool{false, true} {
		s, err := r.takeover(ctx, loc, b, other)
		if err != nil {
			return rs, err
		}
		name := "takeover_same_host_s"
		if other {
			name = "takeover_other_host_s"
		}
		rs = append(rs, metric(name, s.Seconds(), "s"))
	}
	rs = append(rs, metric("lease_s", lease.Seconds(), "s"))
	return rs, nil
}

// timePairs makes warm calls of each function, then n timed calls of each,
// alternating, and returns both sets of latencies in µs, sorted.
func timePairs(ctx context.Context, warm, n int, f, g func(ctx context.Context, i int) error) (fs, gs []float64, err error) {
	for i := range warm {
		if err := f(ctx, i); err != nil {
			return nil, nil, err
		}
		if err := g(ctx, i); err != nil {
			return nil, nil, err
		}
	}
	fs, gs = make([]float64, n), make([]float64, n)
	for i := range n {
		start := time.Now()
		if err := f(ctx, warm+i); err != nil {
			return nil, nil, err
		}
		mid := time.Now()
		if err := g(ctx, warm+i); err != nil {
			return nil, nil, err
		}
		fs[i], gs[i] = us(mid.Sub(start)), us(time.Since(mid))
	}
	slices.Sort(fs)
	slices.Sort(gs)
	return fs, gs, nil
}

// getOK GETs u and checks that the agent answered "ok" from node wantNode
// ("" for any); it returns the node that served it.
func getOK(ctx context.Context, client *http.Client, u, wantNode string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return "", fmt.Errorf("GET %s: %s %q", u, resp.Status, bytes.TrimSpace(body))
	}
	got := resp.Header.Get(nodeHeader)
	if wantNode != "" && got != wantNode {
		return got, fmt.Errorf("GET %s: served by node %s, not %s", u, got, wantNode)
	}
	return got, nil
}

// rpcConn is a WebSocket to an agent making rpc calls one at a time.
type rpcConn struct {
	c   *websocket.Conn
	msg []byte
}

func dialRPC(ctx context.Context, url string) (*rpcConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	cancel()
	if err != nil {
		return nil, err
	}
	// The server greets with the identity and state frames.
	for range 2 {
		if _, _, err := c.Read(ctx); err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("reading the greeting: %w", err)
		}
	}
	return &rpcConn{c: c}, nil
}

// call sends an rpc frame calling method with argument i and waits for
// its final reply.
func (rc *rpcConn) call(ctx context.Context, method string, i int) error {
	id := strconv.Itoa(i)
	rc.msg = append(append(append(append(append(rc.msg[:0], `{"type":"rpc","method":"`...), method...), `","id":"`...), id...), `","args":[`...)
	rc.msg = append(append(rc.msg, id...), `]}`...)
	if err := rc.c.Write(ctx, websocket.MessageText, rc.msg); err != nil {
		return err
	}
	for {
		_, b, err := rc.c.Read(ctx)
		if err != nil {
			return err
		}
		var rep wsReply
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("reply %q: %w", b, err)
		}
		if rep.Type != "rpc" || rep.ID != id || (rep.Done != nil && !*rep.Done) {
			continue // a broadcast or a chunk
		}
		if !rep.Success {
			return fmt.Errorf("rpc %s failed: %s", method, rep.Error)
		}
		if string(rep.Result) != id {
			return fmt.Errorf("rpc %s(%s) returned %s", method, id, rep.Result)
		}
		return nil
	}
}

func (rc *rpcConn) close() {
	if rc.c != nil {
		_ = rc.c.Close(websocket.StatusNormalClosure, "")
		rc.c = nil
	}
}

// ---- Takeover --------------------------------------------------------------

// storeLocation is where a child finds the scenario's store.
type storeLocation struct {
	Backend     string `json:"backend"`
	Path        string `json:"path,omitempty"` // SQLite
	Synchronous string `json:"synchronous,omitempty"`
	DSN         string `json:"dsn,omitempty"` // PostgreSQL
	Schema      string `json:"schema,omitempty"`
	NoWakes     bool   `json:"no_wakes,omitempty"`
}

// location says where e's store is.
func (e *env) location(ctx context.Context) (storeLocation, error) {
	switch e.backend {
	case "sqlite":
		return storeLocation{Backend: "sqlite", Path: e.path}, nil
	case "postgres":
		var schema string
		if err := e.read.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return storeLocation{}, fmt.Errorf("the store's schema: %w", err)
		}
		return storeLocation{Backend: "postgres", Schema: schema}, nil
	}
	return storeLocation{}, fmt.Errorf("unknown backend %q", e.backend)
}

// nodeChildConfig is what a child node runs with.
type nodeChildConfig struct {
	Store storeLocation `json:"store"`
	// Lease is the engine's Lease; 0 for its default.
	Lease time.Duration `json:"lease"`
	// Host, when set, is the host name the node's row gives instead of
	// this one's, so that the other nodes treat it as on another host.
	Host string `json:"host,omitempty"`
	// Agents is how many agents to activate before serving, named Prefix
	// and a number.
	Agents int    `json:"agents"`
	Prefix string `json:"prefix"`
}

// otherHost is a store whose node rows name another host.
type otherHost struct {
	store.Store
	host string
}

func (s otherHost) Heartbeat(ctx context.Context, n store.Node) error {
	n.Host = s.host
	return s.Store.Heartbeat(ctx, n)
}

// runClusterNode is a child node: it opens the parent's store, starts a
// node, activates cc.Agents agents on it and serves until ctx ends.
func runClusterNode(ctx context.Context, cc nodeChildConfig, stdout, stderr io.Writer) (err error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var st store.Store
	switch cc.Store.Backend {
	case "sqlite":
		s, err := sqlite.Open(ctx, cc.Store.Path, sqlite.Options{Synchronous: sqlite.Synchronous(cc.Store.Synchronous), DisableWakes: cc.Store.NoWakes})
		if err != nil {
			return err
		}
		defer s.Close()
		st = s
	case "postgres":
		s, err := postgres.Open(ctx, cc.Store.DSN, postgres.Options{Schema: cc.Store.Schema, DisableWakes: cc.Store.NoWakes})
		if err != nil {
			return err
		}
		defer s.Close()
		st = s
	default:
		return fmt.Errorf("unknown backend %q", cc.Store.Backend)
	}
	if cc.Host != "" {
		st = otherHost{Store: st, host: cc.Host}
	}
	n, stop, err := startClusterNode(ctx, st, nodeOptions{lease: cc.Lease, idle: time.Hour, log: log})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()
	for i := range cc.Agents {
		if _, err := agent.Call(ctx, n.rt, cc.Prefix+strconv.Itoa(i), (*nodePinger).Ping, i); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s %s\n", lineListening, n.addr)
	<-ctx.Done()
	return nil
}

// takeover starts a child node holding agents, checks that a request for
// one of them through b is served by the child, kills the child with
// SIGKILL and returns the time from the kill until such a request through
// b succeeds, served by b.
func (r *runner) takeover(ctx context.Context, loc storeLocation, b *clusterNode, otherHostName bool) (time.Duration, error) {
	cc := nodeChildConfig{Store: loc, Lease: r.cfg.Lease, Agents: takeoverAgents, Prefix: "t" + randomSuffix() + "-"}
	cc.Store.Synchronous, cc.Store.DSN, cc.Store.NoWakes = r.cfg.Synchronous, r.cfg.DSN, r.cfg.NoWakes
	where := "this host"
	if otherHostName {
		cc.Host = "bench-other-host-" + randomSuffix()
		where = "host " + cc.Host
	}
	ch, err := r.startChild(ctx, childConfig{Node: &cc})
	if err != nil {
		return 0, err
	}
	killed := false
	defer func() {
		if !killed {
			_ = ch.stop()
		}
	}()
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	u := "http://" + b.addr + "/agents/" + agent.Kebab(nodePingerClass) + "/" + cc.Prefix + strconv.Itoa(takeoverAgents/2)
	served, err := getOK(ctx, client, u, "")
	if err != nil {
		return 0, fmt.Errorf("through B before the kill: %w", err)
	}
	if served == b.rt.NodeID() {
		return 0, fmt.Errorf("through B before the kill: served by B itself, not by the child")
	}
	r.progress("child node %s (process %d, its row naming %s) holds %d agents; killing it with SIGKILL", served, ch.pid, where, takeoverAgents)
	start := time.Now()
	if err := ch.cmd.Process.Kill(); err != nil {
		return 0, err
	}
	killed = true
	tries := 0
	var last error
	for {
		tries++
		_, err := getOK(ctx, client, u, b.rt.NodeID())
		if err == nil {
			break
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no takeover after %s (last: %v): %w", time.Since(start), last, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	took := time.Since(start)
	<-ch.exited
	r.progress("served by B %s after the kill, at request %d (the last failure: %v)", took.Round(time.Millisecond), tries, last)
	return took, nil
}
