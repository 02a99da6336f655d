package crashtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // for tampering with the SQLite files

	"agentflow/internal/crashtest"
	"agentflow/internal/pgtest"
)

// TestMain hands the process to the crashtest child when the tests start
// this binary as one.
func TestMain(m *testing.M) {
	if crashtest.IsChild() {
		crashtest.RunChild()
		return
	}
	os.Exit(m.Run())
}

// seed returns AGENTFLOW_CRASHTEST_SEED when set, to replay a failing run,
// and otherwise 0 (Run picks one and logs it).
func seed(t *testing.T) int64 {
	s := os.Getenv("AGENTFLOW_CRASHTEST_SEED")
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("AGENTFLOW_CRASHTEST_SEED=%q: %v", s, err)
	}
	return n
}

func sqliteTarget(t *testing.T) crashtest.Target {
	return crashtest.Target{Backend: crashtest.SQLite, SQLitePath: filepath.Join(t.TempDir(), "engine.db")}
}

func pgTarget(t *testing.T) crashtest.Target {
	dsn, schema := pgtest.Schema(t)
	return crashtest.Target{Backend: crashtest.Postgres, DSN: dsn, Schema: schema}
}

// killModes are the ways a child dies in TestKill*: at each kill point
// of the engine, and at random times.
var killModes = []struct {
	name string
	mode crashtest.KillMode
}{
	{"NoKill", crashtest.ModeNone},
	{"InsideStepBeforeFn", crashtest.ModeBefore},
	{"InsideStepFn", crashtest.ModeIn},
	{"AfterCommitBeforeReturn", crashtest.ModeAfter},
	{"RandomTime", crashtest.ModeSignal},
	{"Mixed", crashtest.ModeMixed},
}

// runKills runs processes children on one store, kills them with SIGKILL
// six times in all as mode says, restarting each at once, and checks the durability contract: no returned
// step ran again, every instance finished with its output, every
// execution carried its step's idempotency key and attempt number, every
// effect exists exactly once, and some steps were cut off and run again.
// Without kills (ModeNone) every step must have run exactly once.
//
// The lease is a minute, far beyond the test's time: a restarted process
// can only resume the dead one's instances at once because it sees that
// process is gone from this host.
func runKills(t *testing.T, target crashtest.Target, mode crashtest.KillMode, instances, processes int) {
	ctx := t.Context()
	r, err := crashtest.Run(ctx, crashtest.Scenario{
		Target:     target,
		Instances:  instances,
		Processes:  processes,
		Kill:       mode,
		Kills:      6,
		Seed:       seed(t),
		Lease:      time.Minute,
		Sleep:      30 * time.Millisecond,
		RetryDelay: 20 * time.Millisecond,
		Timeout:    45 * time.Second,
		Logf:       t.Logf,
	})
	if r != nil {
		t.Logf("report: %s", r)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("seed %d: %v", r.Seed, err)
	}
	if mode == crashtest.ModeNone {
		if err := r.ExactlyOnceErr(processes); err != nil {
			t.Fatal(err)
		}
		return
	}
	if r.Kills < 1 {
		t.Fatalf("seed %d: the children were never killed", r.Seed)
	}
	if mode == crashtest.ModeIn && r.Reexecuted == 0 {
		t.Fatalf("seed %d: no step was cut off and run again, though children died inside steps", r.Seed)
	}
}

// scale returns n, or n/div under the race detector.
func scale(n, div int) int {
	if raceEnabled {
		return n / div
	}
	return n
}

func TestKillSQLite(t *testing.T) {
	for _, km := range killModes {
		t.Run(km.name, func(t *testing.T) { runKills(t, sqliteTarget(t), km.mode, scale(1000, 10), 1) })
	}
}

func TestKillPostgres(t *testing.T) {
	pgtest.DSN(t)
	for _, km := range killModes {
		t.Run(km.name, func(t *testing.T) { runKills(t, pgTarget(t), km.mode, scale(300, 2), 1) })
	}
	// Two processes share the database; each is killed and restarted
	// while the other goes on.
	t.Run("TwoProcessesMixed", func(t *testing.T) { runKills(t, pgTarget(t), crashtest.ModeMixed, scale(600, 2), 2) })
}

