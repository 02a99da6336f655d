package crashtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
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
// writes the store's group committer batches into transactions on one
// connection, so one fsync covers many records; on
// PostgreSQL a pool on the engine's schema.
type auditDB struct {
	backend  Backend
	numbered bool
	db       *sql.DB
	gc       *sqlstore.GroupCommitter // SQLite writes

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

// startWriter makes writes go through a group committer (SQLite).
func (a *auditDB) startWriter() {
	if a.backend == SQLite {
		a.gc = sqlstore.NewGroupCommitter(a.db, 512)
	}
}

func (a *auditDB) close() {
	if a.gc != nil {
		_ = a.gc.Close()
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
		if a.gc != nil {
			err = a.gc.Write(context.WithoutCancel(ctx), func(ctx context.Context, tx *sql.Tx) error {
				res, err := tx.ExecContext(ctx, q, args...)
				if err == nil {
					n, err = res.RowsAffected()
				}
				return err
			})
		} else {
			var res sql.Result
			if res, err = a.db.ExecContext(context.WithoutCancel(ctx), q, args...); err == nil {
				n, err = res.RowsAffected()
			}
		}
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) || errors.Is(err, sqlstore.ErrWriterClosed) {
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
