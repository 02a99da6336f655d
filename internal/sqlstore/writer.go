package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"agentflow/internal/telemetry"
)

// TxFunc is one atomic write. It must not commit or roll back tx. A Writer
// may run it more than once, after rolling back the earlier runs, so it
// must set its outputs rather than accumulate them.
type TxFunc func(ctx context.Context, tx *sql.Tx) error

// Rows are the rows a statement returned: *sql.Rows, or rows that a Writer
// read ahead.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Conn runs the statements of a write.
type Conn interface {
	// Exec runs q and returns how many rows it changed.
	Exec(ctx context.Context, q string, args ...any) (int64, error)
	// Query runs q and returns its rows, which the caller must close.
	Query(ctx context.Context, q string, args ...any) (Rows, error)
}

// StmtFunc is an atomic write of one statement, run on c. It must run at
// most one statement (a second one fails), and return an error only when
// that statement failed or changed nothing: its effect may be committed
// before the statement returns.
type StmtFunc func(ctx context.Context, c Conn) error

// TxConn returns a Conn that runs statements in tx, through the statement
// cache of the Writer running tx, if it keeps one (see Exec).
func TxConn(tx *sql.Tx) Conn { return txConn{tx} }

type txConn struct{ tx *sql.Tx }

func (c txConn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := Exec(ctx, c.tx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c txConn) Query(ctx context.Context, q string, args ...any) (Rows, error) {
	rows, err := Query(ctx, c.tx, q, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// dbConn runs each statement on its own, in autocommit mode.
type dbConn struct{ db *sql.DB }

func (c dbConn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := c.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c dbConn) Query(ctx context.Context, q string, args ...any) (Rows, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// ErrSecondStatement is what a StmtFunc's second statement fails with.
var ErrSecondStatement = errors.New("a one-statement write ran a second statement")

// oneStatement is the Conn a StmtFunc runs on: it refuses a second statement,
// which would not be part of the write's one atomic statement.
type oneStatement struct {
	c   Conn
	ran bool
}

func (o *oneStatement) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	if o.ran {
		return 0, ErrSecondStatement
	}
	o.ran = true
	return o.c.Exec(ctx, q, args...)
}

func (o *oneStatement) Query(ctx context.Context, q string, args ...any) (Rows, error) {
	if o.ran {
		return nil, ErrSecondStatement
	}
	o.ran = true
	return o.c.Query(ctx, q, args...)
}

// Writer runs atomic writes.
type Writer interface {
	// Write runs fn in a transaction and returns once its effects are
	// durable, or returns the error fn or the commit returned, with none of
	// fn's effects kept.
	Write(ctx context.Context, fn TxFunc) error
	// WriteOne runs fn, a write of one statement, and returns once its
	// effect is durable, or returns the error of fn or of the commit. A
	// single statement is atomic by itself, so a Writer need not give it a
	// transaction of its own: it may run it in autocommit mode, or send it
	// with others as one pipeline, and save the round trips of BEGIN and
	// COMMIT.
	WriteOne(ctx context.Context, fn StmtFunc) error
	Close() error
}

// TxPerWrite runs every write in a transaction of its own. It suits a server
// database, which groups concurrent commits into one log flush by itself.
// A one-statement write runs on the pool in autocommit mode: one round trip,
// committed (and, with synchronous_commit on, durable) when it returns.
type TxPerWrite struct{ DB *sql.DB }

// WriteOne implements Writer.
func (w TxPerWrite) WriteOne(ctx context.Context, fn StmtFunc) error {
	return fn(ctx, &oneStatement{c: dbConn{w.DB}})
}

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
	// mu is read-held while a write is being queued and write-held by
	// Close to set closed, so that no write can be queued after the
	// committer has taken its last look at reqs.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	stmts  *stmtCache
	tel    *telemetry.StoreMetrics // nil: off
}

type writeReq struct {
	ctx  context.Context
	fn   TxFunc
	errc chan error
}

// ErrWriterClosed is returned by writes made after a Writer was closed.
var ErrWriterClosed = errors.New("store writer is closed")

var reqPool = sync.Pool{New: func() any { return &writeReq{errc: make(chan error, 1)} }}

// NewGroupCommitter starts a committer on db, which should hold exactly one
// connection whose transactions take the write lock when they begin.
func NewGroupCommitter(db *sql.DB, maxBatch int) *GroupCommitter {
	return NewInstrumentedGroupCommitter(db, maxBatch, nil)
}

// NewInstrumentedGroupCommitter is NewGroupCommitter recording each group's
// size and latency and the failed writes in m (nil: nothing).
func NewInstrumentedGroupCommitter(db *sql.DB, maxBatch int, m *telemetry.StoreMetrics) *GroupCommitter {
	if maxBatch <= 0 {
		maxBatch = 512
	}
	g := &GroupCommitter{
		db:       db,
		maxBatch: maxBatch,
		reqs:     make(chan *writeReq, maxBatch),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		stmts:    newStmtCache(db),
		tel:      m,
	}
	go g.loop()
	return g
}

// Write implements Writer.
func (g *GroupCommitter) Write(ctx context.Context, fn TxFunc) error {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return ErrWriterClosed
	}
	r := reqPool.Get().(*writeReq)
	r.ctx, r.fn = ctx, fn
	select {
	case g.reqs <- r:
		g.mu.RUnlock()
	case <-ctx.Done():
		g.mu.RUnlock()
		r.ctx, r.fn = nil, nil
		reqPool.Put(r)
		return ctx.Err()
	}
	// Once queued, the write is committed or fails as part of its group; the
	// caller's context no longer decides, so wait for the verdict.
	err := <-r.errc
	r.ctx, r.fn = nil, nil
	reqPool.Put(r)
	return err
}

// WriteOne implements Writer: the statement runs in the group's
// transaction, like any other write.
func (g *GroupCommitter) WriteOne(ctx context.Context, fn StmtFunc) error {
	return g.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return fn(ctx, &oneStatement{c: TxConn(tx)})
	})
}

