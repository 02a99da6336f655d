package think_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"agentflow/internal/pgtest"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/think"
)

// backends are the stores the tests that reach into the store run on;
// PostgreSQL only when AGENTFLOW_TEST_POSTGRES is set.
var backends = []string{"SQLite", "Postgres"}

// openStore opens a fresh store of the backend for the test.
func openStore(t *testing.T, backend string) store.Store {
	t.Helper()
	var (
		st  store.Store
		err error
	)
	switch backend {
	case "SQLite":
		st, err = sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "think.db"), sqlite.Options{})
	case "Postgres":
		dsn, schema := pgtest.Schema(t)
		st, err = postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// submitCrash is a store that counts the submissions asked for under each
// idempotency key and makes the crashAt-th checkpoint of a "draft:submit"
// step fail as a lost lease: the engine abandons the execution after the
// step's function made its submission and before the step was recorded,
// as a kill at that point would leave it.
type submitCrash struct {
	store.Store
	crashAt int

	mu          sync.Mutex
	creates     map[string]int
	checkpoints int
}

func (s *submitCrash) CreateSubmission(ctx context.Context, sub *store.Submission) (*store.Submission, bool, error) {
	s.mu.Lock()
	s.creates[sub.IdempotencyKey]++
	s.mu.Unlock()
	return s.Store.CreateSubmission(ctx, sub)
}

func (s *submitCrash) SaveStep(ctx context.Context, l store.Lease, st store.Step, now time.Time) (store.Status, error) {
	if st.Name == "draft:submit" {
		s.mu.Lock()
		s.checkpoints++
		n := s.checkpoints
		s.mu.Unlock()
		if n == s.crashAt {
			return "", fmt.Errorf("test: the node died before checkpointing %s: %w", st.Name, store.ErrLeaseLost)
		}
	}
	return s.Store.SaveStep(ctx, l, st, now)
}

func (s *submitCrash) submitCheckpoints() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkpoints
}

func (s *submitCrash) createsOf(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates[key]
}

// TestPromptAfterRestart: a restarted workflow's prompt runs a turn of its
// own and gets its answer at once, rather than finding the first run's
// finished submission and waiting out its timeout; and a crash in the
// restarted run between the submission and its checkpoint still submits
// once.
func TestPromptAfterRestart(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		for _, crash := range []bool{false, true} {
			name := backend
			if crash {
				name += "/CrashBeforeSubmitCheckpoint"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testPromptAfterRestart(t, openStore(t, backend), crash)
			})
		}
	}
}

func testPromptAfterRestart(t *testing.T, base store.Store, crash bool) {
	ctx := t.Context()
	st := &submitCrash{Store: base, creates: map[string]int{}}
	if crash {
		st.crashAt = 2 // the restarted run's
	}
	const (
		first  = `{"title":"First run","summary":"s","labels":["bug"]}`
		second = `{"title":"Second run","summary":"s","labels":["bug"]}`
	)
	m := scripted.New(scripted.Call(think.FinalAnswerTool, first), scripted.Call(think.FinalAnswerTool, second))
	e := newEnvWith(t, envOptions{model: m, store: st, setup: promptSetup})
	key := store.AgentKey{Class: "Helper", Name: "restarted"}

	id := with(t, e, key.Name, func(ctx context.Context, h *Helper) (string, error) {
		return h.RunWorkflow(ctx, "TRIAGE_WORKFLOW", promptParams{})
	})
	if r := promptOutcome(t, e.st, id); r.Draft == nil || r.Draft.Title != "First run" {
		t.Fatalf("first run: result %+v, want the first draft", r)
	}
	with(t, e, key.Name, func(ctx context.Context, h *Helper) (struct{}, error) {
		return struct{}{}, h.RestartWorkflow(ctx, id)
	})

	subs := func() []store.Submission {
		t.Helper()
		ss, err := base.ListSubmissions(ctx, key, store.SubmissionFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	outbox := func(sub string) []store.OutboxMessage {
		t.Helper()
		ms, err := base.GetOutbox(ctx, key, sub)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	recovering := m
	if crash {
		// The restarted run's submission is made and its turn ends, but
		// its step is never recorded; stop this node and let a new one
		// replay the run from its checkpoints.
		eventually(t, 10*time.Second, "the restarted run's turn to end and be delivered", func() bool {
			ss := subs()
			if len(ss) != 2 || ss[1].Status != store.SubmissionCompleted {
				return false
			}
			ms := outbox(ss[1].ID)
			return len(ms) == 1 && !ms[0].DeliveredAt.IsZero()
		})
		if n := st.submitCheckpoints(); n != 2 {
			t.Fatalf("%d checkpoints of draft:submit tried, want 2 (the second one failed)", n)
		}
		e.stop()
		recovering = scripted.New()
		e = newEnvWith(t, envOptions{model: recovering, store: st, setup: promptSetup})
	}
	r := promptOutcome(t, e.st, id)
	if r.Draft == nil || r.Draft.Title != "Second run" {
		t.Fatalf("restarted run: result %+v, want the second draft", r)
	}
	if crash && len(recovering.Requests()) != 0 {
		t.Errorf("the recovering node's model got %d requests, want 0: the turn had ended", len(recovering.Requests()))
	}

	ss := subs()
	if len(ss) != 2 {
		t.Fatalf("%d submissions, want one per run: %+v", len(ss), ss)
	}
	one, two := ss[0], ss[1]
	if one.IdempotencyKey == two.IdempotencyKey || one.NotifyEvent == two.NotifyEvent {
		t.Errorf("the runs share a key or an event type: %q %q, %q %q", one.IdempotencyKey, one.NotifyEvent, two.IdempotencyKey, two.NotifyEvent)
	}
	wantCreates := 1
	if crash {
		wantCreates = 2 // the step ran again on replay, under the same key
	}
	if n := st.createsOf(one.IdempotencyKey); n != 1 {
		t.Errorf("the first run asked for its submission %d times, want 1", n)
	}
	if n := st.createsOf(two.IdempotencyKey); n != wantCreates {
		t.Errorf("the restarted run asked for its submission %d times, want %d", n, wantCreates)
	}
	for _, s := range ss {
		if s.Status != store.SubmissionCompleted {
			t.Errorf("submission %s is %s, want completed", s.ID, s.Status)
		}
		if ms := outbox(s.ID); len(ms) != 1 || ms[0].DeliveredAt.IsZero() {
			t.Errorf("outbox of submission %s: %+v, want one message, delivered", s.ID, ms)
		}
	}
}
