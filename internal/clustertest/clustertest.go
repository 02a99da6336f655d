// Package clustertest proves the agent cluster under chaos: three
// processes, each an engine and an agent runtime on one PostgreSQL schema,
// serve agents on loopback ports and route requests and calls to the node
// an agent is live on, while the test kills one of them with SIGKILL every
// few seconds and restarts it on the same port. Clients increment counter
// agents over WebSocket, over HTTP and by named call (Ref.Call in a
// child), and start workflows that report their completion back to the
// agent. Afterwards the audit log, written outside the store's
// transactions, and the store show that
//
//   - every increment a client saw acknowledged is in the agent's state,
//     exactly once, and none that failed with a retryable error (503, a
//     node that could not be reached) is;
//   - no agent was ever live on two nodes at once: each activation began
//     only after the one before it had ended (released, or its process
//     killed), and the state writes, numbered by the state itself, carry
//     the fences of the activations in order;
//   - every workflow completed, no step that returned ran again, and its
//     agent heard of the completion;
//   - no client was refused with 409 (the agent is live elsewhere) while
//     the cluster's nodes were up.
//
// The child is the test binary run again with EnvChild set; its TestMain
// hands control to RunChild.
package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/workflow"
)

// EnvChild makes a process a child; it holds the child's Config as JSON.
const EnvChild = "AGENTFLOW_CLUSTERTEST_CHILD"

// ReadyLine starts the line a child prints once it serves:
// "<ReadyLine> <node id> <pid>".
const ReadyLine = "clustertest-child: ready"

// Names of the classes, binding and secret the children share.
const (
	CounterClass = "ChaosCounter" // URL name chaos-counter
	FlowClass    = "ChaosFlow"
	Binding      = "CHAOS_FLOW"
	secret       = "chaos-cluster-secret"
	flowStep     = 100 * time.Millisecond // the workflow's nap
)

// Config is a child's configuration.
type Config struct {
	DSN    string
	Schema string
	// Port is the loopback port the child serves on (the handler under
	// /agents/, the named-call endpoint /call).
	Port int
	// Audit is the audit file every process appends to.
	Audit string
	// Lease is the engine's lease; PollInterval the engine's and the
	// runtime's poll interval.
	Lease        time.Duration
	PollInterval time.Duration
}

// IsChild reports whether this process is a child.
func IsChild() bool { _, ok := os.LookupEnv(EnvChild); return ok }

// RunChild runs this process as a child and ends it: status 2 for a bad
// configuration, 3 for a failure, 0 after SIGTERM.
func RunChild() {
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv(EnvChild)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "clustertest child: decode %s: %v\n", EnvChild, err)
		os.Exit(2)
	}
	if err := runChild(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "clustertest child %d: %v\n", os.Getpid(), err)
		os.Exit(3)
	}
	os.Exit(0)
}

// ---- The agent and the workflow --------------------------------------

// State is a ChaosCounter's state. Seq numbers the state's writes: each
// write stores the state it read with Seq one more, so two writes built on
// one state (two live activations, a lost update) share a Seq. Op names
// the operation that made the write.
type State struct {
	Count int            `json:"count"`
	Seq   int            `json:"seq"`
	Op    string         `json:"op"`
	Done  map[string]int `json:"done,omitempty"` // workflow id → times its completion was heard
}

// Counter is the agent class of the chaos test.
type Counter struct {
	agent.Agent[State]
}

// Increment adds one to the count; op names the client's operation.
func (c *Counter) Increment(ctx context.Context, op string) (int, error) {
	s := c.State()
	s.Count++
	s.Seq++
	s.Op = op
	if err := c.SetState(ctx, s); err != nil {
		return 0, err
	}
	return s.Count, nil
}

// Launch starts a ChaosFlow workflow whose id is op.
func (c *Counter) Launch(ctx context.Context, op string) (string, error) {
	return c.RunWorkflow(ctx, Binding, FlowParams{Op: op}, agent.RunOptions{ID: op})
}