// Close stops the committer after the writes already queued; later writes
// fail at once.
func (g *GroupCommitter) Close() error {
	g.once.Do(func() {
		// Waits for writes being queued, which the loop keeps taking.
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.stop)
	})
	<-g.done
	return nil
}

func (g *GroupCommitter) loop() {
	defer close(g.done)
	defer g.stmts.close()
	batch := make([]*writeReq, 0, g.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-g.reqs:
			batch = append(batch, r)
		case <-g.stop:
			g.drain(batch)
			return
		}
		// Between transactions the connection is free: prepare the
		// statements the last groups asked for.
		g.stmts.preparePending()
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

// drain commits the writes queued before Close; no more can arrive.
func (g *GroupCommitter) drain(batch []*writeReq) {
	for {
		batch = batch[:0]
	fill:
		for len(batch) < g.maxBatch {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		g.commit(batch)
	}
}

// commit runs one group. It first runs the writes back to back in one
// transaction; almost always they all succeed and the group commits. If one
// fails, its partial effects must not be kept while its neighbours' are:
// the transaction is rolled back and the group runs again with each write
// inside a savepoint, so that only the failing one fails. (Savepoints on
// every write cost two statements each, as much as the writes themselves.)
// A write whose context ended before its turn is skipped; a failed commit
// fails every write of the group.
func (g *GroupCommitter) commit(batch []*writeReq) {
	start := g.tel.Start()
	if !g.run(batch, false) {
		g.run(batch, true)
	}
	g.tel.Commit(start, len(batch))
}

// answer hands r its verdict, counting failures.
func (g *GroupCommitter) answer(r *writeReq, err error) {
	if err != nil && r.ctx.Err() == nil {
		g.tel.Failed()
	}
	r.errc <- err
}

// run runs the group in one transaction, each write in a savepoint if
// isolate is set. Without isolate it gives up, rolling back and answering
// no one, as soon as a write fails, and reports false.
func (g *GroupCommitter) run(batch []*writeReq, isolate bool) bool {
	ctx := context.WithValue(context.Background(), stmtCacheKey{}, g.stmts)
	tx, err := g.db.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			g.answer(r, fmt.Errorf("begin: %w", err))
		}
		return true
	}
	results := make([]error, len(batch))
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		// fn's context keeps the caller's values but not its cancellation,
		// and carries the statement cache. Statements run to the end even
		// if the caller gives up meanwhile: interrupting one would disturb
		// the whole group.
		fctx := context.WithValue(context.WithoutCancel(r.ctx), stmtCacheKey{}, g.stmts)
		if !isolate {
			if results[i] = r.fn(fctx, tx); results[i] != nil {
				if len(batch) == 1 { // no neighbours to protect
					_ = tx.Rollback()
					g.answer(r, results[i])
					return true
				}
				_ = tx.Rollback()
				return false
			}
			continue
		}
		if _, err := Exec(ctx, tx, "SAVEPOINT w"); err != nil {
			results[i] = fmt.Errorf("savepoint: %w", err)
			continue
		}
		if err := r.fn(fctx, tx); err != nil {
			results[i] = err
			if _, rerr := Exec(ctx, tx, "ROLLBACK TO SAVEPOINT w"); rerr != nil {
				g.failAll(tx, batch, fmt.Errorf("rollback to savepoint: %w", rerr))
				return true
			}
		}
		if _, err := Exec(ctx, tx, "RELEASE SAVEPOINT w"); err != nil {
			g.failAll(tx, batch, fmt.Errorf("release savepoint: %w", err))
			return true
		}
	}
	if err := tx.Commit(); err != nil {
		for _, r := range batch {
			g.answer(r, fmt.Errorf("commit: %w", err))
		}
		return true
	}
	for i, r := range batch {
		g.answer(r, results[i])
	}
	return true
}