// TestTwoProcessesPostgres runs two engines in two processes on one
// database, without crashes: 1,000 instances complete, every step ran
// exactly once and applied its effect exactly once, and both processes
// did work.
func TestTwoProcessesPostgres(t *testing.T) {
	target := pgTarget(t)
	r, err := crashtest.Run(t.Context(), crashtest.Scenario{
		Target:     target,
		Instances:  1000,
		Processes:  2,
		Sleep:      30 * time.Millisecond,
		RetryDelay: 20 * time.Millisecond,
		Timeout:    45 * time.Second,
		Logf:       t.Logf,
	})
	if r != nil {
		t.Logf("report: %s", r)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ExactlyOnceErr(2); err != nil {
		t.Fatal(err)
	}
}

// TestTakeoverPostgres runs two engines in two processes on one database
// with a 3 s lease and kills one with SIGKILL while instances are in
// flight; the other must finish every instance within 10 s of the kill,
// with the durability contract intact.
//
// In "DeadProcess" the victim's own lease is 30 s, so the survivor can only
// take over within 10 s because it sees the dead node's process is gone
// from this host (at its next heartbeat). In "LeaseExpiry" both leases are
// 3 s and the dead node's row is first made to look like another host's,
// so only its lease running out lets the survivor take over.
func TestTakeoverPostgres(t *testing.T) {
	pgtest.DSN(t)
	const (
		lease  = 3 * time.Second
		within = 10 * time.Second
	)
	// Half under the race detector, which slows the survivor several times.
	instances := scale(1000, 2)
	for _, tc := range []struct {
		name        string
		victimLease time.Duration
		disguise    bool
	}{
		{"DeadProcess", 30 * time.Second, false},
		{"LeaseExpiry", lease, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			target := pgTarget(t)
			if err := crashtest.Prepare(ctx, target); err != nil {
				t.Fatal(err)
			}
			m, err := crashtest.OpenMonitor(ctx, target, "")
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			cfg := crashtest.ChildConfig{
				Target: target, Create: instances, Lease: lease,
				Sleep: 300 * time.Millisecond, RetryDelay: 20 * time.Millisecond,
				LogLevel: "info", // the survivor logs why it took the victim's instances over
			}
			children := make([]*crashtest.Child, 2)
			for i := range children {
				cfg.NodeID = fmt.Sprintf("takeover-%d", i)
				if i == 0 {
					cfg.Lease = tc.victimLease
				} else {
					cfg.Lease = lease
				}
				c, err := crashtest.StartChild(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Kill()
				children[i] = c
			}
			victim, survivor := children[0], children[1]

			// Kill once both engines run and a tenth of the instances finished.
			waitFor(t, 30*time.Second, "instances in flight", func() (bool, error) {
				for _, c := range children {
					select {
					case <-c.Done():
						return false, fmt.Errorf("child exited: %v\n%s", c.ExitErr(), c.Output())
					case <-c.Started():
					default:
						return false, nil
					}
				}
				p, err := m.Progress(ctx)
				return p.Created == instances && p.Finished >= instances/10, err
			})
			if tc.disguise {
				if ok, err := m.DisguiseNode(ctx, victim.Config.NodeID); err != nil || !ok {
					t.Fatalf("disguise node %s: found=%v, %v", victim.Config.NodeID, ok, err)
				}
			}
			victim.Kill()
			killed := time.Now()
			p, err := m.Progress(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed %s (pid %d) with %d of %d instances finished", victim.Config.NodeID, victim.PID(), p.Finished, instances)
			if p.Finished == instances {
				t.Fatal("every instance finished before the kill")
			}

			var reaped, finished time.Duration
			waitFor(t, within+5*time.Second, "the survivor to finish every instance", func() (bool, error) {
				select {
				case <-survivor.Done():
					return false, fmt.Errorf("survivor exited: %v\n%s", survivor.ExitErr(), survivor.Output())
				default:
				}
				if reaped == 0 {
					exists, err := m.NodeExists(ctx, victim.Config.NodeID)
					if err != nil {
						return false, err
					}
					if !exists {
						reaped = time.Since(killed)
					}
				}
				p, err := m.Progress(ctx)
				if p.Finished == instances {
					finished = time.Since(killed)
					return true, err
				}
				return false, err
			}, func() string {
				p, err := m.Progress(context.WithoutCancel(ctx))
				exists, _ := m.NodeExists(context.WithoutCancel(ctx), victim.Config.NodeID)
				return fmt.Sprintf("progress %+v (%v); dead node row still there: %v; survivor's output:\n%s", p, err, exists, survivor.Output())
			})
			if reaped == 0 { // the survivor could finish first if the victim held no instance
				waitFor(t, 2*lease, "the dead node's removal", func() (bool, error) {
					exists, err := m.NodeExists(ctx, victim.Config.NodeID)
					reaped = time.Since(killed)
					return !exists, err
				})
			}
			t.Logf("dead node removed %.2fs after the kill; every instance finished %.2fs after the kill", reaped.Seconds(), finished.Seconds())
			if finished > within {
				t.Errorf("the survivor finished %.2fs after the kill, want within %s", finished.Seconds(), within)
			}
			if err := survivor.Stop(15 * time.Second); err != nil {
				t.Fatalf("%v\n%s", err, survivor.Output())
			}
			// The engine logs whether it removed a node for its lease
			// (expired=true) or for its process being gone (expired=false).
			var took string
			for line := range strings.Lines(survivor.Output()) {
				if strings.Contains(line, "took over a dead node") && strings.Contains(line, "dead_node="+victim.Config.NodeID+" ") {
					took = strings.TrimSpace(line)
				}
			}
			t.Logf("survivor: %s", took)
			if want := fmt.Sprintf("expired=%v", tc.disguise); !strings.Contains(took, want) {
				t.Errorf("the survivor should have taken the dead node over with %s; its log says: %q", want, took)
			}
			for _, c := range children {
				if err := c.RaceErr(); err != nil {
					t.Error(err)
				}
			}
			r, err := m.Check(ctx, instances)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("report: %s", r)
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			if r.PIDs[survivor.PID()] == 0 || r.PIDs[victim.PID()] == 0 {
				t.Fatalf("both processes should have done work: %v", r.PIDs)
			}
		})
	}
}

// TestRecovery runs the bench's recovery scenario on a small scale.
func TestRecovery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) crashtest.Target
	}{
		{"SQLite", sqliteTarget},
		{"Postgres", pgTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := crashtest.Recovery(t.Context(), crashtest.RecoveryOptions{
				Target: tc.target(t), Instances: scale(500, 10), Logf: t.Logf,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovery_s=%.2f duplicate_steps=%d lost_instances=%d in_flight=%d reexecuted=%d; %s",
				res.RecoveryS, res.DuplicateSteps, res.LostInstances, res.InFlight, res.Reexecuted, res.Report)
			if err := res.Report.Err(); err != nil {
				t.Fatal(err)
			}
			if res.InFlight == 0 || res.RecoveryS <= 0 {
				t.Fatalf("nothing was in flight at the kill: %+v", res)
			}
		})
	}
}

