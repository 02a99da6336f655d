//go:build linux

// The triage example's two binaries as real processes sharing one store and
// one cluster: TriageAgent in triage-agents, its workflow in
// triage-workflows.
package cmd_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/examples/assistant"
	"agentflow/examples/internal/proctest"
	"agentflow/examples/triage"
	"agentflow/store"
)

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
	bins := proctest.Build(t, "agentflow/examples/triage/cmd/triage-agents", "agentflow/examples/triage/cmd/triage-workflows")
	agentsBin, workflowsBin := bins[0], bins[1]

	story := func(t *testing.T, b proctest.Backend) {
		began := time.Now()
		secret := newSecret(t)
		// The secret reaches one process by its flag, the other by the
		// environment.
		workflows := proctest.Start(t, workflowsBin, environ(), append([]string{"--cluster-secret", secret}, b.Args...)...)
		workflows.WaitFor(`triage-workflows: engine \S+ of service "triage-workflows"`, 30*time.Second)
		startAgents := func() (*proctest.Proc, client, string) {
			p := proctest.Start(t, agentsBin, environ("AGENTFLOW_CLUSTER_SECRET="+secret),
				append([]string{"--addr", "127.0.0.1:0"}, b.Args...)...)
			addr := p.WaitFor(addrRE, 30*time.Second)[1]
			node := p.WaitFor(`triage-agents: engine (\S+) on .*; other nodes reach its agents at http://`+regexp.QuoteMeta(addr)+`/agents\n`, time.Second)[1]
			p.WaitFor(`TriageAgent uses the scripted triage model`, time.Second)
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
			workflows.WaitFor(`TriageWorkflow `+idRE+`: step "`+s+`" done`, 5*time.Second)
		}
		sub := agents.WaitFor(`TriageAgent repo: turn (sub_\w+) started: "Triage issue #42"`, 5*time.Second)[1]
		agents.WaitFor(`TriageAgent repo: draft for issue #42 from TriageWorkflow `+idRE+`: "`+regexp.QuoteMeta(wantTitle)+`" \[labels: bug, crash\]`, 5*time.Second)
		if strings.Contains(workflows.Output(), "turn ") {
			t.Errorf("a turn ran in triage-workflows:\n%s", workflows.Output())
		}
		if strings.Contains(agents.Output(), `step "`) {
			t.Errorf("a workflow step ran in triage-agents:\n%s", agents.Output())
		}

		// The agent service restarts while the workflow waits for the
		// approval: the workflow's next call finds the agent on the node
		// it is live on now.
		agents.Stop()
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
			workflows.WaitFor(`TriageWorkflow `+idRE+`: step "`+s+`" done`, 5*time.Second)
		}
		workflows.WaitFor(`TriageWorkflow `+idRE+`: complete: issue #42, draft "`+regexp.QuoteMeta(wantTitle)+`", labels applied: \[bug crash\] \(told TriageAgent repo\)`, 5*time.Second)
		agents.WaitFor(`TriageAgent repo: labels applied to issue #42: bug, crash`, 5*time.Second)
		agents.WaitFor(`TriageAgent repo: TriageWorkflow `+idRE+` \(service triage-workflows\) complete: issue #42 labelled bug, crash`, 5*time.Second)

		// The shared store agrees.
		st, err := b.Open(t.Context())
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
		agents.Stop()
		workflows.Stop()
	}

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		story(t, proctest.SQLite(t, "triage.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		story(t, proctest.Postgres(t))
	})
	// Without the cluster secret neither process starts: its workflows
	// could not reach their agents.
	t.Run("no cluster secret", func(t *testing.T) {
		t.Parallel()
		b := proctest.SQLite(t, "triage.db")
		for _, bin := range []string{workflowsBin, agentsBin} {
			p := proctest.Start(t, bin, environ(), b.Args...)
			if code := p.Wait(); code != 1 || !strings.Contains(p.Output(), "--cluster-secret (or AGENTFLOW_CLUSTER_SECRET) is required") {
				t.Errorf("%s without a secret exited %d, want 1 saying the secret is required:\n%s", p.Name, code, p.Output())
			}
		}
	})
}
