package crashtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"agentflow/internal/sqlstore"
)

// The audit log. Every row of crashtest_log has a place in one global order
// (seq): on SQLite because one connection writes the file and commits its
// transactions in turn, on PostgreSQL because a row is only written after
// everything it must follow has committed (a step records its execution
// before it returns; the workflow records "returned" after Do returned).
//
// Kinds of rows:
//
//	exec       a step function started an attempt (ok: the attempt succeeds)
//	returned   Do returned the step's result to the workflow code (first one kept)
//	committed  the AfterStep hook saw the checkpoint durable, just before a kill
//	dedup      the step's effect was already applied under its idempotency key
const (
	kindExec      = "exec"
	kindReturned  = "returned"
	kindCommitted = "committed"
	kindDedup     = "dedup"
)

var auditSchema = map[Backend][]string{
	SQLite: {
		`CREATE TABLE IF NOT EXISTS crashtest_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    instance   TEXT NOT NULL,
    step       TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    idem_key   TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    at         INTEGER NOT NULL
)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS crashtest_log_marker ON crashtest_log (kind, idem_key) WHERE kind IN ('returned', 'committed')`,
		`CREATE TABLE IF NOT EXISTS crashtest_effects (
    idem_key TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    step     TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    at       INTEGER NOT NULL
)`,
	},
	Postgres: {
		`CREATE TABLE IF NOT EXISTS crashtest_log (
    seq        BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL,
    instance   TEXT NOT NULL,
    step       TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    idem_key   TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    at         BIGINT NOT NULL
)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS crashtest_log_marker ON crashtest_log (kind, idem_key) WHERE kind IN ('returned', 'committed')`,
		`CREATE TABLE IF NOT EXISTS crashtest_effects (
    idem_key TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    step     TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    at       BIGINT NOT NULL
)`,
	},
}

// logRow is one row of crashtest_log.
type logRow struct {
	Seq        int64
	Kind       string
	Instance   string
	Step       string
	Occurrence int
	Key        string
	Attempt    int
	OK         bool
	PID        int
	At         int64 // Unix microseconds
}

// auditDB is the audit log's database: on SQLite a file of its own whose
// writes a batcher groups into transactions on one connection; on
// PostgreSQL a pool on the engine's schema.
type auditDB struct {
	backend  Backend
	numbered bool
	db       *sql.DB
	b        *batcher // SQLite writes

	logInsert, markerInsert, effectInsert string
}

