//go:build linux

// The flights example's two binaries as real processes sharing one store.
package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"agentflow/examples/flights"
	"agentflow/examples/flights/email"
	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// build builds both binaries into a temporary directory, with the race
// detector when this test has it.
func build(t *testing.T) (agents, emails string) {
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
	args = append(args, "agentflow/examples/flights/cmd/flights-agents", "agentflow/examples/flights/cmd/email-workflows")
	began := time.Now()
	cmd := exec.Command(goBin, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built both binaries in %s", time.Since(began).Round(time.Millisecond))
	return filepath.Join(dir, "flights-agents"), filepath.Join(dir, "email-workflows")
}

// proc is a running binary.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start starts a binary. It is killed when the test ends if it still runs;
// a data race it reported fails the test.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(bin), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
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
		if out := p.output(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("data race in %s:\n%s", p.name, out)
		} else if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, out)
		}
	})
	return p
}

// waitFor waits until the output matches re and returns the match.
func (p *proc) waitFor(re string, d time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for {
		if m := rx.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.cmd.ProcessState, re, p.output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s printed no %q within %s:\n%s", p.name, re, d, p.output())
		}
	}
}

// stop sends SIGTERM and checks that the process stops cleanly.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s did not stop within 15 s of SIGTERM:\n%s", p.name, p.output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(p.output(), p.name+": stopped") {
		p.t.Errorf("%s exited %d after SIGTERM, want 0 after printing that it stopped:\n%s", p.name, code, p.output())
	}
}

// backend is how a test's processes share a store.
type backend struct {
	args []string // the store flags of both binaries
	open func(ctx context.Context) (store.Store, error)
}

func sqliteBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "flights.db")
	return backend{
		args: []string{"--db", path},
		open: func(ctx context.Context) (store.Store, error) { return sqlite.Open(ctx, path, sqlite.Options{}) },
	}
}

func postgresBackend(t *testing.T) backend {
	if os.Getenv(pgtest.EnvVar) == "" && os.Getenv("CI") != "" {
		t.Fatalf("%s is unset, and CI is set: the PostgreSQL tests must run in CI", pgtest.EnvVar)
	}
	dsn, schema := pgtest.Schema(t)
	return backend{
		args: []string{"--postgres", dsn, "--schema", schema},
		open: func(ctx context.Context) (store.Store, error) {
			return postgres.Open(ctx, dsn, postgres.Options{Schema: schema, MaxConns: 4})
		},
	}
}

// agentsArgs are the agent service's flags: a short delay and check-in
// wait, so that the story takes a second or two.
func agentsArgs(b backend) []string {
	return append([]string{"--addr", "127.0.0.1:0", "--delay", "200ms", "--check-in-wait", "100ms"}, b.args...)
}

var addrRE = `flights-agents: serving http://(127\.0\.0\.1:\d+)/agents/my-agent/<name>`