// OnWorkflowComplete records that the agent heard of the completion.
func (c *Counter) OnWorkflowComplete(ctx context.Context, wf agent.WorkflowInfo, output json.RawMessage) {
	s := c.State()
	s.Done = maps.Clone(s.Done)
	if s.Done == nil {
		s.Done = map[string]int{}
	}
	s.Done[wf.ID]++
	s.Seq++
	s.Op = "done:" + wf.ID
	if err := c.SetState(ctx, s); err != nil {
		c.Logger().Warn("recording a workflow's completion failed", "workflow", wf.ID, "err", err)
	}
}

// request is the body of a plain HTTP request to a ChaosCounter.
type request struct {
	Op string `json:"op"`
	Do string `json:"do"` // "increment" or "launch"
}

// OnRequest serves POST {"op","do"}, answering {"result": …}.
func (c *Counter) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var res any
	var err error
	switch req.Do {
	case "increment":
		res, err = c.Increment(ctx, req.Op)
	case "launch":
		res, err = c.Launch(ctx, req.Op)
	default:
		http.Error(w, "unknown operation "+req.Do, http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"result": res})
}

// FlowParams are a ChaosFlow's params.
type FlowParams struct {
	Op string `json:"op"`
}

// flow is the workflow: two audited steps around a progress report and a
// short sleep; returning reports completion to the agent.
type flow struct {
	rt    *agent.Runtime
	audit *auditLog
	// returned holds the steps whose "returned" marker this process has
	// recorded, so that a replay here does not record it again.
	returned sync.Map
}

func (f *flow) Run(ctx context.Context, ev workflow.Event[FlowParams], step *workflow.Step) (string, error) {
	o, err := agent.OriginOf(f.rt, step)
	if err != nil {
		return "", err
	}
	one, err := f.do(step, ev.InstanceID, "one")
	if err != nil {
		return "", err
	}
	if err := o.ReportProgress(map[string]string{"after": one}); err != nil {
		return "", err
	}
	if err := step.Sleep("nap", flowStep); err != nil {
		return "", err
	}
	two, err := f.do(step, ev.InstanceID, "two")
	if err != nil {
		return "", err
	}
	return one + "+" + two, nil
}

// do runs one audited step: its function records its execution; once Do
// has returned, the workflow records that it returned.
func (f *flow) do(step *workflow.Step, id, name string) (string, error) {
	v, err := workflow.Do(step, name, func(ctx context.Context, at workflow.Attempt) (string, error) {
		f.audit.mustAppend(Record{Ev: EvExec, Instance: id, Step: name, Attempt: at.Number})
		return name, nil
	})
	if err != nil {
		return "", err
	}
	if _, done := f.returned.LoadOrStore(id+"/"+name, true); !done {
		f.audit.mustAppend(Record{Ev: EvReturned, Instance: id, Step: name})
	}
	return v, nil
}

// ---- The child ---------------------------------------------------------

