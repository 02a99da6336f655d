package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"agentflow/internal/sqlstore"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/store/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "agentflow.db"))
	})
}

// rawExec runs statements on the database file outside the store.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentflow.db")
	if err := open(t, path).Close(); err != nil {
		t.Fatal(err)
	}
	rawExec(t, path, `INSERT INTO agentflow_schema (version) VALUES (1000000)`)

	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open: %v, want an error matching store.ErrSchemaTooNew", err)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentflow.db")
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	s := open(t, path)
	in := &store.Instance{ID: "a", Workflow: "wf", Status: store.StatusQueued, CreatedAt: t0, WakeAt: t0}
	if err := s.CreateInstances(t.Context(), []*store.Instance{in}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		s = open(t, path)
		got, err := s.GetInstance(t.Context(), "a")
		if err != nil {
			t.Fatalf("GetInstance after reopening: %v", err)
		}
		if !got.WakeAt.Equal(t0) || got.Workflow != "wf" {
			t.Errorf("after reopening: %+v", got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, distinct int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*), COUNT(DISTINCT version) FROM agentflow_schema`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != distinct || rows == 0 {
		t.Errorf("agentflow_schema has %d rows for %d versions after reopening", rows, distinct)
	}
}

func TestOptions(t *testing.T) {
	for _, mode := range []sqlite.Synchronous{sqlite.SynchronousFull, sqlite.SynchronousNormal, sqlite.SynchronousOff} {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "a.db"), sqlite.Options{Synchronous: mode, ReadConns: 1, MaxBatch: 1})
		if err != nil {
			t.Fatalf("Open with Synchronous %s: %v", mode, err)
		}
		s.Close()
	}
	if _, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "a.db"), sqlite.Options{Synchronous: "SOMETIMES"}); err == nil {
		t.Error("Open with an invalid Synchronous succeeded")
	}
}

// TestGroupCommitConcurrentWriters sends many writes at once through the
// store: they are committed in groups, and every one must succeed.
func TestGroupCommitConcurrentWriters(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "agentflow.db"))
	defer s.Close()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 200
	errc := make(chan error, 4*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("i%03d", i)
			errc <- s.CreateInstances(t.Context(), []*store.Instance{{ID: id, Workflow: "wf", Status: store.StatusQueued, CreatedAt: t0, Owner: "node-1"}})
			l := store.Lease{InstanceID: id, Owner: "node-1", Fence: 1}
			for seq := range 3 {
				_, err := s.SaveStep(t.Context(), l, store.Step{Seq: seq, Name: "x", Kind: store.KindDo, State: store.StepDone, Result: []byte(`1`)}, t0)
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("i%03d", i)
		steps, err := s.ListSteps(t.Context(), id)
		if err != nil || len(steps) != 3 {
			t.Fatalf("ListSteps(%s) = %d steps, %v; want 3", id, len(steps), err)
		}
	}
}

// TestGroupCommitFailureIsolated checks that a write failing inside a
// group rolls back alone: the other writes of its group are committed.
func TestGroupCommitFailureIsolated(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "agentflow.db"))
	defer s.Close()
	w := s.Store.(*sqlstore.Store).Writer()
	ctx := t.Context()

	insert := func(id string) sqlstore.TxFunc {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO agentflow_nodes (id, service, host, pid, started_at, expires_at) VALUES (?, '', 'h', 1, 0, 0)`, id)
			return err
		}
	}
	if err := w.Write(ctx, insert("taken")); err != nil {
		t.Fatal(err)
	}

	errBoom := errors.New("boom")
	// Groups form while the committer is busy: hold it inside a write until
	// every other write is queued behind it. Whether they then share one
	// transaction is visible through the *sql.Tx each one gets; try again
	// in the unlikely case the scheduler split them.
	for attempt := 0; ; attempt++ {
		if attempt == 20 {
			t.Fatal("the writes never shared a group")
		}
		var (
			mu  sync.Mutex
			txs = map[string]*sql.Tx{}
		)
		record := func(name string, fn sqlstore.TxFunc) sqlstore.TxFunc {
			return func(ctx context.Context, tx *sql.Tx) error {
				mu.Lock()
				txs[name] = tx
				mu.Unlock()
				return fn(ctx, tx)
			}
		}
		ok1, ok2 := fmt.Sprintf("ok1-%d", attempt), fmt.Sprintf("ok2-%d", attempt)
		failGo, failSQL := fmt.Sprintf("failgo-%d", attempt), fmt.Sprintf("failsql-%d", attempt)
		writes := map[string]sqlstore.TxFunc{
			ok1: record(ok1, insert(ok1)),
			// Writes, then fails: its row must be rolled back.
			failGo: record(failGo, func(ctx context.Context, tx *sql.Tx) error {
				if err := insert(failGo)(ctx, tx); err != nil {
					return err
				}
				return errBoom
			}),
			// Writes, then fails in SQL (a duplicate key).
			failSQL: record(failSQL, func(ctx context.Context, tx *sql.Tx) error {
				if err := insert(failSQL)(ctx, tx); err != nil {
					return err
				}
				return insert("taken")(ctx, tx)
			}),
			ok2: record(ok2, insert(ok2)),
		}

		release := make(chan struct{})
		holding := make(chan struct{})
		blockerErr := make(chan error, 1)
		go func() {
			blockerErr <- w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				close(holding)
				<-release
				return nil
			})
		}()
		<-holding
		results := make(map[string]error)
		var wg sync.WaitGroup
		var rmu sync.Mutex
		for name, fn := range writes {
			wg.Go(func() {
				err := w.Write(ctx, fn)
				rmu.Lock()
				results[name] = err
				rmu.Unlock()
			})
		}
		time.Sleep(20 * time.Millisecond) // let the writes queue up
		close(release)
		wg.Wait()
		if err := <-blockerErr; err != nil {
			t.Fatal(err)
		}

		if err := results[ok1]; err != nil {
			t.Errorf("write ok1: %v", err)
		}
		if err := results[ok2]; err != nil {
			t.Errorf("write ok2: %v", err)
		}
		if err := results[failGo]; !errors.Is(err, errBoom) {
			t.Errorf("failing write: %v, want %v", err, errBoom)
		}
		if results[failSQL] == nil {
			t.Error("write with a duplicate key succeeded")
		}
		nodes, err := s.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		present := map[string]bool{}
		for _, n := range nodes {
			present[n.ID] = true
		}
		for name, want := range map[string]bool{ok1: true, ok2: true, failGo: false, failSQL: false} {
			if present[name] != want {
				t.Errorf("row of write %s present = %v, want %v", name, present[name], want)
			}
		}
		if t.Failed() {
			return
		}
		if txs[ok1] == txs[failGo] && txs[failGo] == txs[failSQL] && txs[failSQL] == txs[ok2] {
			return // one group held all four
		}
	}
}

