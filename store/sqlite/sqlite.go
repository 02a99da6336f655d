// Package sqlite is the embedded store: one SQLite file in WAL mode, opened
// with modernc.org/sqlite, a maintained SQLite compiled to pure Go, so the
// binary needs no cgo and cross-compiles.
//
// Writes go through a single connection with group commit: concurrent
// writes share one BEGIN IMMEDIATE transaction and one fsync. Reads use a
// separate pool of read-only connections, which WAL lets run beside the
// writer. Several processes may open the same file; BEGIN IMMEDIATE and the
// busy timeout serialize their writers.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/metric"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"agentflow/internal/sqlstore"
	"agentflow/internal/telemetry"
	"agentflow/internal/wakebus"
	"agentflow/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Synchronous is SQLite's synchronous setting for the WAL.
type Synchronous string

// Settings of synchronous. FULL makes every commit durable on return; NORMAL
// may lose the last commits on power loss (never on a process crash).
const (
	SynchronousFull   Synchronous = "FULL"
	SynchronousNormal Synchronous = "NORMAL"
	SynchronousOff    Synchronous = "OFF"
)

// Options configure Open. The zero value is the durable default.
type Options struct {
	// Synchronous defaults to FULL.
	Synchronous Synchronous
	// ReadConns is the size of the read pool; default max(4, GOMAXPROCS).
	ReadConns int
	// MaxBatch caps how many writes share one transaction; default 512.
	MaxBatch int
	// BusyTimeout is how long a writer waits for another process's write
	// lock; default 10 s.
	BusyTimeout time.Duration
	// CheckpointInterval is how often a background connection copies the
	// WAL into the database file; default 100 ms. Checkpointing there keeps
	// it out of the commits, where SQLite would otherwise run it every
	// 1,000 pages and stall the whole group behind it.
	CheckpointInterval time.Duration
	// DisableWakes turns off the wake sockets (see Store.Subscribe): other
	// processes on the file then notice this one's work at their next poll.
	DisableWakes bool
	// MeterProvider, when set, records the group commits' size and latency
	// and the failed writes (agentflow.store.*); nil records nothing.
	MeterProvider metric.MeterProvider
}

// Store is the SQLite store. Its methods are those of store.Store, the
// interface the engine and the agent runtime run on, Subscribe and Path.
type Store struct {
	store.Store // the SQL implementation shared with store/postgres
	path        string
	wakes       *wakebus.Bus
}

var _ store.Waker = (*Store)(nil)

// Subscribe implements store.Waker: fn hears the wakes of the writes made
// through any handle on the file, in this process or another of this host,
// through datagram sockets beside the file (see wakes_unix.go). With
// Options.DisableWakes, or where there are no Unix sockets, it hears only
// this handle's.
func (s *Store) Subscribe(fn func(store.Wake)) (cancel func()) { return s.wakes.Subscribe(fn) }

var dialect = &sqlstore.Dialect{Name: "sqlite", Serialized: true, JSON: sqlstore.JSONSQLite}

// Open opens (creating if needed) the database file at path, applies the
// embedded migrations, and refuses a database whose schema is newer than
// this binary (store.ErrSchemaTooNew).
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	switch opts.Synchronous {
	case "":
		opts.Synchronous = SynchronousFull
	case SynchronousFull, SynchronousNormal, SynchronousOff:
	default:
		return nil, fmt.Errorf("sqlite: Options.Synchronous %q: must be FULL, NORMAL or OFF", opts.Synchronous)
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	sm, err := telemetry.NewStoreMetrics(opts.MeterProvider, "sqlite")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 10 * time.Second
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 100 * time.Millisecond
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: path %q: %w", path, err)
	}

	pragmas := url.Values{}
	pragmas.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeout.Milliseconds()))
	pragmas.Add("_pragma", "journal_mode(WAL)")
	pragmas.Add("_pragma", "synchronous("+string(opts.Synchronous)+")")
	pragmas.Add("_pragma", "cache_size(-16000)")
	writeQ := url.Values{}
	for k, v := range pragmas {
		writeQ[k] = append([]string(nil), v...)
	}
	writeQ.Set("_txlock", "immediate")
	// A safety net only: the checkpointer keeps the WAL far below this.
	writeQ.Add("_pragma", "wal_autocheckpoint(16000)")
	wdb, err := sql.Open("sqlite", "file:"+abs+"?"+writeQ.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := wdb.PingContext(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}

	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	ms, err := sqlstore.LoadMigrations(sub)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := sqlstore.Migrate(ctx, wdb, dialect, ms); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", abs, err)
	}

	readQ := pragmas
	readQ.Add("_pragma", "query_only(1)")
	rdb, err := sql.Open("sqlite", "file:"+abs+"?"+readQ.Encode())
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s for reading: %w", abs, err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	rdb.SetConnMaxLifetime(0)
	rdb.SetConnMaxIdleTime(0)

	cdb, err := sql.Open("sqlite", "file:"+abs+"?"+pragmas.Encode())
	if err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s for checkpoints: %w", abs, err)
	}
	cdb.SetMaxOpenConns(1)
	cp := startCheckpointer(cdb, opts.CheckpointInterval)

	bus := wakebus.New("sqlite")
	var socks *sockets
	if !opts.DisableWakes {
		// Where no socket can be made (a directory the process may not
		// write), the store works as before wakes: other processes poll.
		socks, _ = startWakes(bus, abs)
	}
	gc := sqlstore.NewInstrumentedGroupCommitter(wdb, opts.MaxBatch, sm)
	st := sqlstore.New(sqlstore.Config{
		Dialect: dialect,
		Writer:  gc,
		Read:    rdb,
		Wakes:   bus,
		Close: func() error {
			if socks != nil {
				socks.close()
			}
			cp.close()
			rerr := rdb.Close()
			werr := wdb.Close()
			if rerr != nil {
				return rerr
			}
			return werr
		},
	})
	return &Store{Store: st, path: abs, wakes: bus}, nil
}

// Path returns the database file's absolute path.
func (s *Store) Path() string { return s.path }

// checkpointer copies the WAL into the database file from its own
// connection, in PASSIVE mode, which never blocks the writer or readers.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	done chan struct{}
}

func startCheckpointer(db *sql.DB, every time.Duration) *checkpointer {
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
			// Busy or failed checkpoints are retried at the next tick; the
			// writer's autocheckpoint bounds the WAL if they keep failing.
			_, _ = c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
	}()
	return c
}

func (c *checkpointer) close() {
	close(c.stop)
	<-c.done
	_ = c.db.Close()
}