func runChild(cfg Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	audit, err := openAudit(cfg.Audit)
	if err != nil {
		return err
	}
	pg, err := postgres.Open(ctx, cfg.DSN, postgres.Options{Schema: cfg.Schema, MaxConns: 8})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer pg.Close()
	st := &auditStore{Store: pg, audit: audit}
	var engStore store.Store = st
	if w, ok := any(pg).(store.Waker); ok { // wake-ups across processes, as in production
		engStore = struct {
			*auditStore
			store.Waker
		}{st, w}
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: engStore, Logger: log, Lease: cfg.Lease, PollInterval: cfg.PollInterval})
	if err != nil {
		return err
	}
	st.node = eng.NodeID()
	audit.mustAppend(Record{Ev: EvStart, Node: st.node})
	base := fmt.Sprintf("http://127.0.0.1:%d", cfg.Port)
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: log, PollInterval: cfg.PollInterval,
		AdvertiseURL: base + "/agents", ClusterSecret: secret})
	if err != nil {
		return err
	}
	if err := agent.Register[Counter](rt, CounterClass, agent.ClassOptions{Callable: []string{"increment", "launch"}}); err != nil {
		return err
	}
	if err := workflow.Register(eng, FlowClass, workflow.Workflow[FlowParams, string](&flow{rt: rt, audit: audit})); err != nil {
		return err
	}
	if err := rt.Bind(Binding, agent.Binding{Workflow: FlowClass}); err != nil {
		return err
	}

	// Listen first, so that the port is this process's from the moment
	// the node is advertised; connections wait in the backlog until the
	// engine has taken over its dead predecessor's work and serving starts.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Port))
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{}))
	mux.HandleFunc("POST /call", func(w http.ResponseWriter, r *http.Request) {
		var req CallRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := rt.Ref(CounterClass, req.Agent).Call(r.Context(), req.Method, req.Op)
		_ = json.NewEncoder(w).Encode(callResultOf(res, err))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Printf("%s %s %d\n", ReadyLine, eng.NodeID(), os.Getpid())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return errors.Join(rt.Stop(sctx), eng.Stop(sctx))
}

// CallRequest is the body of a child's /call: a named call (Ref.Call) of
// method on the agent, with op as its argument.
type CallRequest struct {
	Agent  string `json:"agent"`
	Method string `json:"method"`
	Op     string `json:"op"`
}

// Outcomes of an operation, as a client saw it.
const (
	OutAck      = "ack"      // it succeeded
	OutRefused  = "refused"  // a retryable error that says it did not run (503, no connection)
	OutUnknown  = "unknown"  // it may or may not have run (the connection broke mid-call, 502)
	OutConflict = "conflict" // 409 / ErrAgentElsewhere: live on another node
	OutError    = "error"    // anything else
)

// CallResult is what a child's /call answers.
type CallResult struct {
	Outcome string          `json:"outcome"`
	Result  json.RawMessage `json:"result,omitempty"`
	Err     string          `json:"err,omitempty"`
}

func callResultOf(res json.RawMessage, err error) CallResult {
	switch {
	case err == nil:
		return CallResult{Outcome: OutAck, Result: res}
	case errors.Is(err, agent.ErrNodeUnavailable), errors.Is(err, agent.ErrLeaseLapsed), errors.Is(err, agent.ErrStopped):
		return CallResult{Outcome: OutRefused, Err: err.Error()}
	case errors.Is(err, agent.ErrOutcomeUnknown):
		return CallResult{Outcome: OutUnknown, Err: err.Error()}
	case errors.Is(err, agent.ErrAgentElsewhere):
		return CallResult{Outcome: OutConflict, Err: err.Error()}
	}
	return CallResult{Outcome: OutError, Err: err.Error()}
}

// ---- The audit log -------------------------------------------------------

// Events of the audit log.
const (
	EvActivate = "activate" // ActivateAgent succeeded: Agent, Node, Fence, T0..T1
	EvWrite    = "write"    // SaveAgentState succeeded: Agent, Node, Fence, Seq, Op, T0..T1
	EvRelease  = "release"  // ReleaseAgent was called: Agent, Node, Fence, T0
	EvExec     = "exec"     // a workflow step's function ran: Instance, Step, Attempt
	EvReturned = "returned" // a workflow's Do returned: Instance, Step
	EvKill     = "kill"     // the parent is about to kill PID (node Node): T0
	EvStart    = "start"    // a child's engine is node Node: T0
	EvReap     = "reap"     // node By removed node Node (its own when it stops): T0..T1
)

// Record is one line of the audit log.
type Record struct {
	Ev    string `json:"ev"`
	PID   int    `json:"pid"`
	Node  string `json:"node,omitempty"`
	Agent string `json:"agent,omitempty"`
	Fence int64  `json:"fence,omitempty"`
	Seq   int    `json:"seq,omitempty"`
	Op    string `json:"op,omitempty"`
	// Instance, Step and Attempt name a workflow step.
	Instance string `json:"instance,omitempty"`
	Step     string `json:"step,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
	// By is the node that removed Node, and Until when Node's lease ran
	// out as its row said just before (0: no row).
	By    string `json:"by,omitempty"`
	Until int64  `json:"until,omitempty"`
	T0    int64  `json:"t0"` // Unix nanoseconds
	T1    int64  `json:"t1,omitempty"`
	Err   string `json:"err,omitempty"`
}

// auditLog appends records to the audit file, each with one write(2) on
// an O_APPEND descriptor: records of all processes interleave whole, in
// the order they were written, and a record written before a kill -9 is
// there afterwards.
type auditLog struct {
	f *os.File
}

func openAudit(path string) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	return &auditLog{f: f}, nil
}

// Append appends r, with, when unset, this process's pid and the time.
func (a *auditLog) Append(r Record) error {
	if r.PID == 0 {
		r.PID = os.Getpid()
	}
	if r.T0 == 0 {
		r.T0 = time.Now().UnixNano()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = a.f.Write(append(b, '\n'))
	return err
}

// mustAppend appends r or ends the process: a test that cannot record
// what happened must not go on.
func (a *auditLog) mustAppend(r Record) {
	if err := a.Append(r); err != nil {
		fmt.Fprintf(os.Stderr, "clustertest child %d: audit: %v\n", os.Getpid(), err)
		os.Exit(3)
	}
}

// AppendAudit appends one record to the audit file at path (for the
// parent's kill records).
func AppendAudit(path string, r Record) error {
	a, err := openAudit(path)
	if err != nil {
		return err
	}
	defer a.f.Close()
	return a.Append(r)
}

// ReadAudit reads the audit file. A last line without its newline (being
// written by a process that is alive, or cut off) is left out.
func ReadAudit(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		b = nil
	}
	var out []Record
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("audit line %q: %w", line, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// auditStore records the agent activations, state writes and releases of
// the store's user in the audit log, with the times before the call and
// after it returned.
type auditStore struct {
	store.Store
	audit *auditLog
	node  string
}

func (s *auditStore) ActivateAgent(ctx context.Context, key store.AgentKey, owner string, now time.Time) (*store.Agent, error) {
	t0 := time.Now().UnixNano()
	a, err := s.Store.ActivateAgent(ctx, key, owner, now)
	if err == nil {
		s.audit.mustAppend(Record{Ev: EvActivate, Node: owner, Agent: key.Name, Fence: a.Fence, T0: t0, T1: time.Now().UnixNano()})
	}
	return a, err
}

func (s *auditStore) SaveAgentState(ctx context.Context, l store.AgentLease, state []byte, now time.Time) error {
	t0 := time.Now().UnixNano()
	err := s.Store.SaveAgentState(ctx, l, state, now)
	if err == nil {
		var st State
		_ = json.Unmarshal(state, &st)
		s.audit.mustAppend(Record{Ev: EvWrite, Node: l.Owner, Agent: l.Name, Fence: l.Fence, Seq: st.Seq, Op: st.Op, T0: t0, T1: time.Now().UnixNano()})
	}
	return err
}

func (s *auditStore) RemoveNode(ctx context.Context, id string, now time.Time) (int, error) {
	// The row's lease as it is just before (renewed since the remover read
	// it, at worst): whether the node was removed for a lapsed lease or
	// for its process being gone.
	var until int64
	if id != s.node {
		if nodes, err := s.Store.ListNodes(ctx); err == nil {
			for _, n := range nodes {
				if n.ID == id {
					until = n.ExpiresAt.UnixNano()
				}
			}
		}
	}
	t0 := time.Now().UnixNano()
	n, err := s.Store.RemoveNode(ctx, id, now)
	if err == nil {
		s.audit.mustAppend(Record{Ev: EvReap, Node: id, By: s.node, Until: until, T0: t0, T1: time.Now().UnixNano()})
	}
	return n, err
}

func (s *auditStore) ReleaseAgent(ctx context.Context, l store.AgentLease, now time.Time) error {
	s.audit.mustAppend(Record{Ev: EvRelease, Node: l.Owner, Agent: l.Name, Fence: l.Fence})
	return s.Store.ReleaseAgent(ctx, l, now)
}
