package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"

	"agentflow/internal/sqlstore"
	"agentflow/internal/telemetry"
)

// pipeline is the store's Writer. A write of several statements is a
// transaction of its own on the pool (sqlstore.TxPerWrite). The writes of
// one statement, which are the engine's hot path (create, claim, step
// checkpoints, suspend, finish), are committed in groups: while a group is
// at the server, the writes that arrive queue up, and the next group sends
// them all at once as a pipeline of statements ending in one Sync, which
// PostgreSQL runs as one implicit transaction. A group costs one round trip
// and one commit where its writes one by one would cost one each; on a
// small machine it is the server's CPU per transaction, not its disk, that
// limits the writes one by one.
//
// A group is committed, and durable, before any of its writes returns. A
// statement that fails aborts the group's transaction, so nothing of the
// group is kept: its writes then run again one by one, each in a pipeline of
// its own, so that only the failing one fails. If a group fails in a way
// that leaves its outcome unknown (the connection broke), every write of the
// group fails with that error, as when the answer to a COMMIT is lost.
//
// The statements of a group take their row locks one after the other and
// keep them until the group commits, as a transaction of several statements
// would; a deadlock with another transaction fails the group's transaction,
// whose writes then run again one by one.
type pipeline struct {
	sqlstore.TxPerWrite
	maxBatch int
	reqs     chan *stmtReq
	// mu is read-held while a write is being queued and write-held by
	// Close to set closed, so that no write can be queued after the loops
	// have taken their last look at reqs.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	loops  sync.WaitGroup
	once   sync.Once
	tel    *telemetry.StoreMetrics // nil: off; set before the first write
}

// stmtReq is one write's statement and, once done is closed, its result.
type stmtReq struct {
	ctx   context.Context
	query string
	args  []any

	fields   []pgconn.FieldDescription
	rows     [][][]byte
	affected int64
	err      error
	done     chan struct{}
}

// newPipeline starts conns loops, each committing one group at a time on a
// connection of db's pool, with groups of at most maxBatch writes.
func newPipeline(db *sql.DB, conns, maxBatch int) *pipeline {
	p := &pipeline{
		TxPerWrite: sqlstore.TxPerWrite{DB: db},
		maxBatch:   maxBatch,
		reqs:       make(chan *stmtReq, maxBatch),
		stop:       make(chan struct{}),
	}
	for range conns {
		p.loops.Add(1)
		go p.loop()
	}
	return p
}

// WriteOne implements sqlstore.Writer: fn's statement joins the next group.
func (p *pipeline) WriteOne(ctx context.Context, fn sqlstore.StmtFunc) error {
	return fn(ctx, &pipelineConn{p: p})
}

// Close stops the loops after the writes already queued; later one-statement
// writes fail at once.
func (p *pipeline) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.stop)
	})
	p.loops.Wait()
	return nil
}

// run queues a statement and waits for its group's verdict.
func (p *pipeline) run(ctx context.Context, q string, args []any) *stmtReq {
	r := &stmtReq{ctx: ctx, query: q, args: args, done: make(chan struct{})}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		r.err = sqlstore.ErrWriterClosed
		return r
	}
	select {
	case p.reqs <- r:
		p.mu.RUnlock()
	case <-ctx.Done():
		p.mu.RUnlock()
		r.err = ctx.Err()
		return r
	}
	// Once queued, the statement is committed or fails with its group; the
	// caller's context no longer decides.
	<-r.done
	return r
}

func (p *pipeline) loop() {
	defer p.loops.Done()
	batch := make([]*stmtReq, 0, p.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-p.reqs:
			batch = append(batch, r)
		case <-p.stop:
			p.drain(batch)
			return
		}
		p.commit(p.fill(batch))
	}
}

