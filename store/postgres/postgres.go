// Package postgres is the store for several processes sharing one
// PostgreSQL database, through pgx v5.
//
// A write of several statements is a transaction of its own. The writes of
// one statement (the engine's hot path: create, claim, step checkpoints,
// suspend, finish) are committed in groups, each group one pipeline and one
// implicit transaction: one round trip and one commit for many writes (see
// pipeline). Rows other workers may touch are locked with FOR UPDATE, and
// due instances are claimed with FOR UPDATE SKIP LOCKED so that workers
// never wait on each other.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"runtime"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/metric"

	"agentflow/internal/sqlstore"
	"agentflow/internal/telemetry"
	"agentflow/internal/wakebus"
	"agentflow/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Options configure Open.
type Options struct {
	// Schema, when set, is created if missing and used as the search path,
	// so that several stores can share one database (tests use one each).
	Schema string
	// MaxConns caps the connection pool; default four per processor this
	// process may use (GOMAXPROCS), at least 8. Connections beyond a few
	// per core the server has only queue inside it: on a two-core machine
	// 8 ran ~20 % more Think turns and ~35 % more prompts a second than 32
	// (medians of three passes; BENCHMARKS.md, "PostgreSQL pool size").
	MaxConns int
	// GroupConns is how many groups of one-statement writes may be at the
	// server at once, each on a connection of the pool; default 2.
	GroupConns int
	// DisableWakes turns off LISTEN/NOTIFY (see Store.Subscribe), for a
	// server reached through a pooler that cannot keep a LISTEN session
	// (PgBouncer in transaction mode): the store then holds no connection
	// of its own outside the pool, and the other processes on the database
	// notice this one's work at their next poll.
	DisableWakes bool
	// MeterProvider, when set, records the groups' size and latency and the
	// failed writes (agentflow.store.*); nil records nothing.
	MeterProvider metric.MeterProvider
}

// maxGroup caps the writes committed in one group.
const maxGroup = 256

// Store is the PostgreSQL store. Its methods are those of store.Store, the
// interface the engine and the agent runtime run on, and Subscribe.
type Store struct {
	store.Store // the SQL implementation shared with store/sqlite
	wakes       *wakebus.Bus
}

var _ store.Waker = (*Store)(nil)

// Subscribe implements store.Waker: fn hears the wakes of the writes made
// through any handle on the same schema, in this process or another,
// through LISTEN/NOTIFY (see wakes.go). With Options.DisableWakes it hears
// only this handle's.
func (s *Store) Subscribe(fn func(store.Wake)) (cancel func()) { return s.wakes.Subscribe(fn) }

var dialect = &sqlstore.Dialect{
	Name:          "postgres",
	Numbered:      true,
	ForUpdate:     " FOR UPDATE",
	SkipLocked:    " FOR UPDATE SKIP LOCKED",
	MigrationLock: "SELECT pg_advisory_xact_lock(7306418290337714229)", // any fixed key; this one spells nothing
	WritableCTEs:  true,
	JSON:          sqlstore.JSONPostgres,
	// A transaction-level advisory lock on the two 32-bit hashes of the
	// agent's class and name (a key space apart from MigrationLock's
	// 64-bit one). Two agents whose hashes collide only wait for each other.
	AgentLock: "SELECT pg_advisory_xact_lock(hashtext(CAST(? AS TEXT)), hashtext(CAST(? AS TEXT)))",
}

// openDB opens the store's pool on cfg: its connections plan the store's
// statements for any parameters (genericPlans), unless cfg sets
// plan_cache_mode itself.
func openDB(cfg *pgx.ConnConfig) *sql.DB {
	var o []stdlib.OptionOpenDB
	if _, set := cfg.RuntimeParams["plan_cache_mode"]; !set {
		o = append(o, stdlib.OptionAfterConnect(genericPlans))
	}
	return stdlib.OpenDB(*cfg, o...)
}

// genericPlans sets a new connection to plan each prepared statement once,
// for any parameters, and keep that plan (plan_cache_mode =
// force_generic_plan).
//
// By default PostgreSQL plans a prepared statement for its parameters on
// each of its first five executions on a connection, and for good when the
// plan for any parameters looks costlier, which it does for a statement
// whose condition matches a partial index only for some values (a
// submission's status, say): across a pool of connections that planning
// was a quarter of the executions of the Think path, and as much server
// time as executing them. The store's statements are written so that the
// plan for any parameters is the right one, on tables never analyzed too
// (the fenced writes find their row by primary key whatever the owner;
// TestKeyLookupsUseTheirKey and TestHotStatementsUsePrimaryKeys check the
// plans under this setting). A SET, not a startup parameter, so that a
// pooler that refuses unknown startup parameters still connects.
func genericPlans(ctx context.Context, c *pgx.Conn) error {
	if err := c.PgConn().Exec(ctx, "SET plan_cache_mode = force_generic_plan").Close(); err != nil {
		return fmt.Errorf("postgres: set plan_cache_mode: %w", err)
	}
	return nil
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects to the database named by dsn (a PostgreSQL URL or key=value
// string), applies the embedded migrations, and refuses a database whose
// schema is newer than this binary (store.ErrSchemaTooNew). Its connections
// plan each statement once, for any parameters (plan_cache_mode =
// force_generic_plan), unless dsn sets plan_cache_mode.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: dsn: %w", err)
	}
	if opts.Schema != "" {
		if !schemaName.MatchString(opts.Schema) {
			return nil, fmt.Errorf("postgres: Options.Schema %q: must match %s", opts.Schema, schemaName)
		}
		cfg.RuntimeParams["search_path"] = opts.Schema
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if opts.GroupConns <= 0 {
		opts.GroupConns = 2
	}
	db := openDB(cfg)
	db.SetMaxOpenConns(opts.MaxConns)
	db.SetMaxIdleConns(opts.MaxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if opts.Schema != "" {
		if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+opts.Schema); err != nil {
			db.Close()
			return nil, fmt.Errorf("postgres: create schema %q: %w", opts.Schema, err)
		}
	}
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	ms, err := sqlstore.LoadMigrations(sub)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := sqlstore.Migrate(ctx, db, dialect, ms); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	var schema string
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: current schema: %w", err)
	}
	bus := wakebus.New(schema)
	closeDB := db.Close
	if !opts.DisableWakes {
		l := startWakes(ctx, bus, db, cfg)
		closeDB = func() error {
			l.close()
			return db.Close()
		}
	}
	sm, err := telemetry.NewStoreMetrics(opts.MeterProvider, "postgres")
	if err != nil {
		_ = closeDB()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pl := newPipeline(db, opts.GroupConns, maxGroup)
	pl.tel = sm
	st := sqlstore.New(sqlstore.Config{
		Dialect: dialect,
		Writer:  pl,
		Read:    db,
		Close:   closeDB,
		Wakes:   bus,
	})
	return &Store{Store: st, wakes: bus}, nil
}
