// Package childproc is the harness of tests that run a second process and
// kill it with kill -9: the test binary runs itself again as a child in a
// role named by an environment variable (Main, Start), the parent reads
// its ready line, kills it and reaps it (Child), and both record what they
// do in an audit file outside the store, one JSON line per record with a
// single write, so that a line written before a kill is there afterwards
// (Append, ReadAudit).
//
// What the child serves, and what the test checks, stay in the test.
package childproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyLine starts the line a child prints once it serves (Ready).
const readyLine = "childproc: ready"

// Main is a test binary's TestMain for a package whose tests start
// children under env: in a child (env is set) it runs serve with env's
// value, the child's config, and ends the process, with status 3 when
// serve fails; otherwise it runs the tests.
func Main(m *testing.M, env string, serve func(config string) error) {
	if config, ok := os.LookupEnv(env); ok {
		if err := serve(config); err != nil {
			fmt.Fprintf(os.Stderr, "child %d (%s): %v\n", os.Getpid(), env, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Ready prints the child's ready line, with fields (the child's node id
// and address, say) that the parent finds in Child.Ready.
func Ready(fields ...any) {
	fmt.Println(append([]any{readyLine}, fields...)...)
}

// Options configure a child.
type Options struct {
	// Hold keeps the child from being reaped when it dies, until Reap:
	// killed, it stays a zombie, as a process killed from a shell does
	// until the shell waits for it. While it is held, a child that exits
	// before it is ready is noticed only by the 30 s timeout. Linux only.
	Hold bool
}

// Child is a child process, seen from the test.
type Child struct {
	Cmd *exec.Cmd
	// Ready is the rest of the child's ready line: the fields it passed to
	// Ready, separated by spaces.
	Ready string

	done chan struct{} // closed once the child is reaped
	hold chan struct{} // with Options.Hold, closed by Reap

	mu       sync.Mutex
	out      bytes.Buffer // stdout and stderr
	lines    bytes.Buffer // stdout and stderr not yet split into lines
	ready    chan string  // the ready line
	sawReady bool
}

// Start runs the test binary again, running no test, with env set to
// config as JSON, and waits until the child prints its ready line (30 s at
// most). The child is killed and reaped when the test ends (and, on Linux,
// by the kernel if the test process dies); a data race it reported fails
// the test, and its output is logged when the test failed.
func Start(t testing.TB, env string, config any, opts Options) *Child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{done: make(chan struct{}), ready: make(chan string, 1)}
	if opts.Hold {
		c.hold = make(chan struct{})
	}
	c.Cmd = exec.Command(exe, "-test.run=^$")
	c.Cmd.Env = append(os.Environ(), env+"="+string(b))
	c.Cmd.Stdout = (*childOutput)(c)
	c.Cmd.Stderr = (*childOutput)(c)
	setParentDeathSignal(c.Cmd)
	if err := c.Cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	// Wait reaps the child as soon as it dies, unless it is held: a zombie
	// would still look alive to the engine's check for dead processes on
	// this host.
	go func() {
		if c.hold != nil {
			<-c.hold
		}
		_ = c.Cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.Kill()
		c.Reap()
		out := c.Output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("data race in child %d:\n%s", c.PID(), out)
		} else if t.Failed() {
			t.Logf("output of child %d:\n%s", c.PID(), out)
		}
	})
	select {
	case c.Ready = <-c.ready:
	case <-c.done:
		t.Fatalf("child exited before it was ready: %v\n%s", c.Cmd.ProcessState, c.Output())
	case <-time.After(30 * time.Second):
		t.Fatalf("child not ready after 30 s:\n%s", c.Output())
	}
	return c
}

// childOutput collects a child's output and watches for its ready line.
type childOutput Child

func (w *childOutput) Write(p []byte) (int, error) {
	c := (*Child)(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.Write(p)
	c.lines.Write(p)
	for {
		line, err := c.lines.ReadString('\n')
		if err != nil { // a partial line: keep it
			rest := []byte(line)
			c.lines.Reset()
			c.lines.Write(rest)
			break
		}
		if strings.HasPrefix(line, readyLine) && !c.sawReady {
			c.sawReady = true
			c.ready <- strings.TrimSpace(strings.TrimPrefix(line, readyLine))
		}
	}
	return len(p), nil
}

// Output returns what the child printed so far, stdout and stderr.
func (c *Child) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// PID returns the child's process id.
func (c *Child) PID() int { return c.Cmd.Process.Pid }

// Kill kills the child with SIGKILL and waits until it is reaped; a held
// child it leaves a zombie, returning once it has died.
func (c *Child) Kill() {
	_ = c.Cmd.Process.Kill()
	if c.hold == nil {
		<-c.done
		return
	}
	for !isZombie(c.PID()) {
		select {
		case <-c.done: // reaped already
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Reap lets a held child be reaped and waits until it is.
func (c *Child) Reap() {
	if c.hold != nil {
		select {
		case <-c.hold:
		default:
			close(c.hold)
		}
	}
	<-c.done
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

// Append appends rec to the audit file at path as one JSON line, with a
// single write.
func Append(path string, rec any) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadAudit returns the records of the audit file at path. A line still
// being written (by a process that is alive) is left out.
func ReadAudit[R any](t testing.TB, path string) []R {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read audit file: %v", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		b = nil
	}
	var out []R
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" {
			continue
		}
		var r R
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}
