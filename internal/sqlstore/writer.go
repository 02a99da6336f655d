package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// TxFunc is one atomic write. It must not commit or roll back tx.
type TxFunc func(ctx context.Context, tx *sql.Tx) error

// Writer runs atomic writes.
type Writer interface {
	// Write runs fn in a transaction and returns once its effects are
	// durable, or returns the error fn or the commit returned, with none of
	// fn's effects kept.
	Write(ctx context.Context, fn TxFunc) error
	Close() error
}

// TxPerWrite runs every write in a transaction of its own. It suits a server
// database, which groups concurrent commits into one log flush by itself.
type TxPerWrite struct{ DB *sql.DB }

// Write implements Writer.
func (w TxPerWrite) Write(ctx context.Context, fn TxFunc) error {
	tx, err := w.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Close implements Writer.
func (TxPerWrite) Close() error { return nil }

// GroupCommitter funnels every write through one connection and commits
// concurrent writes together: while one transaction is being made durable,
// the writes that arrive queue up, and the next transaction runs them all,
// each inside a savepoint so one failing write rolls back alone. One fsync
// then covers a whole group, which is what makes an embedded database with
// synchronous=FULL fast under concurrency.
type GroupCommitter struct {
	db       *sql.DB
	maxBatch int
	reqs     chan *writeReq
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

type writeReq struct {
	ctx  context.Context
	fn   TxFunc
	errc chan error
}

var errWriterClosed = errors.New("store writer is closed")

var reqPool = sync.Pool{New: func() any { return &writeReq{errc: make(chan error, 1)} }}

// NewGroupCommitter starts a committer on db, which should hold exactly one
// connection whose transactions take the write lock when they begin.
func NewGroupCommitter(db *sql.DB, maxBatch int) *GroupCommitter {
	if maxBatch <= 0 {
		maxBatch = 512
	}
	g := &GroupCommitter{
		db:       db,
		maxBatch: maxBatch,
		reqs:     make(chan *writeReq, maxBatch),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go g.loop()
	return g
}

// Write implements Writer.
func (g *GroupCommitter) Write(ctx context.Context, fn TxFunc) error {
	r := reqPool.Get().(*writeReq)
	r.ctx, r.fn = ctx, fn
	select {
	case g.reqs <- r:
	case <-g.stop:
		return errWriterClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the write is committed or fails as part of its group; the
	// caller's context no longer decides, so wait for the verdict.
	err := <-r.errc
	r.ctx, r.fn = nil, nil
	reqPool.Put(r)
	return err
}

// Close stops the committer after the writes already queued.
func (g *GroupCommitter) Close() error {
	g.once.Do(func() { close(g.stop) })
	<-g.done
	return nil
}

func (g *GroupCommitter) loop() {
	defer close(g.done)
	batch := make([]*writeReq, 0, g.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-g.reqs:
			batch = append(batch, r)
		case <-g.stop:
			g.drainClosed()
			return
		}
	fill:
		for len(batch) < g.maxBatch {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		g.commit(batch)
	}
}

func (g *GroupCommitter) drainClosed() {
	for {
		select {
		case r := <-g.reqs:
			r.errc <- errWriterClosed
		default:
			return
		}
	}
}

// commit runs one group. A write whose context ended before its turn is
// skipped; a failing write is rolled back to its savepoint; a failed commit
// fails every write of the group.
func (g *GroupCommitter) commit(batch []*writeReq) {
	ctx := context.Background()
	tx, err := g.db.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.errc <- fmt.Errorf("begin: %w", err)
		}
		return
	}
	results := make([]error, len(batch))
	single := len(batch) == 1
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if single {
			// No neighbours to protect: a failure rolls back the whole transaction.
			results[i] = r.fn(context.WithoutCancel(r.ctx), tx)
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			results[i] = fmt.Errorf("savepoint: %w", err)
			continue
		}
		// Statements run to the end even if the caller gives up meanwhile:
		// interrupting one would disturb the whole group.
		if err := r.fn(context.WithoutCancel(r.ctx), tx); err != nil {
			results[i] = err
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT w"); rerr != nil {
				g.failAll(tx, batch, fmt.Errorf("rollback to savepoint: %w", rerr))
				return
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT w"); err != nil {
			g.failAll(tx, batch, fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	if single && results[0] != nil {
		_ = tx.Rollback()
		batch[0].errc <- results[0]
		return
	}
	if err := tx.Commit(); err != nil {
		for _, r := range batch {
			r.errc <- fmt.Errorf("commit: %w", err)
		}
		return
	}
	for i, r := range batch {
		r.errc <- results[i]
	}
}

func (g *GroupCommitter) failAll(tx *sql.Tx, batch []*writeReq, err error) {
	_ = tx.Rollback()
	for _, r := range batch {
		r.errc <- err
	}
}