// fill adds the writes already queued to batch.
func (p *pipeline) fill(batch []*stmtReq) []*stmtReq {
	for len(batch) < p.maxBatch {
		select {
		case r := <-p.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// drain commits the writes queued before Close; no more can arrive.
func (p *pipeline) drain(batch []*stmtReq) {
	for {
		if batch = p.fill(batch[:0]); len(batch) == 0 {
			return
		}
		p.commit(batch)
	}
}

// commit runs one group and hands every write its result. A write whose
// context ended before its turn is skipped.
func (p *pipeline) commit(batch []*stmtReq) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	start := p.tel.Start()
	defer func() {
		p.tel.Commit(start, len(live))
		for _, r := range live {
			if r.err != nil {
				p.tel.Failed()
			}
		}
	}()
	err := p.send(live)
	if err != nil && len(live) > 1 && rolledBack(err) {
		// Nothing of the group was kept: run each write alone, so that
		// only the one that fails fails.
		for _, r := range live {
			r.fields, r.rows, r.affected = nil, nil, 0
			r.err = p.send([]*stmtReq{r})
			close(r.done)
		}
		return
	}
	for _, r := range live {
		r.err = err
		close(r.done)
	}
}

// send runs batch's statements as one pipeline, one implicit transaction,
// and reads their results ahead.
func (p *pipeline) send(batch []*stmtReq) error {
	ctx := context.Background()
	conn, err := p.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(batch))}
		for _, r := range batch {
			b.Queue(r.query, r.args...)
		}
		br := c.SendBatch(ctx, b)
		var first error
		for _, r := range batch {
			if first = readAhead(br, r); first != nil {
				break
			}
		}
		// Close reads up to the Sync, that is, until the group's
		// transaction has committed or rolled back.
		if err := br.Close(); first == nil {
			first = err
		}
		return first
	})
}

// readAhead reads r's result from br, copying the rows out of the
// connection's buffers.
func readAhead(br pgx.BatchResults, r *stmtReq) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		n := 0
		for _, v := range raw {
			n += len(v)
		}
		buf := make([]byte, 0, n)
		vals := make([][]byte, len(raw))
		for i, v := range raw {
			if v != nil {
				buf = append(buf, v...)
				vals[i] = buf[len(buf)-len(v):]
			}
		}
		r.rows = append(r.rows, vals)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	r.fields = append([]pgconn.FieldDescription(nil), rows.FieldDescriptions()...)
	r.affected = rows.CommandTag().RowsAffected()
	return nil
}

// rolledBack reports whether err says for sure that a group's transaction
// did not commit: the server reported an error (not a fatal one, which ends
// the session at an unknown point), or nothing was sent.
func rolledBack(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		sev := pe.SeverityUnlocalized
		if sev == "" {
			sev = pe.Severity
		}
		return sev == "ERROR"
	}
	return pgconn.SafeToRetry(err)
}

// pipelineConn is the Conn a one-statement write runs on.
type pipelineConn struct {
	p   *pipeline
	ran bool
}

func (c *pipelineConn) start() error {
	if c.ran {
		return sqlstore.ErrSecondStatement
	}
	c.ran = true
	return nil
}

func (c *pipelineConn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	if err := c.start(); err != nil {
		return 0, err
	}
	r := c.p.run(ctx, q, args)
	return r.affected, r.err
}

func (c *pipelineConn) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	if err := c.start(); err != nil {
		return nil, err
	}
	r := c.p.run(ctx, q, args)
	if r.err != nil {
		return nil, r.err
	}
	return &readRows{fields: r.fields, rows: r.rows}, nil
}

// typeMaps lend the type maps that scan rows read ahead: a pgtype.Map is
// not safe for concurrent use, and building one is not cheap.
var typeMaps = sync.Pool{New: func() any { return pgtype.NewMap() }}

// readRows are a statement's rows, read ahead of the commit.
type readRows struct {
	fields []pgconn.FieldDescription
	rows   [][][]byte
	next   int
}

func (r *readRows) Next() bool {
	if r.next >= len(r.rows) {
		return false
	}
	r.next++
	return true
}

func (r *readRows) Scan(dest ...any) error {
	if r.next == 0 || r.next > len(r.rows) {
		return fmt.Errorf("postgres: Scan called without a row")
	}
	m := typeMaps.Get().(*pgtype.Map)
	defer typeMaps.Put(m)
	return pgx.ScanRow(m, r.fields, r.rows[r.next-1], dest...)
}

func (r *readRows) Err() error   { return nil }
func (r *readRows) Close() error { return nil }
