//go:build linux

// Package proctest is for tests only: it runs the examples' binaries
// (under examples/*/cmd) as real processes — building them, starting and
// stopping them, waiting for lines of their output — and gives them a
// store to share.
package proctest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// Build builds the packages' binaries into a temporary directory, with the
// race detector when the test has it, and returns their paths in the
// packages' order. Without a go command the test is skipped.
func Build(t *testing.T, pkgs ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the binaries with: %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, pkgs...)
	began := time.Now()
	if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	bins := make([]string, len(pkgs))
	for i, pkg := range pkgs {
		bins[i] = filepath.Join(dir, path.Base(pkg))
	}
	t.Logf("built %d binaries in %s", len(bins), time.Since(began).Round(time.Millisecond))
	return bins
}

// Proc is a running binary.
type Proc struct {
	Name string // the binary's base name
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

// Write collects the process's output.
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the process has printed so far, stdout and stderr
// interleaved.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Start starts a binary with args; env, when not nil, is its whole
// environment, else it has this process's. It is killed when the test
// ends if it still runs (and, by the kernel, if the test process dies); a
// data race it reported fails the test.
func Start(t *testing.T, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, Name: filepath.Base(bin), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if out := p.Output(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("data race in %s:\n%s", p.Name, out)
		} else if t.Failed() {
			t.Logf("output of %s:\n%s", p.Name, out)
		}
	})
	return p
}

// WaitFor waits until the output matches re and returns the match. It
// fails the test if the process exits first or d passes.
func (p *Proc) WaitFor(re string, d time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for {
		if m := rx.FindStringSubmatch(p.Output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.Name, p.cmd.ProcessState, re, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s printed no %q within %s:\n%s", p.Name, re, d, p.Output())
		}
	}
}

// Wait waits until the process exits and returns its exit code.
func (p *Proc) Wait() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM and checks that the process stops cleanly: within
// 15 s, with status 0, after printing "<name>: stopped".
func (p *Proc) Stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s did not stop within 15 s of SIGTERM:\n%s", p.Name, p.Output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(p.Output(), p.Name+": stopped") {
		p.t.Errorf("%s exited %d after SIGTERM, want 0 after printing that it stopped:\n%s", p.Name, code, p.Output())
	}
}

// Backend is how a test's processes share a store.
type Backend struct {
	Args []string // the binaries' store flags
	// Open opens the store for the test itself.
	Open func(ctx context.Context) (store.Store, error)
}

// SQLite is a SQLite file named file in a temporary directory (--db).
func SQLite(t *testing.T, file string) Backend {
	path := filepath.Join(t.TempDir(), file)
	return Backend{
		Args: []string{"--db", path},
		Open: func(ctx context.Context) (store.Store, error) { return sqlite.Open(ctx, path, sqlite.Options{}) },
	}
}

// Postgres is a fresh schema on the test server (--postgres and
// --schema). Without a server the test is skipped, unless CI is set: then
// it fails.
func Postgres(t *testing.T) Backend {
	if os.Getenv(pgtest.EnvVar) == "" && os.Getenv("CI") != "" {
		t.Fatalf("%s is unset, and CI is set: the PostgreSQL tests must run in CI", pgtest.EnvVar)
	}
	dsn, schema := pgtest.Schema(t)
	return Backend{
		Args: []string{"--postgres", dsn, "--schema", schema},
		Open: func(ctx context.Context) (store.Store, error) {
			return postgres.Open(ctx, dsn, postgres.Options{Schema: schema, MaxConns: 4})
		},
	}
}
