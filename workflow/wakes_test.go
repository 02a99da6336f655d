package workflow_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"agentflow/internal/engineseam"
	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// wakeBackends are the stores that signal wakes across processes.
var wakeBackends = []string{"sqlite", "postgres"}

// openHandles opens n handles on one fresh store of the backend, as n
// processes would have them; wakes, when false, disables the first one's.
func openHandles(t *testing.T, backend string, n int, wakes bool) []store.Store {
	t.Helper()
	var open func(i int) (store.Store, error)
	switch backend {
	case "sqlite":
		path := filepath.Join(t.TempDir(), "wakes.db")
		open = func(i int) (store.Store, error) {
			return sqlite.Open(t.Context(), path, sqlite.Options{DisableWakes: i == 0 && !wakes})
		}
	case "postgres":
		dsn, schema := pgtest.Schema(t)
		open = func(i int) (store.Store, error) {
			return postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 4, DisableWakes: i == 0 && !wakes})
		}
	}
	var sts []store.Store
	for i := range n {
		st, err := open(i)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		sts = append(sts, st)
	}
	return sts
}

// startEngine starts an engine of service on st, polling every poll, with
// register's classes; it is stopped when the test ends.
func startWakeEngine(t *testing.T, st store.Store, service string, poll time.Duration, register func(*workflow.Engine)) *workflow.Engine {
	t.Helper()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Service: service, PollInterval: poll,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if register != nil {
		register(eng)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eng.Stop(ctx)
	})
	return eng
}

// startedLog is a class of service b that notes when each instance starts.
type startedLog chan string

func (s startedLog) register(eng *workflow.Engine) {
	workflow.MustRegister(eng, "job", workflow.Func[struct{}, struct{}](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (struct{}, error) {
		s <- ev.InstanceID
		return struct{}{}, nil
	}))
}

// queueFor creates, through engine a, an instance of class job of service
// svc, as an agent's RunWorkflow does, and returns its id.
func queueFor(t *testing.T, a *workflow.Engine, svc string) string {
	t.Helper()
	seam := a.Seam(engineseam.Key{})
	row, err := seam.Prepare("job", svc, "", nil, store.AgentKey{})
	if err != nil {
		t.Fatal(err)
	}
	if err := seam.Store().CreateInstances(t.Context(), []*store.Instance{row}); err != nil {
		t.Fatal(err)
	}
	return row.ID
}

// waitStarted waits for instance id to start and returns how long it took
// from since.
func waitStarted(t *testing.T, started startedLog, id string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case got := <-started:
			if got == id {
				return time.Since(since)
			}
		case <-deadline:
			t.Fatalf("instance %s did not start within %s", id, within)
		}
	}
}

// wakeWithin bounds a start that only a wake can bring about while the
// engines poll every minute. It is typically milliseconds (logged); the
// bound leaves room for a loaded machine.
const wakeWithin = 15 * time.Second

// TestWakesCrossService: an instance that an engine of service a (one
// process) queues for service b starts on b's engine (another process,
// another store handle) within milliseconds, although both poll only
// every minute: the store's wake tells b's engine.
func TestWakesCrossService(t *testing.T) {
	t.Parallel()
	for _, backend := range wakeBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			sts := openHandles(t, backend, 2, true)
			started := make(startedLog, 16)
			a := startWakeEngine(t, sts[0], "a", time.Minute, nil)
			startWakeEngine(t, sts[1], "b", time.Minute, started.register)
			var lat []time.Duration
			for range 5 {
				began := time.Now()
				id := queueFor(t, a, "b")
				lat = append(lat, waitStarted(t, started, id, began, wakeWithin))
			}
			slices.Sort(lat)
			t.Logf("queued by a → started on b: %v", lat)
		})
	}
}

// TestWakesLostStillPolled: when the writer signals nothing (its wakes are
// off, as when a notification is lost), the other engine's poll still
// finds the work.
func TestWakesLostStillPolled(t *testing.T) {
	t.Parallel()
	for _, backend := range wakeBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			sts := openHandles(t, backend, 2, false)
			started := make(startedLog, 16)
			a := startWakeEngine(t, sts[0], "a", time.Minute, nil)
			startWakeEngine(t, sts[1], "b", 300*time.Millisecond, started.register)
			began := time.Now()
			id := queueFor(t, a, "b")
			d := waitStarted(t, started, id, began, 30*time.Second)
			t.Logf("queued without a wake → started by b's poll after %s", d)
		})
	}
}

// TestWakeListenerKilled: on PostgreSQL, an instance queued while the
// listener connections are being killed (pg_terminate_backend) still
// starts at once, although the engines poll every minute: the listener
// reconnects and, since it may have missed wakes, wakes its subscribers;
// and once it is back, wakes work again.
func TestWakeListenerKilled(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	var sts []store.Store
	for range 2 {
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		sts = append(sts, st)
	}
	started := make(startedLog, 16)
	a := startWakeEngine(t, sts[0], "a", time.Minute, nil)
	startWakeEngine(t, sts[1], "b", time.Minute, started.register)
	listeners := func() int {
		c, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var n int
		if err := c.QueryRow(t.Context(), `SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'`,
			"agentflow wakes "+schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pgtest.Exec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, "agentflow wakes "+schema)
	began := time.Now()
	id := queueFor(t, a, "b")
	d := waitStarted(t, started, id, began, wakeWithin)
	t.Logf("queued while the listeners were killed → started after %s", d)

	deadline := time.Now().Add(10 * time.Second)
	for listeners() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d listeners 10 s after they were killed, want 2", listeners())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var lat []time.Duration
	for range 3 {
		began := time.Now()
		id := queueFor(t, a, "b")
		lat = append(lat, waitStarted(t, started, id, began, wakeWithin))
	}
	slices.Sort(lat)
	t.Logf("after reconnecting, queued → started: %v", lat)
}
