//go:build linux

package think_test

// think.Prompt after a real kill -9 (DESIGN §4.3): a child process (this
// test binary run again, see crash_test.go) runs an engine, a runtime, the
// Think agent Helper and the Triage workflow of prompt_test.go on a store
// file or schema; the test starts a workflow through it, waits until the
// store shows the kill point it wants, kills it with SIGKILL and recovers
// in a fresh runtime in this process on the same store. Whatever the kill
// point, the workflow ends with the draft or a typed error, and there is
// one submission and one outbox message, delivered once.

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
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/internal/childproc"
	"agentflow/internal/pgtest"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// Kill points of the prompt child (childConfig.Prompt).
const (
	// killInTurn: the model never answers; the kill comes mid-turn.
	killInTurn = "turn"
	// killInOutbox: the model answers at once but the child never claims
	// the outbox; the kill comes after the submission ended, before its
	// message is delivered.
	killInOutbox = "outbox"
	// killInWait: the child never starts the submission; the kill comes
	// while the workflow waits on "draft:wait" and the submission is
	// pending.
	killInWait = "wait"
	// killAfterDelivery: the model answers once the workflow waits, the
	// submission's end delivers the answer and claims the instance for
	// the child's engine in one write, and the kill comes before the
	// engine executes it.
	killAfterDelivery = "delivered"
)

// promptChildStore is the prompt child's store: it blocks, until the
// process dies, the store call after which the kill point would be passed.
type promptChildStore struct {
	store.Store
	mode string
}

func (s promptChildStore) FinishSubmissionAndDeliver(ctx context.Context, key store.AgentKey, id, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time, d store.Delivery) (bool, *store.Instance, error) {
	switch s.mode {
	case killInOutbox:
		// As for an instance the write cannot reach: the outbox delivers.
		return false, nil, s.Store.FinishSubmission(ctx, key, id, owner, status, errMsg, output, usage, now)
	case killAfterDelivery:
		if _, _, err := s.Store.FinishSubmissionAndDeliver(ctx, key, id, owner, status, errMsg, output, usage, now, d); err != nil {
			return false, nil, err
		}
		select {} // the instance it claimed is never executed here
	}
	return s.Store.FinishSubmissionAndDeliver(ctx, key, id, owner, status, errMsg, output, usage, now, d)
}

func (s promptChildStore) ClaimOutbox(ctx context.Context, owner string, now time.Time, limit int) ([]store.OutboxMessage, error) {
	if s.mode == killInOutbox {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.ClaimOutbox(ctx, owner, now, limit)
}

func (s promptChildStore) StartSubmission(ctx context.Context, key store.AgentKey, owner string, now time.Time) (*store.Submission, error) {
	if s.mode == killInWait {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	sub, err := s.Store.StartSubmission(ctx, key, owner, now)
	if err == nil && sub != nil && s.mode == killAfterDelivery {
		// The end's write claims the instance only once it waits.
		for ctx.Err() == nil {
			if in, err := s.Store.GetInstance(ctx, sub.NotifyInstance); err == nil && in.Status == store.StatusWaiting {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return sub, err
}

type runRequest struct {
	Name string `json:"name"`
}

type runReply struct {
	ID  string `json:"id"`
	Err string `json:"err,omitempty"`
}

func servePromptChild(cfg childConfig) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	st, err := cfg.open(ctx)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: promptChildStore{st, cfg.Prompt}, Logger: log})
	if err != nil {
		return err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: log, IdleTimeout: time.Hour})
	if err != nil {
		return err
	}
	m := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		if cfg.Prompt == killInTurn {
			time.Sleep(time.Hour) // mid-turn until the kill
		}
		return scripted.Call(think.FinalAnswerTool, goodDraft)
	}})
	m.Loop = true
	think.MustRegister[Helper](rt, "Helper", think.Options{Model: m, System: "You help."})
	promptSetup(eng, rt)
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", func(w http.ResponseWriter, r *http.Request) {
		var req runRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := agent.With(r.Context(), rt, req.Name, func(ctx context.Context, h *Helper) (string, error) {
			return h.RunWorkflow(ctx, "TRIAGE_WORKFLOW", promptParams{})
		})
		rep := runReply{ID: id}
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

// run starts the Triage workflow through agent name in the child.
func (c *child) run(name string) string {
	c.t.Helper()
	b, _ := json.Marshal(runRequest{Name: name})
	resp, err := http.Post("http://"+c.addr+"/run", "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatalf("child: run workflow on %s: %v", name, err)
	}
	defer resp.Body.Close()
	var rep runReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || rep.Err != "" || rep.ID == "" {
		c.t.Fatalf("child: run workflow on %s: %+v, %v", name, rep, err)
	}
	return rep.ID
}

func TestPromptRecoveryAfterKill(t *testing.T) {
	for _, mode := range []string{killInTurn, killInOutbox, killInWait, killAfterDelivery} {
		t.Run("SQLite/"+mode, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "think.db")
			st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			testPromptKill(t, st, childConfig{Backend: "sqlite", SQLitePath: path, Prompt: mode})
		})
		t.Run("Postgres/"+mode, func(t *testing.T) {
			t.Parallel()
			dsn, schema := pgtest.Schema(t)
			st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			testPromptKill(t, st, childConfig{Backend: "postgres", DSN: dsn, Schema: schema, Prompt: mode})
		})
	}
}

