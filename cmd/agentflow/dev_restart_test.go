//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/examples/flights"
	"agentflow/store"
	"agentflow/store/sqlite"
)

// envDevChild makes the test binary run `agentflow` with the arguments it
// holds (as a JSON array): the process TestDevRestartAfterKill kills.
const envDevChild = "AGENTFLOW_DEV_TEST_CHILD"

func TestMain(m *testing.M) {
	if raw, ok := os.LookupEnv(envDevChild); ok {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", envDevChild, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, args, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// devProcess is `agentflow dev` running as a child process.
type devProcess struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{} // closed once it has exited and been reaped
	hold chan struct{} // closed to let it be reaped
}

// startDev starts `agentflow dev` on db, serving agents on a free port.
// Once it dies it is not reaped until reap: killed, it stays a zombie, as
// a process killed from a shell does until the shell waits for it.
func startDev(t *testing.T, db string) *devProcess {
	t.Helper()
	args, err := json.Marshal([]string{"dev", "--db", db, "--addr", "127.0.0.1:0", "--grace", "200ms",
		"--flight-delay", "200ms", "--check-in-wait", "100ms"})
	if err != nil {
		t.Fatal(err)
	}
	d := &devProcess{done: make(chan struct{}), hold: make(chan struct{})}
	d.cmd = exec.Command(os.Args[0], "-test.run=^$")
	d.cmd.Env = append(os.Environ(), envDevChild+"="+string(args))
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-d.hold
		_ = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		d.reap()
		if t.Failed() {
			t.Logf("output of agentflow dev (pid %d):\n%s", d.cmd.Process.Pid, d.out.String())
		}
	})
	return d
}

func (d *devProcess) reap() {
	select {
	case <-d.hold:
	default:
		close(d.hold)
	}
	<-d.done
}

// exited reports whether the process has died.
func (d *devProcess) exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && bytes.HasPrefix(b[i+1:], []byte(" Z"))
}

// waitFor waits until the process's output matches re, and returns the
// first submatch. It fails if the process dies first.
func (d *devProcess) waitFor(t *testing.T, re *regexp.Regexp, within time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
		if m := re.FindStringSubmatch(d.out.String()); m != nil {
			return m[len(m)-1]
		}
		if d.exited() {
			t.Fatalf("agentflow dev exited before printing %q:\n%s", re, d.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("agentflow dev did not print %q within %v:\n%s", re, within, d.out.String())
		}
	}
}

var (
	devAddrRE   = regexp.MustCompile(`agents: ws://(127\.0\.0\.1:\d+)/agents/counter/<name>`)
	devFlightRE = regexp.MustCompile(`MyAgent  traveller  POST /agents/my-agent/traveller \(user-id: ada@example.com\) → (\{"taskId"[^\n]*)`)
)

// TestDevRestartAfterKill runs `agentflow dev`, counts to 5 on a Counter
// over its WebSocket, kills it with SIGKILL and at once starts it again on
// the same database, while the killed one is still a zombie. The new one
// must come up (its flights request, sent to an agent the dead one had
// live, must not be refused) and serve the Counter with its count on the
// first connection.
func TestDevRestartAfterKill(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "dev.db")
	first := startDev(t, db)
	addr := first.waitFor(t, devAddrRE, 30*time.Second)
	first.waitFor(t, devFlightRE, 30*time.Second)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/agents/counter/k", nil)
	if err != nil {
		t.Fatalf("WebSocket to the first process: %v", err)
	}
	readFrames(ctx, t, ws, 2) // identity, state
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"rpc","id":"1","method":"increment","args":[5]}`)); err != nil {
		t.Fatal(err)
	}
	for {
		m := readFrames(ctx, t, ws, 1)[0]
		if m["type"] == "rpc" {
			if m["success"] != true || m["result"] != float64(5) {
				t.Fatalf("reply to increment(5) = %v", m)
			}
			break
		}
	}
	ws.CloseNow()

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for !first.exited() {
		time.Sleep(time.Millisecond)
	}
	killed := time.Now()
	second := startDev(t, db)
	addr = second.waitFor(t, devAddrRE, 30*time.Second)
	ws, _, err = websocket.Dial(ctx, "ws://"+addr+"/agents/counter/k", nil)
	if err != nil {
		t.Fatalf("WebSocket to the restarted process: %v", err)
	}
	defer ws.CloseNow()
	frames := readFrames(ctx, t, ws, 2)
	served := time.Since(killed)
	if st, _ := frames[1]["state"].(map[string]any); frames[1]["type"] != "cf_agent_state" || st["count"] != float64(5) {
		t.Fatalf("restarted process's first frames: %v; want the state with count 5", frames)
	}
	second.waitFor(t, devFlightRE, 30*time.Second)
	t.Logf("the restarted agentflow dev served the counter %v after the kill", served.Round(time.Millisecond))
	if served > 5*time.Second {
		t.Errorf("the counter was served %v after the kill; want it at once, not after the dead node's lease", served)
	}
}

// readFrames reads n JSON frames.
func readFrames(ctx context.Context, t *testing.T, ws *websocket.Conn, n int) []map[string]any {
	t.Helper()
	out := make([]map[string]any, n)
	for i := range out {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
	}
	return out
}

// TestDevRetriesFlightRequest starts dev on a database where the flights
// example's agent is live on another node, whose lease runs out a second
// later (a process of another host that died): dev must not exit on the
// 409 but retry, and send the request once the node is reaped.
func TestDevRetriesFlightRequest(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "dev.db")
	st, err := sqlite.Open(t.Context(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// The other node's lease must outlast dev's start, so that its first
	// request meets the 409, even on a loaded machine (dev took 1.3 s to
	// get there once); dev then retries until the lease lapses.
	other := store.Node{ID: "other", Host: "elsewhere.invalid", PID: 1, Process: "1:1", StartedAt: now, ExpiresAt: now.Add(4 * time.Second)}
	if err := st.Heartbeat(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ActivateAgent(t.Context(), store.AgentKey{Class: flights.AgentClass, Name: devTraveller}, other.ID, now); err != nil {
		t.Fatal(err)
	}
	st.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	var wg sync.WaitGroup
	var devErr error
	wg.Go(func() {
		devErr = runDev(ctx, []string{"--db", db, "--grace", "200ms", "--addr", "", "--flight-delay", "200ms", "--check-in-wait", "100ms"},
			noEnv, &stdout, &stderr)
		cancel()
	})
	for deadline := time.Now().Add(20 * time.Second); !devFlightRE.MatchString(stdout.String()); time.Sleep(10 * time.Millisecond) {
		if ctx.Err() != nil || time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("dev did not send the flights request (err %v):\nstdout:\n%s\nstderr:\n%s", devErr, stdout.String(), stderr.String())
		}
	}
	cancel()
	wg.Wait()
	if devErr != nil {
		t.Errorf("dev: %v", devErr)
	}
	out := stdout.String()
	if want := "MyAgent  traveller  POST /agents/my-agent/traveller → 409 "; !strings.Contains(out, want) || !strings.Contains(out, "retrying for up to 15s") {
		t.Errorf("output lacks the refusal and the retry (%q):\n%s", want, out)
	}
}
