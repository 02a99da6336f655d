package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// readStmts keeps statements prepared on the read pool, for the reads that
// run once per workflow on a hot path, where parsing the query each time
// would cost more than running it (SQLite parses a join in about as long
// as it takes to run it). A *sql.Stmt prepares itself on each connection
// of the pool as it needs to.
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

// readPrepared reads one row with q prepared on the read pool, or returns
// sql.ErrNoRows.
func readPrepared[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) (*T, error) {
	st, err := s.rstmts.get(ctx, s.read, q)
	if err != nil {
		return nil, err
	}
	return scan(st.QueryRowContext(ctx, args...))
}

// readAllPrepared is readAll with q prepared on the read pool: for a read
// of a fixed shape on a hot path (a Think agent's conversation, its
// pending submissions), where parsing was most of the read's CPU.
func readAllPrepared[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) ([]T, error) {
	st, err := s.rstmts.get(ctx, s.read, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scan)
}
