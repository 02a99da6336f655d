//go:build linux

package think_test

// Recovery of submissions after a real kill -9 (DESIGN §4.2): a child process
// (this test binary run again, internal/childproc) runs Think agents on a store file or schema;
// the test submits through it, waits until the ledger shows the kill point
// it wants, kills it with SIGKILL and recovers in a fresh runtime in this
// process on the same store.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/childproc"
	"agentflow/internal/pgtest"
	"agentflow/internal/teststore"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// envChild makes the test binary a child; it holds the childConfig as JSON.
const envChild = "AGENTFLOW_THINK_TEST_CHILD"

// midTurnError is the error a submission cut off mid-turn ends with
// (think's errMidTurn).
const midTurnError = "the turn was cut off by a crash after its messages entered the conversation"

// Markers the child's scripted model and store react to.
const (
	slowText    = "slow"  // the model never answers a turn ending with it
	stuckPrefix = "stuck" // ApplySubmission of such a submission id never returns
)

func TestMain(m *testing.M) { childproc.Main(m, envChild, serveChild) }

type childConfig struct {
	Backend    string // "sqlite" or "postgres"
	SQLitePath string
	DSN        string
	Schema     string
	// Prompt, when set, makes the child serve think.Prompt workflows
	// instead (see prompt_crash_test.go): the kill point to stop at.
	Prompt string
}

func (c childConfig) open(ctx context.Context) (store.Store, error) {
	return teststore.Open(ctx, c.Backend, c.SQLitePath, c.DSN, c.Schema)
}

// stuckApply is the child's store: ApplySubmission of a submission whose
// id starts with stuckPrefix blocks until the process dies, which leaves
// the submission running but not applied — the kill point between
// StartSubmission and ApplySubmission that the runner offers no hook for.
type stuckApply struct{ store.Store }

func (s stuckApply) ApplySubmission(ctx context.Context, key store.AgentKey, id, owner string, now time.Time) error {
	if strings.HasPrefix(id, stuckPrefix) {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.ApplySubmission(ctx, key, id, owner, now)
}

// lastContent is the content of a request's last message.
func lastContent(req model.Request) string {
	if len(req.Messages) == 0 {
		return ""
	}
	return req.Messages[len(req.Messages)-1].Content
}

// echoModel answers every turn at once with "re: <last message>".
func echoModel() *scripted.Model {
	m := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		return scripted.Say("re: " + lastContent(req))
	}})
	m.Loop = true
	return m
}

type submitRequest struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	Text string `json:"text"`
}

type submitReply struct {
	Accepted bool   `json:"accepted"`
	Err      string `json:"err,omitempty"`
}

func serveChild(raw string) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", envChild, err)
	}
	if cfg.Prompt != "" {
		return servePromptChild(cfg)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	st, err := cfg.open(ctx)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: stuckApply{st}, Logger: log})
	if err != nil {
		return err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: log, IdleTimeout: time.Hour})
	if err != nil {
		return err
	}
	m := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		last := lastContent(req)
		if last == slowText {
			time.Sleep(time.Hour) // mid-turn until the kill
		}
		return scripted.Say("re: " + last)
	}})
	m.Loop = true
	think.MustRegister[Helper](rt, "Helper", think.Options{Model: m, System: "You help."})
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		var req submitRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := agent.With(r.Context(), rt, req.Name, func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
			return h.SubmitMessages(ctx, user(req.Text), think.SubmitOptions{SubmissionID: req.ID})
		})
		rep := submitReply{Accepted: res.Accepted}
		if err != nil {
			rep.Err = err.Error()
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	childproc.Ready(eng.NodeID(), ln.Addr())
	return http.Serve(ln, mux) // until killed
}

// child is a running child process, seen from the test.
type child struct {
	*childproc.Child
	t    *testing.T
	node string
	addr string
}

func startChild(t *testing.T, cfg childConfig) *child {
	t.Helper()
	c := &child{Child: childproc.Start(t, envChild, cfg, childproc.Options{}), t: t}
	if _, err := fmt.Sscan(c.Ready, &c.node, &c.addr); err != nil {
		t.Fatalf("child's ready line %q: %v", c.Ready, err)
	}
	return c
}

func (c *child) submit(name, id, text string) {
	c.t.Helper()
	b, _ := json.Marshal(submitRequest{Name: name, ID: id, Text: text})
	resp, err := http.Post("http://"+c.addr+"/submit", "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatalf("child: submit %s: %v", id, err)
	}
	defer resp.Body.Close()
	var rep submitReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || rep.Err != "" || !rep.Accepted {
		c.t.Fatalf("child: submit %s: %+v, %v", id, rep, err)
	}
}

// TestSubmissionRecoveryAfterKill kills a process in the middle of its
// Think agents' turns and recovers them in a fresh runtime on the same
// store:
//
//   - agent "mid": A completed before the kill, B was cut off mid-turn
//     (applied, the model call in flight), C was pending behind it. After
//     recovery A is still completed, B ends as error with the mid-turn
//     message and is never run again, C runs and completes.
//   - agent "pre": D was started but killed before its messages reached
//     the conversation (ApplySubmission blocked in the child's store), E
//     pending behind it. After recovery D is pending again and runs once,
//     then E.
//
// The conversations hold each submitted message exactly once, in order.
func TestSubmissionRecoveryAfterKill(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "think.db")
		st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testSubmissionRecovery(t, st, childConfig{Backend: "sqlite", SQLitePath: path})
	})
	t.Run("Postgres", func(t *testing.T) {
		dsn, schema := pgtest.Schema(t)
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testSubmissionRecovery(t, st, childConfig{Backend: "postgres", DSN: dsn, Schema: schema})
	})
}