func testPromptKill(t *testing.T, st store.Store, cfg childConfig) {
	ctx := t.Context()
	mode := cfg.Prompt
	key := store.AgentKey{Class: "Helper", Name: "p-" + mode}
	subs := func() []store.Submission {
		t.Helper()
		ss, err := st.ListSubmissions(ctx, key, store.SubmissionFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	outbox := func(id string) []store.OutboxMessage {
		t.Helper()
		ms, err := st.GetOutbox(ctx, key, id)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}

	ch := startChild(t, cfg)
	id := ch.run(key.Name)
	// The kill point: the workflow waits for the event, and the
	// submission is where the mode stops it.
	atKillPoint := func() bool {
		in, err := st.GetInstance(ctx, id)
		if err != nil {
			return false
		}
		ss := subs()
		if len(ss) != 1 {
			return false
		}
		s := ss[0]
		if mode == killAfterDelivery {
			ms := outbox(s.ID)
			return in.Status == store.StatusRunning && in.Owner != "" && s.Status == store.SubmissionCompleted &&
				len(ms) == 1 && !ms[0].DeliveredAt.IsZero()
		}
		if in.Status != store.StatusWaiting || in.WaitingEvent == "" {
			return false
		}
		switch mode {
		case killInTurn:
			return s.Status == store.SubmissionRunning && s.Applied
		case killInOutbox:
			ms := outbox(s.ID)
			return s.Status == store.SubmissionCompleted && len(ms) == 1 && ms[0].DeliveredAt.IsZero()
		case killInWait:
			return s.Status == store.SubmissionPending
		}
		return false
	}
	eventually(t, 10*time.Second, "the child to reach the kill point "+mode, atKillPoint)
	time.Sleep(50 * time.Millisecond) // give the child a moment to go anywhere else
	if !atKillPoint() {
		t.Fatalf("the child moved past the kill point %s", mode)
	}
	ch.Kill()
	killed := time.Now()
	if !atKillPoint() {
		t.Fatalf("the state changed after the kill")
	}
	sub := subs()[0]

	// A fresh runtime on the same store with a model that answers at once.
	// Nobody calls anything: the engine and the runtime find the work left.
	m := scripted.New(scripted.Call(think.FinalAnswerTool, goodDraft))
	e := newEnvWith(t, envOptions{model: m, store: st, setup: promptSetup})
	var in *store.Instance
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		in, err = e.st.GetInstance(ctx, id)
		if err == nil && in.Status.Finished() {
			break
		}
		if time.Now().After(deadline) {
			s := subs()[0]
			t.Fatalf("%s: the workflow did not finish within 10 s of the kill: instance %+v (%v); submission %s %q owner %q; outbox %+v",
				mode, in, err, s.Status, s.Error, s.Owner, outbox(s.ID))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%s: the workflow finished %s after the kill", mode, time.Since(killed).Round(time.Millisecond))
	var r promptResult
	if in.Status != store.StatusComplete || json.Unmarshal(in.Output, &r) != nil {
		t.Fatalf("workflow %s: %s %s %s", id, in.Status, in.ErrorName, in.ErrorMessage)
	}
	gotDraft := r.Draft != nil && r.Draft.Title == "Crash on save" && len(r.Draft.Labels) == 2
	switch mode {
	case killInTurn:
		// Cut off mid-turn: the submission ends as error and is never
		// run again; the workflow gets the typed error.
		if r.Kind != "ended:error" || r.Draft != nil {
			t.Errorf("result %+v, want a *think.EndedError with status error", r)
		}
		if s := subs()[0]; s.Status != store.SubmissionError || s.Error != midTurnError {
			t.Errorf("submission after recovery: %s %q, want error %q", s.Status, s.Error, midTurnError)
		}
		if n := len(m.Requests()); n != 0 {
			t.Errorf("the recovering model got %d requests, want 0", n)
		}
	case killInOutbox:
		if !gotDraft || r.Kind != "" {
			t.Errorf("result %+v, want the draft", r)
		}
		if n := len(m.Requests()); n != 0 {
			t.Errorf("the recovering model got %d requests, want 0: the turn had ended", n)
		}
	case killAfterDelivery:
		// The answer was delivered with the claim: the engine that takes
		// the instance over gets it from the instance's events.
		if !gotDraft || r.Kind != "" {
			t.Errorf("result %+v, want the draft", r)
		}
		if n := len(m.Requests()); n != 0 {
			t.Errorf("the recovering model got %d requests, want 0: the turn had ended", n)
		}
	case killInWait:
		if !gotDraft || r.Kind != "" {
			t.Errorf("result %+v, want the draft", r)
		}
		if n := len(m.Requests()); n != 1 {
			t.Errorf("the recovering model got %d requests, want 1", n)
		}
	}

	// One submission; one outbox message, delivered with its payload
	// cleared; one event of its type, consumed.
	ss := subs()
	if len(ss) != 1 || ss[0].ID != sub.ID || !ss[0].Status.Finished() {
		t.Fatalf("submissions after recovery: %+v, want the one %s, finished", ss, sub.ID)
	}
	eventually(t, 5*time.Second, "the outbox message to be marked delivered", func() bool {
		ms := outbox(sub.ID)
		return len(ms) == 1 && !ms[0].DeliveredAt.IsZero()
	})
	msg := outbox(sub.ID)[0]
	if len(msg.Payload) != 0 || msg.InstanceID != id || msg.Owner != "" {
		t.Errorf("outbox message after delivery: payload %q, instance %s, owner %q", msg.Payload, msg.InstanceID, msg.Owner)
	}
	evs, err := st.ListEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Type == msg.EventType {
			n++
			if !ev.Consumed {
				t.Errorf("event %d of type %s not consumed", ev.Seq, ev.Type)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d events of type %s on the instance, want 1: %+v", n, msg.EventType, evs)
	}
}
