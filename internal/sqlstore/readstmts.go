package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// readStmts keeps the read pool's statements of fixed text prepared:
// SQLite parses a statement on every run that is not, often in as long as
// it takes to run it (PostgreSQL's driver keeps its own cache, so it costs
// nothing there). A *sql.Stmt prepares itself on each connection of the
// pool as it needs to. Statements built per call (an operator's filters)
// go through readAllOnce instead, so the set stays bounded.
type readStmts struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// get returns the statement of q prepared on db, preparing it on first use.
func (r *readStmts) get(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stmts[q]; st != nil {
		return st, nil
	}
	st, err := db.PrepareContext(context.WithoutCancel(ctx), q)
	if err != nil {
		return nil, err
	}
	if r.stmts == nil {
		r.stmts = make(map[string]*sql.Stmt)
	}
	r.stmts[q] = st
	return st, nil
}

func (r *readStmts) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for q, st := range r.stmts {
		errs = append(errs, st.Close())
		delete(r.stmts, q)
	}
	return errors.Join(errs...)
}

// readRow runs q, a statement of fixed text, on the read pool, prepared,
// and returns its one row; Scan reports a failure to prepare, and
// sql.ErrNoRows.
func (s *Store) readRow(ctx context.Context, q string, args ...any) rowScanner {
	st, err := s.rstmts.get(ctx, s.read, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// readRows runs q, a statement of fixed text, on the read pool, prepared.
// The caller closes the rows.
func (s *Store) readRows(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.rstmts.get(ctx, s.read, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// errRow is a row whose statement could not be prepared.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// readOne reads one row of q, a statement of fixed text, through the read
// pool, or returns sql.ErrNoRows.
func readOne[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) (*T, error) {
	return scan(s.readRow(ctx, q, args...))
}

// readAll reads the rows of q, a statement of fixed text, through the read
// pool.
func readAll[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) ([]T, error) {
	rows, err := s.readRows(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scan)
}

// readAllOnce is readAll for a statement built for the call (an operator's
// filters), whose text is not worth keeping prepared.
func readAllOnce[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) ([]T, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scan)
}