// waitFor polls cond every 20 ms until it holds, fails, or timeout passes;
// then it fails the test with what the extra functions return.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error), extra ...func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			var more []string
			for _, f := range extra {
				more = append(more, f())
			}
			t.Fatalf("%s did not happen within %s\n%s", what, timeout, strings.Join(more, "\n"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestCheckDetectsViolations makes sure the checker can fail: after a clean
// run it tampers with the engine's rows and the audit log the way a broken
// engine would leave them, and expects each violation to be counted.
func TestCheckDetectsViolations(t *testing.T) {
	ctx := t.Context()
	target := sqliteTarget(t)
	const instances = 20
	r, err := crashtest.Run(ctx, crashtest.Scenario{Target: target, Instances: instances, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ExactlyOnceErr(1); err != nil {
		t.Fatalf("clean run: %v", err)
	}

	exec := func(path, q string, args ...any) {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	audit := target.SQLitePath + ".audit"
	logExec := func(instance, step string, occ int, key string, attempt int) {
		exec(audit, `INSERT INTO crashtest_log (kind, instance, step, occurrence, idem_key, attempt, ok, pid, at) VALUES ('exec', ?, ?, ?, ?, ?, 1, 1, 0)`,
			instance, step, occ, key, attempt)
	}
	// A returned step runs again.
	logExec("ct-00000", "a", 0, "ct-00000:a:0", 1)
	// A returned step runs again with another step's key.
	logExec("ct-00001", "loop", 1, "ct-00001:loop:0", 1)
	// A returned step runs again with a wrong attempt number.
	logExec("ct-00002", "flaky", 0, "ct-00002:flaky:0", 3)
	// A step no instance has.
	logExec("ct-00003", "zzz", 0, "ct-00003:zzz:0", 1)
	// An effect is missing.
	exec(audit, `DELETE FROM crashtest_effects WHERE idem_key = 'ct-00004:final:0'`)
	// Instances lost: not finished, wrong output, gone.
	exec(target.SQLitePath, `UPDATE workflow_instances SET status = 'running' WHERE id = 'ct-00005'`)
	exec(target.SQLitePath, `UPDATE workflow_instances SET output = '"wrong"' WHERE id = 'ct-00006'`)
	exec(target.SQLitePath, `DELETE FROM workflow_instances WHERE id = 'ct-00007'`)

	r, err = crashtest.Check(ctx, target, "", instances)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s", r)
	t.Logf("problems:\n%s", strings.Join(r.Problems, "\n"))
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"DuplicateSteps", r.DuplicateSteps, 3},
		{"BadKeys", r.BadKeys, 1},
		{"BadAttempts", r.BadAttempts, 1},
		{"UnexpectedKeys", r.UnexpectedKeys, 1},
		{"MissingEffects", r.MissingEffects, 1},
		{"Lost", r.Lost, 3},
		{"Complete", r.Complete, instances - 3},
		{"Reexecuted", r.Reexecuted, 2}, // a and loop:1 ran attempt 1 again; flaky ran a new attempt
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
	if r.Err() == nil {
		t.Error("Err() = nil for a tampered run")
	}
	if r.ExactlyOnceErr(1) == nil {
		t.Error("ExactlyOnceErr() = nil for a tampered run")
	}
}
