//go:build linux

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// stepperState configures a Stepper's fiber. It is the agent's state, so
// that whichever process runs or resumes the fiber finds it.
type stepperState struct {
	Steps   int    `json:"steps"`
	DelayMS int    `json:"delay_ms"`
	Audit   string `json:"audit"`
}

// stepFiber is the id of a Stepper's fiber.
const stepFiber = "count"

// Stepper runs a fiber that counts from 0 to Steps-1: each step is
// recorded in the audit file, takes DelayMS, and is then stashed, so the
// stash is the last step done. It has no recovery hook.
type Stepper struct {
	agent.Agent[stepperState]
}

// Begin stores cfg and starts the fiber.
func (s *Stepper) Begin(ctx context.Context, cfg stepperState) (string, error) {
	if err := s.SetState(ctx, cfg); err != nil {
		return "", err
	}
	info, err := s.StartFiber(ctx, "count", s.count, agent.FiberOptions{ID: stepFiber})
	return info.ID, err
}

// count is the fiber: it starts after the stashed step, if any.
func (s *Stepper) count(ctx context.Context, f *agent.Fiber) error {
	cfg := s.State()
	next := 0
	var last int
	if ok, err := f.Stashed(&last); err != nil {
		return err
	} else if ok {
		next = last + 1
	}
	for i := next; i < cfg.Steps; i++ {
		if err := appendAudit(cfg.Audit, auditRec{Ev: "step", Agent: s.Name(), I: i}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(cfg.DelayMS) * time.Millisecond):
		}
		if err := f.Stash(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// RecoveringStepper is a Stepper whose recovery hook records what it was
// handed and what the ledger said, then resumes the fiber from its stash.
type RecoveringStepper struct {
	Stepper
}

func (r *RecoveringStepper) OnFiberRecovered(ctx context.Context, info agent.FiberInfo) error {
	ledger, err := r.GetFiber(ctx, info.ID)
	if err != nil {
		return err
	}
	rec := auditRec{Ev: "recovered", Agent: r.Name(), Status: info.Status, Ledger: ledger.Status, Stash: info.Stash}
	if err := appendAudit(r.State().Audit, rec); err != nil {
		return err
	}
	_, err = r.ResumeFiber(ctx, info.ID, r.count, false)
	return err
}

// TestFiberRecoveryAfterKill kills a process running fibers with SIGKILL
// and recovers them in a fresh runtime on the same store (DESIGN §3.6): a
// class with OnFiberRecovered resumes its fiber from the stash, so only
// the step in flight at the kill runs twice; a fiber of a class without
// the hook ends interrupted in the ledger, neither lost nor running
// forever.
//
// The child's engine has the default 10 s lease: recovery within a few
// seconds shows that the dead process's node was reaped at once, because
// its process is gone from this host.
func TestFiberRecoveryAfterKill(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "agents.db")
		st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testFiberRecovery(t, st, childConfig{Backend: "sqlite", SQLitePath: path})
	})
	t.Run("Postgres", func(t *testing.T) {
		dsn, schema := postgresSchema(t)
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testFiberRecovery(t, st, childConfig{Backend: "postgres", DSN: dsn, Schema: schema})
	})
}