func testSubmissionRecovery(t *testing.T, st store.Store, cfg childConfig) {
	ctx := t.Context()
	mid := store.AgentKey{Class: "Helper", Name: "mid"}
	pre := store.AgentKey{Class: "Helper", Name: "pre"}
	get := func(k store.AgentKey, id string) *store.Submission {
		t.Helper()
		s, err := st.GetSubmission(ctx, k, id)
		if err != nil {
			t.Fatalf("GetSubmission(%s, %s): %v", k, id, err)
		}
		return s
	}

	ch := startChild(t, cfg)
	ch.submit(mid.Name, "a", "first")
	eventually(t, 10*time.Second, "A to complete in the child", func() bool {
		return get(mid, "a").Status == store.SubmissionCompleted
	})
	ch.submit(mid.Name, "b", slowText)
	ch.submit(mid.Name, "c", "third")
	ch.submit(pre.Name, stuckPrefix+"-d", "fourth")
	ch.submit(pre.Name, "e", "fifth")
	eventually(t, 10*time.Second, "B to be running and applied, D running", func() bool {
		b, d := get(mid, "b"), get(pre, stuckPrefix+"-d")
		return b.Status == store.SubmissionRunning && b.Applied && d.Status == store.SubmissionRunning
	})
	// B's model call sleeps for an hour and D's apply never returns: give
	// either a moment to go anywhere else, then check nothing moved.
	time.Sleep(100 * time.Millisecond)

	ch.Kill()
	killed := time.Now()
	for _, w := range []struct {
		key     store.AgentKey
		id      string
		status  store.SubmissionStatus
		applied bool
		owner   string
	}{
		{mid, "a", store.SubmissionCompleted, true, ""},
		{mid, "b", store.SubmissionRunning, true, ch.node},
		{mid, "c", store.SubmissionPending, false, ""},
		{pre, stuckPrefix + "-d", store.SubmissionRunning, false, ch.node},
		{pre, "e", store.SubmissionPending, false, ""},
	} {
		s := get(w.key, w.id)
		if s.Status != w.status || s.Applied != w.applied || s.Owner != w.owner {
			t.Fatalf("%s/%s right after the kill: %s applied=%v owner %q; want %s applied=%v owner %q",
				w.key.Name, w.id, s.Status, s.Applied, s.Owner, w.status, w.applied, w.owner)
		}
	}

	// A fresh runtime on the same store with a model that answers at once.
	// Nobody calls the agents: the runtime's finder (pending submissions,
	// running ones of a dead node) activates them, and OnActivate recovers.
	m := echoModel()
	newEnv(t, m, st)
	eventually(t, 10*time.Second, "C and E to complete", func() bool {
		return get(mid, "c").Status == store.SubmissionCompleted && get(pre, "e").Status == store.SubmissionCompleted
	})
	if d := time.Since(killed); d > 5*time.Second {
		t.Errorf("recovery took %s after the kill, want a few seconds", d)
	}

	if a := get(mid, "a"); a.Status != store.SubmissionCompleted || string(a.Output) != `{"finish":"answered","text":"re: first"}` {
		t.Errorf("A after recovery: %s %s", a.Status, a.Output)
	}
	if b := get(mid, "b"); b.Status != store.SubmissionError || b.Error != midTurnError || b.Owner != "" {
		t.Errorf("B after recovery: %s %q owner %q; want error %q", b.Status, b.Error, b.Owner, midTurnError)
	}
	if d := get(pre, stuckPrefix+"-d"); d.Status != store.SubmissionCompleted || string(d.Output) != `{"finish":"answered","text":"re: fourth"}` {
		t.Errorf("D after recovery: %s %q %s; want completed", d.Status, d.Error, d.Output)
	}
	conversation := func(k store.AgentKey) string {
		t.Helper()
		rows, err := st.ListConversation(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, r := range rows {
			var msg model.Message
			if err := json.Unmarshal(r.Message, &msg); err != nil {
				t.Fatal(err)
			}
			parts = append(parts, fmt.Sprintf("%s:%s", r.SubmissionID, msg.Content))
		}
		return strings.Join(parts, "|")
	}
	// B's user message is there once, with no answer: it was never re-run.
	if got, want := conversation(mid), "a:first|a:re: first|b:slow|c:third|c:re: third"; got != want {
		t.Errorf("conversation of mid = %q, want %q", got, want)
	}
	if got, want := conversation(pre), "stuck-d:fourth|stuck-d:re: fourth|e:fifth|e:re: fifth"; got != want {
		t.Errorf("conversation of pre = %q, want %q", got, want)
	}
	// The fresh model saw each recovered turn once: D and E on pre, C on
	// mid (with B's unanswered message in its history); never B itself.
	var lasts []string
	for _, req := range m.Requests() {
		lasts = append(lasts, lastContent(req))
	}
	if n := len(lasts); n != 3 || strings.Count(strings.Join(lasts, "|"), slowText) != 0 {
		t.Errorf("the recovering runtime's model got %d requests ending %q; want 3 (D, E, C), none ending with B's", n, lasts)
	}
	// Nothing is left running or pending.
	for _, k := range []store.AgentKey{mid, pre} {
		left, err := st.ListSubmissions(ctx, k, store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
		if err != nil || len(left) != 0 {
			t.Errorf("%s has %d unfinished submissions after recovery (%v)", k.Name, len(left), err)
		}
	}
}
