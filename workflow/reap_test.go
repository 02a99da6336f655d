package workflow_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// TestReapDeadNodes checks which node rows an engine takes over when it
// starts: a node whose lease ran out, and a node on this host whose process
// is gone, including one that had this very process's pid (as PID 1 does in
// a restarted container); but not a live node of another host, nor another
// engine of this process.
func TestReapDeadNodes(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// A pid that no process has any more.
	done := exec.Command(os.Args[0], "-test.run=^$")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := done.ProcessState.Pid()
	// A process killed but not yet waited for by its parent (this test):
	// a zombie, whose /proc entry remains, as after a kill -9 from a shell
	// that has not reaped it yet.
	zombie := exec.Command(os.Args[0], "-test.run=^TestHelperProcessSleeps$")
	zombie.Env = append(os.Environ(), envHelperSleep+"=1")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zombie.Process.Kill(); _ = zombie.Wait() })
	zombiePID := zombie.Process.Pid
	zombieIdentity := workflow.ProcessIdentity(zombiePID) // as its engine would have written it
	if zombieIdentity == "" {
		t.Fatalf("no identity for the live helper process %d", zombiePID)
	}
	if err := zombie.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !isZombie(zombiePID); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("helper process %d did not become a zombie after SIGKILL", zombiePID)
		}
	}

	now := time.Now()
	for _, tc := range []struct {
		name       string
		node       func() store.Node // the other node's row, unless it is a sibling engine
		takenOver  bool
		siblingNow bool
	}{
		{"LeaseExpired", func() store.Node {
			return store.Node{ID: "n", Host: "elsewhere.invalid", PID: 1, StartedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Second)}
		}, true, false},
		{"LeaseCurrent", func() store.Node {
			return store.Node{ID: "n", Host: "elsewhere.invalid", PID: 1, StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		}, false, false},
		{"SameHostDeadProcess", func() store.Node {
			return store.Node{ID: "n", Host: host, PID: deadPID, StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		}, true, false},
		{"SameHostZombieProcess", func() store.Node {
			return store.Node{ID: "n", Host: host, PID: zombiePID, Process: zombieIdentity, StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		}, true, false},
		{"SameHostSamePIDDeadProcess", func() store.Node {
			return store.Node{ID: "n", Host: host, PID: os.Getpid(), StartedAt: now, ExpiresAt: now.Add(time.Hour)}
		}, true, false},
		{"SiblingEngineOfThisProcess", nil, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "reap.db"), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			newEngine := func(id string) *workflow.Engine {
				e, err := workflow.NewEngine(workflow.Options{Store: st, NodeID: id, Lease: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				workflow.MustRegister(e, "w", workflow.Func[int, string](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
					return "done", nil
				}))
				return e
			}
			other := "n"
			if tc.siblingNow {
				sib := newEngine("sibling")
				if err := sib.Start(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sib.Stop(context.Background()) })
				other = "sibling"
			} else if err := st.Heartbeat(ctx, tc.node()); err != nil {
				t.Fatal(err)
			}
			// An instance the other node was executing.
			if err := st.CreateInstances(ctx, []*store.Instance{{
				ID: "i", Workflow: "w", Params: []byte("0"), Status: store.StatusRunning, CreatedAt: now, Owner: other,
			}}); err != nil {
				t.Fatal(err)
			}

			e := newEngine("me")
			if err := e.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Stop(context.Background()) })

			// Taken over at start, the instance completes at once; left
			// alone, it must still be the other node's a second later.
			wait := time.Second
			if tc.takenOver {
				wait = 10 * time.Second
			}
			var in *store.Instance
			for deadline := time.Now().Add(wait); ; {
				if in, err = st.GetInstance(ctx, "i"); err != nil {
					t.Fatal(err)
				}
				if in.Status == store.StatusComplete || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			nodes, err := st.ListNodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			present := false
			for _, n := range nodes {
				present = present || n.ID == other
			}
			if tc.takenOver {
				if in.Status != store.StatusComplete || present {
					t.Fatalf("node %s should have been taken over: instance %s (owner %q), node row present=%v", other, in.Status, in.Owner, present)
				}
				return
			}
			if in.Status == store.StatusComplete || in.Owner != other || !present {
				t.Fatalf("node %s should have been left alone: instance %s (owner %q), node row present=%v", other, in.Status, in.Owner, present)
			}
		})
	}
}

// envHelperSleep makes TestHelperProcessSleeps sleep: it is the process
// TestReapDeadNodes kills.
const envHelperSleep = "AGENTFLOW_WORKFLOW_HELPER_SLEEP"

func TestHelperProcessSleeps(t *testing.T) {
	if os.Getenv(envHelperSleep) == "" {
		t.Skip("a helper process of TestReapDeadNodes")
	}
	time.Sleep(time.Minute)
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
