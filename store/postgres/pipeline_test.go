package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"agentflow/internal/pgtest"
	"agentflow/internal/sqlstore"
	"agentflow/store/postgres"
)

// openGrouped opens a store whose one-statement writes go through a single
// group at a time, so that writes queued while one group is at the server
// all go in the next.
func openGrouped(t *testing.T) *postgres.Store {
	t.Helper()
	dsn, schema := pgtest.Schema(t)
	s, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8, GroupConns: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Store.(*sqlstore.Store).ReadDB().ExecContext(t.Context(), `CREATE TABLE scratch (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return s
}

func insert(id int) sqlstore.StmtFunc {
	return func(ctx context.Context, c sqlstore.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO scratch (id) VALUES ($1)`, id)
		return err
	}
}

// holdGroup runs a slow one-statement write, and returns once it is at the
// server, so that the writes that follow queue up behind it.
func holdGroup(t *testing.T, w sqlstore.Writer) (wait func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		errc <- w.WriteOne(t.Context(), func(ctx context.Context, c sqlstore.Conn) error {
			_, err := c.Exec(ctx, `SELECT pg_sleep(0.3)`)
			return err
		})
	}()
	time.Sleep(100 * time.Millisecond)
	return func() {
		if err := <-errc; err != nil {
			t.Errorf("slow write: %v", err)
		}
	}
}

func TestGroupFailureFailsOnlyItsWrite(t *testing.T) {
	s := openGrouped(t)
	w := s.Store.(*sqlstore.Store).Writer()
	wait := holdGroup(t, w)

	// Ids 0-9 and a second 5: the second 5 aborts the group's transaction;
	// its writes must then run one by one, and only that one fail.
	ids := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = w.WriteOne(t.Context(), insert(id)) })
		time.Sleep(2 * time.Millisecond) // keep the queue in this order
	}
	wg.Wait()
	wait()

	failed := 0
	for i, err := range errs {
		var pe *pgconn.PgError
		switch {
		case err == nil:
		case errors.As(err, &pe) && pe.Code == "23505" && ids[i] == 5:
			failed++
		default:
			t.Errorf("insert %d: %v", ids[i], err)
		}
	}
	if failed != 1 {
		t.Errorf("%d inserts of 5 failed, want 1", failed)
	}
	var n int
	if err := s.Store.(*sqlstore.Store).ReadDB().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM scratch`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("%d rows, want 10", n)
	}
}

func TestGroupReturnsEachWritesRows(t *testing.T) {
	s := openGrouped(t)
	w := s.Store.(*sqlstore.Store).Writer()
	wait := holdGroup(t, w)

	const n = 20
	got := make([][]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = w.WriteOne(t.Context(), func(ctx context.Context, c sqlstore.Conn) error {
				rows, err := c.Query(ctx, `INSERT INTO scratch (id) SELECT g FROM generate_series($1::int, $1::int + $2::int - 1) g RETURNING id`, 100*i, i)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var id int
					if err := rows.Scan(&id); err != nil {
						return err
					}
					got[i] = append(got[i], id)
				}
				return rows.Err()
			})
		})
	}
	wg.Wait()
	wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("write %d: %v", i, errs[i])
			continue
		}
		if len(got[i]) != i {
			t.Errorf("write %d returned %d rows, want %d", i, len(got[i]), i)
		}
		for j, id := range got[i] {
			if id != 100*i+j {
				t.Errorf("write %d: row %d is %d, want %d", i, j, id, 100*i+j)
			}
		}
	}
}

func TestOneStatementWriteRefusesASecond(t *testing.T) {
	s := openGrouped(t)
	err := s.Store.(*sqlstore.Store).Writer().WriteOne(t.Context(), func(ctx context.Context, c sqlstore.Conn) error {
		if _, err := c.Exec(ctx, `INSERT INTO scratch (id) VALUES (1)`); err != nil {
			return err
		}
		_, err := c.Exec(ctx, `INSERT INTO scratch (id) VALUES (2)`)
		return err
	})
	if !errors.Is(err, sqlstore.ErrSecondStatement) {
		t.Fatalf("second statement: %v, want ErrSecondStatement", err)
	}
}

func TestCloseCommitsQueuedWrites(t *testing.T) {
	s := openGrouped(t)
	w := s.Store.(*sqlstore.Store).Writer()
	wait := holdGroup(t, w)
	const n = 10
	errc := make(chan error, n)
	for i := range n {
		go func() { errc <- w.WriteOne(t.Context(), insert(i)) }()
	}
	time.Sleep(50 * time.Millisecond)
	// Close the writer only: the pool stays open for the check below.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wait()
	for range n {
		if err := <-errc; err != nil {
			t.Errorf("queued write: %v", err)
		}
	}
	var count int
	if err := s.Store.(*sqlstore.Store).ReadDB().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM scratch`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Errorf("%d rows after Close, want %d", count, n)
	}
	if err := w.WriteOne(t.Context(), insert(n)); err == nil {
		t.Error("a write after Close succeeded")
	}
}