// testFiberRecovery runs the scenario on st, whose store the child opens
// as cfg says. st is open already, so its migrations are done.
func testFiberRecovery(t *testing.T, st store.Store, cfg childConfig) {
	ctx := t.Context()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	const steps = 30
	recovering := store.AgentKey{Class: "RecoveringStepper", Name: "r"}
	plain := store.AgentKey{Class: "Stepper", Name: "p"}
	keys := []store.AgentKey{recovering, plain}

	ch := startChild(t, cfg)
	for _, k := range keys {
		res := ch.call(k.Class, k.Name, "begin", stepperState{Steps: steps, DelayMS: 10, Audit: audit})
		if res.Err != "" || string(res.Result) != `"`+stepFiber+`"` {
			t.Fatalf("%s.begin in the child = %s, %s", k, res.Result, res.Err)
		}
	}
	fiber := func(k store.AgentKey) *store.Fiber {
		t.Helper()
		f, err := st.GetFiber(ctx, k, stepFiber)
		if err != nil {
			t.Fatalf("GetFiber(%s): %v", k, err)
		}
		return f
	}
	const before = 5
	eventually(t, 20*time.Second, fmt.Sprintf("both fibers to stash step %d", before), func() bool {
		for _, k := range keys {
			if stashed(t, fiber(k)) < before {
				return false
			}
		}
		return true
	})

	ch.Kill()
	killed := time.Now()
	for _, k := range keys {
		f := fiber(k)
		if f.Status != store.FiberRunning || f.Owner != ch.node {
			t.Fatalf("%s's fiber right after the kill: %s owned by %q, want running owned by the dead node %s", k, f.Status, f.Owner, ch.node)
		}
		if s := stashed(t, f); s >= steps-1 {
			t.Fatalf("%s's fiber stashed step %d before the kill: it finished too fast to be cut off", k, s)
		}
	}

	// A fresh runtime on the same store: its engine reaps the dead node
	// as it starts, and its recovery loop activates both agents at once.
	newEnv(t, envOptions{store: st, rt: agent.Options{PollInterval: 100 * time.Millisecond}, setup: registerProcClasses})
	eventually(t, 15*time.Second, "the recovered fiber to complete", func() bool {
		return fiber(recovering).Status == store.FiberCompleted
	})
	completed := time.Since(killed)
	eventually(t, 5*time.Second, "the fiber without a hook to be interrupted", func() bool {
		return fiber(plain).Status == store.FiberInterrupted
	})

	recs := readAudit(t, audit)
	me := os.Getpid()
	var hook *auditRec
	for i, r := range recs {
		if r.Ev == "recovered" {
			if hook != nil || r.Agent != recovering.Name || r.PID != me {
				t.Fatalf("unexpected recovery hook call %+v (earlier: %+v)", r, hook)
			}
			hook = &recs[i]
		}
	}
	if hook == nil {
		t.Fatal("OnFiberRecovered was not called")
	}
	if hook.Status != store.FiberInterrupted || hook.Ledger != store.FiberInterrupted {
		t.Errorf("OnFiberRecovered was handed a %s fiber, the ledger said %s; want interrupted for both", hook.Status, hook.Ledger)
	}
	var s int
	if err := json.Unmarshal(hook.Stash, &s); err != nil {
		t.Fatalf("stash handed to OnFiberRecovered %q: %v", hook.Stash, err)
	}
	if s < before {
		t.Errorf("OnFiberRecovered was handed stash %d, but step %d was stashed before the kill", s, before)
	}
	recoveredIn := hook.At.Sub(killed)
	t.Logf("%s: killed at stash %d; hook called %v after the kill, fiber completed %v after it", cfg.Backend, s, recoveredIn.Round(time.Millisecond), completed.Round(time.Millisecond))
	if recoveredIn > 5*time.Second {
		t.Errorf("the recovery hook ran %v after the kill; the dead node should be reaped at once", recoveredIn)
	}

	// The recovered fiber resumed after its stash: steps 0..s ran once, in
	// the child; s+1 (in flight at the kill) ran in the child at most once
	// and again here; the rest ran here once.
	runs := stepRuns(recs, recovering.Name)
	checkStepKeys(t, runs, steps)
	for i := range steps {
		child, here, other := runs[i].split(ch.PID(), me)
		switch {
		case other != 0:
			t.Errorf("step %d ran %d time(s) in some other process", i, other)
		case i <= s && (child != 1 || here != 0):
			t.Errorf("step %d (at or before the stash %d) ran %d time(s) in the child and %d here; want once in the child", i, s, child, here)
		case i == s+1 && (child > 1 || here != 1):
			t.Errorf("step %d (in flight at the kill) ran %d time(s) in the child and %d here; want at most once there and once here", i, child, here)
		case i > s+1 && (child != 0 || here != 1):
			t.Errorf("step %d (after the stash %d) ran %d time(s) in the child and %d here; want once here", i, s, child, here)
		}
	}
	c, h, _ := runs[s+1].split(ch.PID(), me)
	t.Logf("%s: step %d, in flight at the kill, ran %d time(s) in the child and %d here", cfg.Backend, s+1, c, h)
	f := fiber(recovering)
	if f.Owner != "" || f.FinishedAt.IsZero() || stashed(t, f) != steps-1 {
		t.Errorf("recovered fiber's ledger entry: owner %q, finished at %v, stash %s; want no owner, a finish time, stash %d", f.Owner, f.FinishedAt, f.Stash, steps-1)
	}

	// The fiber without a hook stays interrupted with its stash, and did
	// not run again.
	p := fiber(plain)
	sp := stashed(t, p)
	if p.Owner != "" || sp < before || !p.FinishedAt.IsZero() {
		t.Errorf("interrupted fiber's ledger entry: owner %q, stash %d, finished at %v; want no owner, stash ≥ %d, not finished", p.Owner, sp, p.FinishedAt, before)
	}
	runs = stepRuns(recs, plain.Name)
	checkStepKeys(t, runs, steps)
	for i := range steps {
		child, here, other := runs[i].split(ch.PID(), me)
		if here+other != 0 || i <= sp && child != 1 || i == sp+1 && child > 1 || i > sp+1 && child != 0 {
			t.Errorf("step %d of the fiber without a hook (stash %d) ran %d time(s) in the child, %d here, %d elsewhere", i, sp, child, here, other)
		}
	}
	time.Sleep(3 * 100 * time.Millisecond) // a few recovery polls
	if p := fiber(plain); p.Status != store.FiberInterrupted || p.Owner != "" {
		t.Errorf("the interrupted fiber became %s owned by %q", p.Status, p.Owner)
	}
	if orphans, err := st.OrphanedFiberAgents(ctx, []string{"Stepper", "RecoveringStepper"}, 10); err != nil || len(orphans) != 0 {
		t.Errorf("OrphanedFiberAgents = %v, %v; want none", orphans, err)
	}
}

