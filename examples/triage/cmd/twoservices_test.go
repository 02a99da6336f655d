//go:build linux

// The triage example's two binaries as real processes sharing one store and
// one cluster: TriageAgent in triage-agents, its workflow in
// triage-workflows.
package cmd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"agentflow/examples/assistant"
	"agentflow/examples/triage"
	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// build builds both binaries into a temporary directory, with the race
// detector when this test has it.
func build(t *testing.T) (agents, workflows string) {
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
	args = append(args, "agentflow/examples/triage/cmd/triage-agents", "agentflow/examples/triage/cmd/triage-workflows")
	began := time.Now()
	if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built both binaries in %s", time.Since(began).Round(time.Millisecond))
	return filepath.Join(dir, "triage-agents"), filepath.Join(dir, "triage-workflows")
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

// environ is this process's environment without the variables the
// binaries read (the model's, the cluster secret), plus env.
func environ(env ...string) []string {
	drop := []string{assistant.EnvProvider, assistant.EnvBaseURL, assistant.EnvAPIKey, assistant.EnvModel, "AGENTFLOW_CLUSTER_SECRET"}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// start starts a binary with env added to the environment. It is killed
// when the test ends if it still runs; a data race it reported fails the
// test.
func start(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(bin), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = environ(env...)
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
	path := filepath.Join(t.TempDir(), "triage.db")
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

func newSecret(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

var addrRE = `triage-agents: serving http://(127\.0\.0\.1:\d+)/agents/triage-agent/<name>`

// client talks to TriageAgent "repo" over HTTP.
type client struct {
	t    *testing.T
	base string
}

func (c client) do(method, rest string) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+rest, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c client) view() triage.StateView {
	c.t.Helper()
	code, b := c.do(http.MethodGet, "/state")
	var v triage.StateView
	if code != http.StatusOK || json.Unmarshal(b, &v) != nil {
		c.t.Fatalf("GET state: %d %s", code, b)
	}
	return v
}

// waitView polls the agent's view until cond holds.
func (c client) waitView(what string, d time.Duration, cond func(triage.StateView) bool) triage.StateView {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := c.view()
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no %s within %s; the agent shows %+v", what, d, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tracked returns the one workflow the agent tracks, if it tracks one.
func tracked(v triage.StateView, id string) (triage.TrackedView, bool) {
	if len(v.Workflows) != 1 || v.Workflows[0].ID != id {
		return triage.TrackedView{}, false
	}
	return v.Workflows[0], true
}

// The draft the scripted model makes of issue 42.
var (
	wantTitle  = triage.LookupIssue(42).Title
	wantLabels = []string{"bug", "crash"}
)

// TestTwoServices runs the triage example as two processes — triage-agents
// with TriageAgent and triage-workflows with its workflow, of another
// service — sharing one SQLite file, and again one PostgreSQL schema. The
// workflow, in its process, prompts the agent in the other through the
// cluster; the turn runs where the agent lives; the answer comes back
// through the outbox; the approval goes from the agent to the workflow,
// which calls the agent to apply the labels — on the node the agent is live
// on by then, since triage-agents restarts in between; the agent hears it
// complete.
func TestTwoServices(t *testing.T) {
	t.Parallel()
	agentsBin, workflowsBin := build(t)

	story := func(t *testing.T, b backend) {
		began := time.Now()
		secret := newSecret(t)
		// The secret reaches one process by its flag, the other by the
		// environment.
		workflows := start(t, workflowsBin, nil, append([]string{"--cluster-secret", secret}, b.args...)...)
		workflows.waitFor(`triage-workflows: engine \S+ of service "triage-workflows"`, 30*time.Second)
		startAgents := func() (*proc, client, string) {
			p := start(t, agentsBin, []string{"AGENTFLOW_CLUSTER_SECRET=" + secret},
				append([]string{"--addr", "127.0.0.1:0"}, b.args...)...)
			addr := p.waitFor(addrRE, 30*time.Second)[1]
			node := p.waitFor(`triage-agents: engine (\S+) on .*; other nodes reach its agents at http://`+regexp.QuoteMeta(addr)+`/agents\n`, time.Second)[1]
			p.waitFor(`TriageAgent uses the scripted triage model`, time.Second)
			return p, client{t: t, base: "http://" + addr + "/agents/triage-agent/repo"}, node
		}
		agents, c, node1 := startAgents()

		// Triage issue 42: the agent starts the workflow of the other service.
		code, body := c.do(http.MethodPost, "/issues/42")
		var started struct {
			WorkflowID string `json:"workflowId"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &started) != nil || started.WorkflowID == "" {
			t.Fatalf("POST issues/42: %d %s, want 200 with a workflowId", code, body)
		}
		id := started.WorkflowID
		idRE := regexp.QuoteMeta(id)

		// The prompt step runs in triage-workflows, the turn in
		// triage-agents; the draft reaches the agent as progress.
		v := c.waitView("a draft for issue 42", 20*time.Second, func(v triage.StateView) bool {
			_, ok := v.State.Drafts[42]
			return ok
		})
		if d := v.State.Drafts[42]; d.Title != wantTitle || !slices.Equal(d.Labels, wantLabels) || !strings.HasPrefix(d.Summary, "(scripted) ") {
			t.Errorf("draft = %+v, want the scripted draft of issue 42 (%q, %v)", d, wantTitle, wantLabels)
		}
		if w, ok := tracked(v, id); !ok || w.Service != triage.WorkflowService || w.Issue != 42 || w.Status != "running" {
			t.Errorf("tracked workflows = %+v, want %s of service %s running for issue 42", v.Workflows, id, triage.WorkflowService)
		}
		for _, s := range []string{"triage-issue:submit", "triage-issue:wait", "agent:progress"} {
			workflows.waitFor(`TriageWorkflow `+idRE+`: step "`+s+`" done`, 5*time.Second)
		}
		sub := agents.waitFor(`TriageAgent repo: turn (sub_\w+) started: "Triage issue #42"`, 5*time.Second)[1]
		agents.waitFor(`TriageAgent repo: draft for issue #42 from TriageWorkflow `+idRE+`: "`+regexp.QuoteMeta(wantTitle)+`" \[labels: bug, crash\]`, 5*time.Second)
		if strings.Contains(workflows.output(), "turn ") {
			t.Errorf("a turn ran in triage-workflows:\n%s", workflows.output())
		}
		if strings.Contains(agents.output(), `step "`) {
			t.Errorf("a workflow step ran in triage-agents:\n%s", agents.output())
		}

		// The agent service restarts while the workflow waits for the
		// approval: the workflow's next call finds the agent on the node
		// it is live on now.
		agents.stop()
		agents, c, node2 := startAgents()
		if node2 == node1 {
			t.Fatalf("the restarted triage-agents is node %s again", node1)
		}

		// An approval for a workflow the agent did not start is refused.
		if code, body := c.do(http.MethodPost, "/workflows/wf_nope/approve"); code != http.StatusNotFound {
			t.Errorf("approve an untracked workflow: %d %s, want 404", code, body)
		}
		// The human approves; the workflow applies the labels through the agent.
		if code, body := c.do(http.MethodPost, "/workflows/"+id+"/approve"); code != http.StatusOK {
			t.Fatalf("approve: %d %s", code, body)
		}
		v = c.waitView("labels applied and the workflow complete", 20*time.Second, func(v triage.StateView) bool {
			w, ok := tracked(v, id)
			return ok && w.Status == "complete" && v.State.Labels[42] != nil
		})
		if !slices.Equal(v.State.Labels[42], wantLabels) || len(v.State.Drafts) != 0 {
			t.Errorf("state = %+v, want labels %v on issue 42 and no draft left", v.State, wantLabels)
		}
		for _, s := range []string{"approval", "apply-labels"} {
			workflows.waitFor(`TriageWorkflow `+idRE+`: step "`+s+`" done`, 5*time.Second)
		}
		workflows.waitFor(`TriageWorkflow `+idRE+`: complete: issue #42, draft "`+regexp.QuoteMeta(wantTitle)+`", labels applied: \[bug crash\] \(told TriageAgent repo\)`, 5*time.Second)
		agents.waitFor(`TriageAgent repo: labels applied to issue #42: bug, crash`, 5*time.Second)
		agents.waitFor(`TriageAgent repo: TriageWorkflow `+idRE+` \(service triage-workflows\) complete: issue #42 labelled bug, crash`, 5*time.Second)

		// The shared store agrees.
		st, err := b.open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		key := store.AgentKey{Class: triage.AgentClass, Name: "repo"}
		in, err := st.GetInstance(t.Context(), id)
		if err != nil || in.Status != store.StatusComplete || in.Service != triage.WorkflowService || in.Origin != key {
			t.Fatalf("instance %s = %+v, %v; want complete, of service %s, started by %s", id, in, err, triage.WorkflowService, key)
		}
		var res triage.Result
		if err := json.Unmarshal(in.Output, &res); err != nil || res.IssueNumber != 42 || res.Draft.Title != wantTitle || !slices.Equal(res.Labels, wantLabels) {
			t.Errorf("output = %s (%v), want issue 42's draft and labels", in.Output, err)
		}
		s, err := st.GetSubmission(t.Context(), key, sub)
		if err != nil || s.Status != store.SubmissionCompleted || s.NotifyInstance != id ||
			s.IdempotencyKey != fmt.Sprintf("think-workflow:%s:%s:%s", triage.WorkflowClass, id, triage.PromptStep) {
			t.Errorf("submission %s = %+v, %v; want the prompt step's, completed, telling %s", sub, s, err, id)
		}
		t.Logf("issue to labels, with both processes' starts: %s", time.Since(began).Round(time.Millisecond))
		agents.stop()
		workflows.stop()
	}

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		story(t, sqliteBackend(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		story(t, postgresBackend(t))
	})
	// Without the cluster secret neither process starts: its workflows
	// could not reach their agents.
	t.Run("no cluster secret", func(t *testing.T) {
		t.Parallel()
		b := sqliteBackend(t)
		for _, bin := range []string{workflowsBin, agentsBin} {
			p := start(t, bin, nil, b.args...)
			<-p.done
			if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.output(), "--cluster-secret (or AGENTFLOW_CLUSTER_SECRET) is required") {
				t.Errorf("%s without a secret exited %d, want 1 saying the secret is required:\n%s", p.name, code, p.output())
			}
		}
	})
}
