package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"agentflow/internal/sqlstore"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// env is one fresh store for one scenario: an SQLite file in a fresh
// directory, or a fresh PostgreSQL schema.
type env struct {
	backend string
	st      store.Store
	sq      *sqlstore.Store   // st's SQL implementation
	w       sqlstore.Writer   // the store's own write path (group commit on SQLite)
	d       *sqlstore.Dialect // the store's dialect
	// read runs the bench's own queries (counts, checks) beside the store.
	read    *sql.DB
	path    string // the SQLite file, for SQLite
	cleanup func() error
}

func (r *runner) openEnv(ctx context.Context) (*env, error) {
	switch r.cfg.Backend {
	case "sqlite":
		return r.openSQLite(ctx)
	case "postgres":
		return r.openPostgres(ctx)
	}
	return nil, fmt.Errorf("unknown backend %q", r.cfg.Backend)
}

func (r *runner) openSQLite(ctx context.Context) (*env, error) {
	dir := r.cfg.Dir
	removeDir := false
	if dir == "" {
		d, err := os.MkdirTemp("", "agentflow-bench-")
		if err != nil {
			return nil, err
		}
		dir, removeDir = d, true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("bench-%s-%s.db", r.cfg.Scenario, randomSuffix()))
	removeFiles := func() error {
		if removeDir {
			return os.RemoveAll(dir)
		}
		return removeSQLiteFiles(path)
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: sqlite.Synchronous(r.cfg.Synchronous), DisableWakes: r.cfg.NoWakes,
		MeterProvider: r.mp})
	if err != nil {
		_ = removeFiles()
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "query_only(1)")
	read, err := sql.Open("sqlite", "file:"+st.Path()+"?"+q.Encode())
	if err != nil {
		st.Close()
		_ = removeFiles()
		return nil, err
	}
	read.SetMaxOpenConns(1)
	sq := st.Store.(*sqlstore.Store)
	return &env{
		backend: "sqlite", st: st, sq: sq, w: sq.Writer(), d: sq.Dialect(), read: read, path: st.Path(),
		cleanup: func() error {
			return errors.Join(read.Close(), st.Close(), removeFiles())
		},
	}, nil
}

func (r *runner) openPostgres(ctx context.Context) (*env, error) {
	schema := "agentflow_bench_" + randomSuffix()
	st, err := postgres.Open(ctx, r.cfg.DSN, postgres.Options{Schema: schema, DisableWakes: r.cfg.NoWakes, MeterProvider: r.mp})
	if err != nil {
		return nil, err
	}
	sq := st.Store.(*sqlstore.Store)
	db := sq.ReadDB()
	return &env{
		backend: "postgres", st: st, sq: sq, w: sq.Writer(), d: sq.Dialect(), read: db,
		cleanup: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, derr := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`)
			if derr != nil {
				derr = fmt.Errorf("drop schema %s: %w", schema, derr)
			}
			return errors.Join(derr, st.Close())
		},
	}, nil
}

// count runs a COUNT query with ? placeholders.
func (e *env) count(ctx context.Context, q string, args ...any) (int, error) {
	var n int
	if err := e.read.QueryRowContext(ctx, e.d.Rebind(q), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	return n, nil
}

// waitCount polls a COUNT query every interval until it reaches want.
func (e *env) waitCount(ctx context.Context, interval time.Duration, want int, q string, args ...any) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := -1
	for {
		n, err := e.count(ctx, q, args...)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		last = n
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d rows of %q, saw %d: %w", want, q, last, ctx.Err())
		case <-t.C:
		}
	}
}

// newEngine returns an engine on the store with the bench's options.
func (r *runner) newEngine(st store.Store, hooks workflow.Hooks) (*workflow.Engine, error) {
	return workflow.NewEngine(workflow.Options{
		Store:          st,
		Logger:         r.log,
		MaxConcurrent:  r.cfg.MaxConcurrent,
		ClaimAhead:     r.cfg.ClaimAhead,
		Hooks:          hooks,
		TracerProvider: r.tp,
		MeterProvider:  r.mp,
	})
}

// finishWatcher wraps a store and calls onFinish after each Finish that
// returned without error, that is, once the instance's final status row is
// durable.
type finishWatcher struct {
	store.Store
	onFinish func(l store.Lease, o store.Outcome)
}

func (f *finishWatcher) Finish(ctx context.Context, l store.Lease, o store.Outcome, now time.Time) error {
	err := f.Store.Finish(ctx, l, o, now)
	if err == nil {
		f.onFinish(l, o)
	}
	return err
}

// completion counts finished instances and notes when the last one of want
// finished.
type completion struct {
	want     int64
	n        atomic.Int64
	errored  atomic.Int64
	firstErr atomic.Value // string
	done     chan struct{}
	at       atomic.Int64 // UnixNano of the want-th finish
}

func newCompletion(want int) *completion {
	return &completion{want: int64(want), done: make(chan struct{})}
}

func (c *completion) finished(l store.Lease, o store.Outcome) {
	if o.Status != store.StatusComplete {
		if c.errored.Add(1) == 1 {
			c.firstErr.Store(fmt.Sprintf("instance %s %s: %s: %s", l.InstanceID, o.Status, o.ErrorName, o.ErrorMessage))
		}
	}
	if c.n.Add(1) == c.want {
		c.at.Store(time.Now().UnixNano())
		close(c.done)
	}
}

func (c *completion) wait(ctx context.Context) (time.Time, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("%d of %d instances finished: %w", c.n.Load(), c.want, ctx.Err())
	}
	if n := c.errored.Load(); n > 0 {
		msg, _ := c.firstErr.Load().(string)
		return time.Time{}, fmt.Errorf("%d instances did not complete; first: %s", n, msg)
	}
	return time.Unix(0, c.at.Load()), nil
}

// stopEngine stops the engine, giving executions still running 30 s to
// reach a step boundary, so that a failed or interrupted run still cleans up.
func stopEngine(eng *workflow.Engine) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return eng.Stop(ctx)
}
