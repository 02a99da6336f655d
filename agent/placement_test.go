//go:build linux

package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/postgres"
)

// activationAudit, when set, is the audit file PlacedCounter records its
// activations in. A child sets it from its configuration.
var activationAudit atomic.Pointer[string]

type placedState struct {
	Count int `json:"count"`
}

// PlacedCounter is the Counter of the placement test: it counts, records
// each activation (with the count it started from) in the audit file, and
// answers HTTP requests with its state.
type PlacedCounter struct {
	agent.Agent[placedState]
}

func (c *PlacedCounter) Increment(ctx context.Context, by int) (int, error) {
	s := c.State()
	s.Count += by
	if err := c.SetState(ctx, s); err != nil {
		return 0, err
	}
	return s.Count, nil
}

func (c *PlacedCounter) OnStart(ctx context.Context) error {
	if p := activationAudit.Load(); p != nil {
		return appendAudit(*p, auditRec{Ev: "activated", Agent: c.Name(), I: c.State().Count})
	}
	return nil
}

func (c *PlacedCounter) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	_ = json.NewEncoder(w).Encode(c.State())
}

// TestSingleActivationAcrossProcesses runs two processes, each with an
// engine and a runtime, on one PostgreSQL schema, and moves Counter/x
// between them: process A (this one) activates it; process B (a child) is
// refused over Go and over HTTP and told A's node; A stops gracefully and
// B activates it at once with A's state; A is refused in turn; B is killed
// with SIGKILL while it increments, and A takes it over within seconds
// with B's last committed state. The activations, recorded by OnStart,
// alternate A, B, A, each starting after the previous one ended and from
// its last count.
func TestSingleActivationAcrossProcesses(t *testing.T) {
	dsn, schema := postgresSchema(t)
	ctx := t.Context()
	st, err := postgres.Open(ctx, dsn, postgres.Options{Schema: schema, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	activationAudit.Store(&audit)
	t.Cleanup(func() { activationAudit.Store(nil) })
	key := store.AgentKey{Class: "Counter", Name: "x"}

	a := newEnv(t, envOptions{store: st, rt: agent.Options{IdleTimeout: time.Hour}, setup: registerProcClasses})
	nodeA := a.eng.NodeID()
	b := startChild(t, childConfig{Backend: "postgres", DSN: dsn, Schema: schema, Audit: audit})
	if b.node == nodeA {
		t.Fatalf("both processes have node id %s", nodeA)
	}
	increment := func(rt *agent.Runtime) (int, error) {
		return agent.Call(ctx, rt, "x", (*PlacedCounter).Increment, 1)
	}
	mustIncrement := func(who string, rt *agent.Runtime, want int) {
		t.Helper()
		if n, err := increment(rt); err != nil || n != want {
			t.Fatalf("%s: increment = %d, %v; want %d", who, n, err, want)
		}
	}
	// refusedInB checks that B's calls, from Go and over HTTP, are
	// refused because x is live on A.
	refusedInB := func(stage string) {
		t.Helper()
		res := b.call("Counter", "x", "increment", 1)
		if !res.Elsewhere || res.OwnerNode != nodeA || res.OwnerPID != os.Getpid() {
			t.Fatalf("%s: B's Go call = %s, %q (elsewhere %v, owner %q pid %d); want ErrAgentElsewhere with an AgentOwnedError naming A's node %s",
				stage, res.Result, res.Err, res.Elsewhere, res.OwnerNode, res.OwnerPID, nodeA)
		}
		if code, body := b.get("/agents/counter/x"); code != http.StatusConflict || !strings.Contains(body, nodeA) {
			t.Fatalf("%s: B's HTTP GET = %d %q; want 409 naming A's node %s", stage, code, body, nodeA)
		}
	}
	// refusedInA is the same for A, with x live on B.
	refusedInA := func(stage string, rt *agent.Runtime, srv *httptest.Server) {
		t.Helper()
		n, err := increment(rt)
		owned, ok := errors.AsType[*store.AgentOwnedError](err)
		if !errors.Is(err, agent.ErrAgentElsewhere) || !ok || owned.Node.ID != b.node || owned.Node.PID != b.PID() || owned.Key != key {
			t.Fatalf("%s: A's Go call = %d, %v; want ErrAgentElsewhere with an AgentOwnedError naming B's node %s", stage, n, err, b.node)
		}
		if code, body := httpGet(t, srv.URL+"/agents/counter/x"); code != http.StatusConflict || !strings.Contains(body, b.node) {
			t.Fatalf("%s: A's HTTP GET = %d %q; want 409 naming B's node %s", stage, code, body, b.node)
		}
	}

	// 1. A activates x; B is refused and told where x lives, which
	// changes nothing for A.
	mustIncrement("A", a.rt, 1)
	mustIncrement("A", a.rt, 2)
	refusedInB("x live on A")
	mustIncrement("A after B's refused calls", a.rt, 3)
	refusedInB("x still live on A")
	if row, err := st.GetAgent(ctx, key); err != nil || row.Owner != nodeA {
		t.Fatalf("agent row = %+v, %v; want it owned by A's node %s", row, err, nodeA)
	}

	// 2. A's runtime stops gracefully, releasing x: B activates it at
	// once and goes on from A's state.
	if err := a.rt.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stoppedA := time.Now()
	if res := b.call("Counter", "x", "increment", 1); res.Err != "" || string(res.Result) != "4" {
		t.Fatalf("B's increment after A stopped = %s, %q; want 4", res.Result, res.Err)
	}
	if code, body := b.get("/agents/counter/x"); code != http.StatusOK || strings.TrimSpace(body) != `{"count":4}` {
		t.Fatalf("B's HTTP GET = %d %q; want 200 {\"count\":4}", code, body)
	}

	// 3. A, with a new runtime on its engine (same node), is refused
	// while x is live on B, before and while B increments.
	rtA, err := agent.NewRuntime(agent.Options{Engine: a.eng, IdleTimeout: time.Hour, Logger: procLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	registerProcClasses(rtA)
	if err := rtA.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rtA.Stop(sctx); err != nil {
			t.Errorf("stop A's second runtime: %v", err)
		}
	})
	srvA := httptest.NewServer(rtA.Handler(agent.HandlerOptions{}))
	t.Cleanup(srvA.Close)
	refusedInA("x live on B", rtA, srvA)

	spins := func() (last int, n int, errs []string) {
		for _, r := range readAudit(t, audit) {
			switch {
			case r.PID != b.PID():
			case r.Ev == "call":
				last, n = r.I, n+1
			case r.Ev == "callerr":
				errs = append(errs, r.Err)
			}
		}
		return last, n, errs
	}
	b.spin(audit, "Counter", "x", "increment", 1)
	eventually(t, 10*time.Second, "B to increment a few times", func() bool { _, n, _ := spins(); return n >= 5 })
	refusedInA("x live on B and incremented there", rtA, srvA)
	eventually(t, 10*time.Second, "B to increment some more", func() bool { _, n, _ := spins(); return n >= 20 })

	// 4. B is killed with SIGKILL mid-increment. A takes x over as soon
	// as its engine reaps B's node, and goes on from B's last committed
	// count: the last one B recorded, or one more if B died between a
	// commit and recording it.
	b.Kill()
	killedB := time.Now()
	lastB, nB, errsB := spins()
	if len(errsB) > 0 {
		t.Fatalf("B's increments failed while x was live there (%d ok): %q", nB, errsB)
	}
	var got int
	refusals := 0
	for {
		n, err := increment(rtA)
		if err == nil {
			got = n
			break
		}
		owned, ok := errors.AsType[*store.AgentOwnedError](err)
		if !ok || owned.Node.ID != b.node {
			t.Fatalf("A's increment after B's death: %v; want success, or a refusal naming B's node until it is reaped", err)
		}
		if time.Since(killedB) > 15*time.Second {
			t.Fatalf("A still refused %v after B was killed: %v", time.Since(killedB), err)
		}
		refusals++
		time.Sleep(20 * time.Millisecond)
	}
	takeover := time.Since(killedB)
	t.Logf("A took x over %v after B's kill (%d refusals meanwhile); B had counted to %d in %d increments", takeover.Round(time.Millisecond), refusals, lastB, nB)
	if takeover > 10*time.Second {
		t.Errorf("take-over took %v; want under 10 s", takeover)
	}
	if got != lastB+1 && got != lastB+2 {
		t.Fatalf("A's first increment after the take-over = %d; B's last recorded count was %d, so want %d (or %d)", got, lastB, lastB+1, lastB+2)
	}
	if row, err := st.GetAgent(ctx, key); err != nil || row.Owner != nodeA || string(row.State) != fmt.Sprintf(`{"count":%d}`, got) {
		t.Fatalf("agent row = %+v, %v; want it owned by A's node with count %d", row, err, got)
	}

	// 5. The activations alternate A, B, A; each started after the
	// previous one ended and from its last count.
	var acts []auditRec
	for _, r := range readAudit(t, audit) {
		if r.Ev == "activated" {
			acts = append(acts, r)
		}
	}
	want := []struct {
		pid, count int
		after      time.Time
	}{{os.Getpid(), 0, time.Time{}}, {b.PID(), 3, stoppedA}, {os.Getpid(), got - 1, killedB}}
	if len(acts) != len(want) {
		t.Fatalf("%d activations %+v; want 3: A, B, A", len(acts), acts)
	}
	for i, w := range want {
		if acts[i].PID != w.pid || acts[i].I != w.count || acts[i].At.Before(w.after) {
			t.Errorf("activation %d: pid %d from count %d at %v; want pid %d from count %d after %v",
				i+1, acts[i].PID, acts[i].I, acts[i].At, w.pid, w.count, w.after)
		}
	}
}