// TestWriteAfterClose checks that a closed store refuses writes at once
// instead of queueing them where no committer will ever run them.
func TestWriteAfterClose(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "agentflow.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for i := range 50 {
		err := s.Store.(*sqlstore.Store).Writer().Write(ctx, func(context.Context, *sql.Tx) error { return nil })
		if err == nil {
			t.Fatalf("write %d after Close succeeded", i)
		}
		if ctx.Err() != nil {
			t.Fatalf("write %d after Close hung until its context ended", i)
		}
	}
}

// TestWritesRacingClose checks that every write racing Close either fails
// or is committed durably, as it reports, and that none is left hanging.
func TestWritesRacingClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentflow.db")
	s := open(t, path)
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 200
	results := make([]error, n)
	var started, wg sync.WaitGroup
	started.Add(n / 2)
	for i := range n {
		wg.Go(func() {
			if i < n/2 {
				started.Done()
			}
			results[i] = s.Heartbeat(context.Background(), store.Node{ID: fmt.Sprintf("n%03d", i), Host: "h", StartedAt: t0, ExpiresAt: t0})
		})
	}
	started.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	s = open(t, path)
	defer s.Close()
	nodes, err := s.ListNodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, n := range nodes {
		present[n.ID] = true
	}
	ok := 0
	for i, err := range results {
		id := fmt.Sprintf("n%03d", i)
		switch {
		case err == nil && !present[id]:
			t.Errorf("write %s reported success but is not in the database", id)
		case err != nil && present[id]:
			t.Errorf("write %s failed (%v) but is in the database", id, err)
		case err == nil:
			ok++
		}
	}
	t.Logf("%d of %d writes committed before Close", ok, n)
}
