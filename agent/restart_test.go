//go:build linux

package agent_test

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// TestRestartAfterKillServesAtOnce kills a process with SIGKILL right
// after one of its agents acknowledged a state change, and starts another
// on the same host and store while the killed one is still a zombie (its
// parent has not waited for it yet, as happens when a shell restarts a
// command it has just killed). The new process must serve the agent on its
// very first request, with the acknowledged state: its engine reaps the
// dead node as it starts, rather than when the node's lease runs out.
func TestRestartAfterKillServesAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) childConfig
	}{
		{"SQLite", func(t *testing.T) childConfig {
			path := filepath.Join(t.TempDir(), "agents.db")
			st, err := sqlite.Open(t.Context(), path, sqlite.Options{}) // migrated here, not by the children
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			return childConfig{Backend: "sqlite", SQLitePath: path}
		}},
		{"Postgres", func(t *testing.T) childConfig {
			dsn, schema := postgresSchema(t)
			st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema})
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			return childConfig{Backend: "postgres", DSN: dsn, Schema: schema}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg(t)
			a := startHeldChild(t, cfg)
			if res := a.call("Counter", "k", "increment", 7); res.Err != "" || string(res.Result) != "7" {
				t.Fatalf("increment in the first process = %s, %q; want 7", res.Result, res.Err)
			}
			a.Kill() // returns once it has died; it stays a zombie
			killed := time.Now()

			b := startChild(t, cfg)
			ready := time.Since(killed)
			start := time.Now()
			code, body := b.get("/agents/counter/k")
			first := time.Since(start)
			served := time.Since(killed)
			if code != http.StatusOK || strings.TrimSpace(body) != `{"count":7}` {
				t.Fatalf("first request to the restarted process: %d %q; want 200 {\"count\":7}", code, body)
			}
			t.Logf("%s: restarted process ready %v after the kill; its first request took %v; served %v after the kill",
				tc.name, ready.Round(time.Millisecond), first.Round(time.Millisecond), served.Round(time.Millisecond))
			// The dead node's lease is 10 s: a take-over that waited for it
			// would take that long.
			if first > time.Second || served > 5*time.Second {
				t.Errorf("served %v after the kill (first request %v); want it at once", served, first)
			}
			if res := b.call("Counter", "k", "increment", 1); res.Err != "" || string(res.Result) != "8" {
				t.Errorf("increment in the restarted process = %s, %q; want 8", res.Result, res.Err)
			}
		})
	}
}

// TestActivateReapsDeadNodeOfThisHost checks an agent live on a node that
// died after this process's engine started, so that neither the engine's
// start nor a heartbeat (the clock is virtual: none comes) reaped it. When
// the node ran on this host and its process is gone, the first call takes
// the agent over with its state; a node of another host is left to its
// lease, and the call is refused.
func TestActivateReapsDeadNodeOfThisHost(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	done := exec.Command(os.Args[0], "-test.run=^$")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := done.ProcessState.Pid() // reaped: no process has it
	for _, tc := range []struct {
		name     string
		host     string
		takeOver bool
	}{
		{"ThisHost", host, true},
		{"OtherHost", "elsewhere.invalid", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			clock := clockwork.NewFakeClockAt(time.Now())
			e := newEnv(t, envOptions{clock: clock, setup: registerProcClasses})
			now := clock.Now()
			dead := store.Node{ID: "dead", Host: tc.host, PID: deadPID, Process: "gone", StartedAt: now, ExpiresAt: now.Add(time.Hour)}
			if err := e.store.Heartbeat(ctx, dead); err != nil {
				t.Fatal(err)
			}
			key := store.AgentKey{Class: "Counter", Name: "k"}
			row, err := e.store.ActivateAgent(ctx, key, dead.ID, now)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.store.SaveAgentState(ctx, store.AgentLease{AgentKey: key, Owner: dead.ID, Fence: row.Fence}, []byte(`{"count":3}`), now); err != nil {
				t.Fatal(err)
			}

			n, err := agent.Call(ctx, e.rt, key.Name, (*PlacedCounter).Increment, 1)
			if !tc.takeOver {
				if owned, ok := errors.AsType[*store.AgentOwnedError](err); !ok || owned.Node.ID != dead.ID {
					t.Fatalf("increment = %d, %v; want an AgentOwnedError naming node %s", n, err, dead.ID)
				}
				return
			}
			if err != nil || n != 4 {
				t.Fatalf("increment = %d, %v; want 4, the dead node's state taken over", n, err)
			}
			nodes, err := e.store.ListNodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if n.ID == dead.ID {
					t.Errorf("the dead node's row is still there")
				}
			}
		})
	}
}