func openAudit(ctx context.Context, t Target, maxConns int) (*auditDB, error) {
	a := &auditDB{backend: t.Backend}
	switch t.Backend {
	case SQLite:
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Set("_txlock", "immediate")
		db, err := sql.Open("sqlite", "file:"+t.auditPath()+"?"+q.Encode())
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("open %s: %w", t.auditPath(), err)
		}
		a.db = db
	case Postgres:
		// synchronous_commit=off: the records must survive the child
		// being killed, not the server crashing, and a commit is visible
		// to every session as soon as it returns either way. Waiting for
		// the WAL flush would make the audit log the bottleneck.
		db, err := openPG(ctx, t.DSN, t.Schema, maxConns, "synchronous_commit", "off")
		if err != nil {
			return nil, err
		}
		a.db, a.numbered = db, true
	default:
		return nil, t.validate()
	}
	cols := `(kind, instance, step, occurrence, idem_key, attempt, ok, pid, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	a.logInsert = a.rebind(`INSERT INTO crashtest_log ` + cols)
	a.markerInsert = a.rebind(`INSERT INTO crashtest_log ` + cols + ` ON CONFLICT DO NOTHING`)
	a.effectInsert = a.rebind(`INSERT INTO crashtest_effects (idem_key, instance, step, pid, at) VALUES (?, ?, ?, ?, ?)
 ON CONFLICT (idem_key) DO NOTHING`)
	return a, nil
}

// rebind rewrites ? placeholders for the audit database, as the store does.
func (a *auditDB) rebind(q string) string {
	return (&sqlstore.Dialect{Numbered: a.numbered}).Rebind(q)
}

func (a *auditDB) createTables(ctx context.Context) error {
	for _, q := range auditSchema[a.backend] {
		if _, err := a.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// startWriter makes writes go through a batcher (SQLite).
func (a *auditDB) startWriter() {
	if a.backend == SQLite {
		a.b = newBatcher(a.db)
	}
}

func (a *auditDB) close() {
	if a.b != nil {
		a.b.close()
	}
	a.db.Close()
}

// write runs one insert durably and returns the rows it affected. It retries
// failures for up to a minute: the audit log must not lose a record.
func (a *auditDB) write(ctx context.Context, q string, args ...any) (int64, error) {
	delay := 10 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		var (
			n   int64
			err error
		)
		if a.b != nil {
			n, err = a.b.exec(q, args...)
		} else {
			var res sql.Result
			if res, err = a.db.ExecContext(context.WithoutCancel(ctx), q, args...); err == nil {
				n, err = res.RowsAffected()
			}
		}
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) || errors.Is(err, errBatcherClosed) {
			return 0, fmt.Errorf("audit write: %w", err)
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

func (a *auditDB) record(ctx context.Context, r logRow) error {
	q := a.logInsert
	if r.Kind == kindReturned || r.Kind == kindCommitted {
		q = a.markerInsert
	}
	ok := 0
	if r.OK {
		ok = 1
	}
	_, err := a.write(ctx, q, r.Kind, r.Instance, r.Step, r.Occurrence, r.Key, r.Attempt, ok, r.PID, time.Now().UnixMicro())
	return err
}

// applyEffect inserts the effect row for key and reports whether it was new.
func (a *auditDB) applyEffect(ctx context.Context, key, instance, step string, pid int) (bool, error) {
	n, err := a.write(ctx, a.effectInsert, key, instance, step, pid, time.Now().UnixMicro())
	return n == 1, err
}

func (a *auditDB) readLog(ctx context.Context) ([]logRow, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT seq, kind, instance, step, occurrence, idem_key, attempt, ok, pid, at FROM crashtest_log ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []logRow
	for rows.Next() {
		var r logRow
		var ok int
		if err := rows.Scan(&r.Seq, &r.Kind, &r.Instance, &r.Step, &r.Occurrence, &r.Key, &r.Attempt, &ok, &r.PID, &r.At); err != nil {
			return nil, err
		}
		r.OK = ok != 0
		out = append(out, r)
	}
	return out, rows.Err()
}

func (a *auditDB) readEffects(ctx context.Context) (map[string]string, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT idem_key, instance FROM crashtest_effects`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var k, inst string
		if err := rows.Scan(&k, &inst); err != nil {
			return nil, err
		}
		out[k] = inst
	}
	return out, rows.Err()
}

// countExecs returns how many executions the log holds.
func (a *auditDB) countExecs(ctx context.Context) (int, error) {
	var n int
	err := a.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM crashtest_log WHERE kind = 'exec'`).Scan(&n)
	return n, err
}

// batcher groups concurrent SQLite writes into one transaction on one
// connection, so that one fsync covers many records; each write returns
// only after its transaction committed.
type batcher struct {
	db   *sql.DB
	reqs chan *batchReq
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type batchReq struct {
	q    string
	args []any
	res  chan batchRes
}

type batchRes struct {
	n   int64
	err error
}

var errBatcherClosed = errors.New("audit writer closed")

func newBatcher(db *sql.DB) *batcher {
	b := &batcher{db: db, reqs: make(chan *batchReq, 512), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *batcher) exec(q string, args ...any) (int64, error) {
	r := &batchReq{q: q, args: args, res: make(chan batchRes, 1)}
	select {
	case b.reqs <- r:
	case <-b.stop:
		return 0, errBatcherClosed
	}
	res := <-r.res
	return res.n, res.err
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}

func (b *batcher) loop() {
	defer close(b.done)
	for {
		var batch []*batchReq
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.stop:
			for {
				select {
				case r := <-b.reqs:
					r.res <- batchRes{err: errBatcherClosed}
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < 512 {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.commit(batch)
	}
}

func (b *batcher) commit(batch []*batchReq) {
	ctx := context.Background()
	fail := func(err error) {
		for _, r := range batch {
			r.res <- batchRes{err: err}
		}
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	ns := make([]int64, len(batch))
	for i, r := range batch {
		res, err := tx.ExecContext(ctx, r.q, r.args...)
		if err == nil {
			ns[i], err = res.RowsAffected()
		}
		if err != nil {
			_ = tx.Rollback()
			fail(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(err)
		return
	}
	for i, r := range batch {
		r.res <- batchRes{n: ns[i]}
	}
}
