//go:build linux

package agent_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
			a.kill() // returns once it has died; it stays a zombie
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