func (g *GroupCommitter) failAll(tx *sql.Tx, batch []*writeReq, err error) {
	_ = tx.Rollback()
	for _, r := range batch {
		g.answer(r, err)
	}
}

// stmtCacheKey is the context key under which a Writer hands its statement
// cache to the TxFuncs it runs.
type stmtCacheKey struct{}

// maxCachedStmts bounds the statement cache; queries past it run unprepared.
const maxCachedStmts = 128

// stmtCache keeps statements prepared once on the group committer's single
// connection, so that a write does not parse its SQL again every time
// (parsing was a third of the committer's CPU time). A statement cannot be
// prepared on the database while a transaction holds its only connection,
// so a query seen for the first time runs unprepared and is prepared between
// two transactions, by preparePending, for the writes that follow.
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool // true: preparing it failed; never try again
	// tx and inTx are the current transaction and the statements bound to
	// it so far: binding one (Tx.StmtContext) costs more than running it,
	// so each is bound once per transaction rather than once per use.
	tx   *sql.Tx
	inTx map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: make(map[string]*sql.Stmt), pending: make(map[string]bool), inTx: make(map[string]*sql.Stmt)}
}

// lookup returns q prepared for tx, or nil after noting q to be prepared.
func (c *stmtCache) lookup(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tx != c.tx {
		// The statements bound to the previous transaction were closed with it.
		c.tx = tx
		clear(c.inTx)
	}
	if st, ok := c.inTx[q]; ok {
		return st
	}
	st, ok := c.stmts[q]
	if !ok {
		if _, seen := c.pending[q]; !seen && len(c.stmts)+len(c.pending) < maxCachedStmts {
			c.pending[q] = false
		}
		return nil
	}
	txst := tx.StmtContext(ctx, st)
	c.inTx[q] = txst
	return txst
}

// preparePending prepares the queries noted since the last call. It must
// run while no transaction holds the connection.
func (c *stmtCache) preparePending() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tx = nil
	clear(c.inTx)
	for q, failed := range c.pending {
		if failed {
			continue
		}
		st, err := c.db.PrepareContext(context.Background(), q)
		if err != nil {
			c.pending[q] = true // it runs unprepared, and reports its own errors
			continue
		}
		c.stmts[q] = st
		delete(c.pending, q)
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		_ = st.Close()
		delete(c.stmts, q)
	}
}

func cacheFrom(ctx context.Context) *stmtCache {
	c, _ := ctx.Value(stmtCacheKey{}).(*stmtCache)
	return c
}

// Exec is tx.ExecContext through a statement prepared once, when the Writer
// running tx keeps a statement cache (the GroupCommitter does; a server
// database's driver caches statements itself). q should be one of a fixed
// set of queries: the cache is bounded and queries past it run unprepared.
func Exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if c := cacheFrom(ctx); c != nil {
		if st := c.lookup(ctx, tx, q); st != nil {
			return st.ExecContext(ctx, args...)
		}
	}
	return tx.ExecContext(ctx, q, args...)
}

// Query is tx.QueryContext through the statement cache; see Exec.
func Query(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	if c := cacheFrom(ctx); c != nil {
		if st := c.lookup(ctx, tx, q); st != nil {
			return st.QueryContext(ctx, args...)
		}
	}
	return tx.QueryContext(ctx, q, args...)
}

// QueryRow is tx.QueryRowContext through the statement cache; see Exec.
func QueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	if c := cacheFrom(ctx); c != nil {
		if st := c.lookup(ctx, tx, q); st != nil {
			return st.QueryRowContext(ctx, args...)
		}
	}
	return tx.QueryRowContext(ctx, q, args...)
}