// trigger sends the seed's request with the user-id header and returns
// the task id, after checking that one without the header is refused.
func trigger(t *testing.T, addr, name, user string) string {
	t.Helper()
	post := func(h http.Header) (int, []byte) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/agents/my-agent/"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, body := post(http.Header{}); code != http.StatusBadRequest {
		t.Errorf("request without user-id: %d %s, want 400", code, body)
	}
	code, body := post(http.Header{"User-Id": {user}})
	var answer struct {
		TaskID string `json:"taskId"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &answer) != nil || answer.TaskID == "" {
		t.Fatalf("request: %d %s, want 200 with a taskId", code, body)
	}
	return answer.TaskID
}

// view reads the agent's state and tracked workflows over HTTP.
func view(t *testing.T, addr, name string) flights.StateView {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/agents/my-agent/" + name + "/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v flights.StateView
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET state: %d %s", resp.StatusCode, b)
	}
	return v
}

// waitView polls the agent's view until cond holds.
func waitView(t *testing.T, addr, name, what string, d time.Duration, cond func(flights.StateView) bool) flights.StateView {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := view(t, addr, name)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; the agent shows %+v", what, d, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func find(v flights.StateView, binding string) (flights.TrackedView, bool) {
	for _, w := range v.Workflows {
		if w.Binding == binding {
			return w, true
		}
	}
	return flights.TrackedView{}, false
}

// bothComplete holds when the agent tracks the flight and the email, both
// complete, and recorded the booking.
func bothComplete(v flights.StateView) bool {
	f, ok1 := find(v, flights.FlightBinding)
	e, ok2 := find(v, flights.EmailBinding)
	return ok1 && ok2 && len(v.Workflows) == 2 && f.Status == "complete" && e.Status == "complete" &&
		e.ID == "email-"+f.ID && e.Service == email.Service && v.State.Emails == 1 && v.State.Workflows[f.ID] == "complete"
}

// emailRE matches the email the email-workflows process prints, with the
// flight's id in its idempotency key.
func emailRE(user string) string {
	return `email email-(flight_sch_\w+):send:0 to ` + user + `:\nTo: ` + user + `\nSubject: You are booked on DL264\n\nConfirmation (DL264-2025-02-23-\w+), seat 14C\.`
}

// TestTwoServices runs the flights example as two processes — the agent
// service and the email-workflows service — sharing one SQLite file, and
// again one PostgreSQL schema; and shows an email workflow queued while no
// email-workflows process runs, then run once one starts.
func TestTwoServices(t *testing.T) {
	t.Parallel()
	agentsBin, emailsBin := build(t)

	story := func(t *testing.T, b backend) {
		began := time.Now()
		emails := start(t, emailsBin, b.args...)
		emails.waitFor(`email-workflows: engine \S+ of service "email-workflows"`, 30*time.Second)
		agents := start(t, agentsBin, agentsArgs(b)...)
		addr := agents.waitFor(addrRE, 30*time.Second)[1]

		trigger(t, addr, "trip", "u1")
		m := emails.waitFor(emailRE("u1"), 15*time.Second)
		v := waitView(t, addr, "trip", "flight and email tracked complete", 10*time.Second, bothComplete)
		f, _ := find(v, flights.FlightBinding)
		if m[1] != f.ID {
			t.Errorf("the email is for flight %s, the agent tracks %s", m[1], f.ID)
		}
		if n := strings.Count(emails.output(), "\nTo: u1\n"); n != 1 {
			t.Errorf("%d emails printed, want 1", n)
		}
		agents.waitFor(`MyAgent trip: flight `+f.ID+` complete: confirmation `+m[2]+`, seat 14C`, time.Second)
		agents.waitFor(`MyAgent trip: EMAIL_WORKFLOW workflow email-`+f.ID+` \(service email-workflows\) complete`, time.Second)

		// The instances agree, in the shared store.
		st, err := b.open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for _, id := range []string{f.ID, "email-" + f.ID} {
			in, err := st.GetInstance(t.Context(), id)
			if err != nil || in.Status != store.StatusComplete || in.Origin != (store.AgentKey{Class: flights.AgentClass, Name: "trip"}) {
				t.Errorf("instance %s = %+v, %v; want complete, started by MyAgent trip", id, in, err)
			}
		}
		t.Logf("request to email and tracking: %s", time.Since(began).Round(time.Millisecond))
		agents.stop()
		emails.stop()
	}

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		story(t, sqliteBackend(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		story(t, postgresBackend(t))
	})

	// A binding whose service has no running workers: the email workflow
	// stays queued, for that service, and the agent lists it as waiting,
	// until an email-workflows process starts and runs it.
	t.Run("no email workers yet", func(t *testing.T) {
		t.Parallel()
		b := sqliteBackend(t)
		agents := start(t, agentsBin, agentsArgs(b)...)
		addr := agents.waitFor(addrRE, 30*time.Second)[1]
		trigger(t, addr, "later", "u2")
		v := waitView(t, addr, "later", "a queued email workflow", 10*time.Second, func(v flights.StateView) bool {
			_, ok := find(v, flights.EmailBinding)
			return ok
		})
		e, _ := find(v, flights.EmailBinding)
		if e.Status != "queued" || e.Service != email.Service || !strings.Contains(e.Waiting, `no running workers of service "email-workflows"`) {
			t.Fatalf("email workflow tracked as %+v, want queued and waiting for email-workflows", e)
		}
		st, err := b.open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		queued := func() {
			t.Helper()
			in, err := st.GetInstance(t.Context(), e.ID)
			if err != nil || in.Status != store.StatusQueued || in.Service != email.Service || in.Workflow != email.Workflow || in.Owner != "" {
				t.Fatalf("email instance = %+v, %v; want queued for service %s, unclaimed", in, err, email.Service)
			}
		}
		queued()
		time.Sleep(1500 * time.Millisecond) // more than a poll interval of the agent service's engine
		queued()
		if v := view(t, addr, "later"); v.State.Emails != 1 {
			t.Fatalf("state = %+v, want the email started once", v.State)
		}

		emails := start(t, emailsBin, b.args...)
		m := emails.waitFor(emailRE("u2"), 15*time.Second)
		v = waitView(t, addr, "later", "flight and email tracked complete", 10*time.Second, bothComplete)
		if e, _ := find(v, flights.EmailBinding); e.Waiting != "" || m[1] != strings.TrimPrefix(e.ID, "email-") {
			t.Errorf("email workflow tracked as %+v after the email %s", e, m[0])
		}
		in, err := st.GetInstance(t.Context(), e.ID)
		if err != nil || in.Status != store.StatusComplete {
			t.Errorf("email instance = %+v, %v; want complete", in, err)
		}
		agents.stop()
		emails.stop()
	})
}