// stashed returns the step a Stepper's fiber stashed, or -1.
func stashed(t *testing.T, f *store.Fiber) int {
	t.Helper()
	if f.Stash == nil {
		return -1
	}
	var i int
	if err := json.Unmarshal(f.Stash, &i); err != nil {
		t.Fatalf("stash %q of fiber %s: %v", f.Stash, f.ID, err)
	}
	return i
}

// runsByPID counts one step's audited runs by process.
type runsByPID map[int]int

// split returns the runs in processes a and b and in any other.
func (r runsByPID) split(a, b int) (inA, inB, other int) {
	for pid, n := range r {
		switch pid {
		case a:
			inA += n
		case b:
			inB += n
		default:
			other += n
		}
	}
	return inA, inB, other
}

// stepRuns counts the audited runs of each step of agentName's fiber.
func stepRuns(recs []auditRec, agentName string) map[int]runsByPID {
	out := map[int]runsByPID{}
	for _, r := range recs {
		if r.Ev != "step" || r.Agent != agentName {
			continue
		}
		if out[r.I] == nil {
			out[r.I] = runsByPID{}
		}
		out[r.I][r.PID]++
	}
	return out
}

// checkStepKeys fails if a step outside 0..steps-1 ran.
func checkStepKeys(t *testing.T, runs map[int]runsByPID, steps int) {
	t.Helper()
	for i := range runs {
		if i < 0 || i >= steps {
			t.Errorf("step %d ran, but the fiber has steps 0 to %d", i, steps-1)
		}
	}
}
