// Package crashtest proves the durability contract of DESIGN §2.3 with real
// crashes: a child process running the workflow engine is killed with
// SIGKILL at chosen or random points and restarted, and an audit log kept
// outside the engine's transactions shows afterwards that
//
//   - no step that returned ran again,
//   - every instance finished with the expected output (none was lost),
//   - a step cut off by a crash ran again with the same idempotency key and
//     attempt number, and
//   - the effect each step applies under its idempotency key exists exactly
//     once.
//
// The child is the current executable run again (os.Executable) with the
// environment variable EnvChild holding its configuration. A program that
// uses this package must therefore hand control to the child first thing:
//
//	func main() {
//		if crashtest.IsChild() {
//			crashtest.RunChild()
//			return
//		}
//		...
//	}
//
// and so must a test binary, in TestMain. Nothing happens at init.
//
// The workflow the child runs (class Workflow) does, for every instance,
// Do("a"), Do("loop") twice, Sleep("nap"), Do("flaky") (whose first attempt
// fails and is retried after a short delay) and Do("final"). Each step
// function first records its execution in the audit log, then applies its
// effect (an insert keyed by the idempotency key that does nothing when the
// key is already there). Right after each Do returns, the workflow code
// records a "returned" marker for the step (outside any step, so it is
// recorded again on replay; the first one counts).
//
// Kill points: the child kills itself with SIGKILL at the n-th BeforeStep
// hook (inside a step, before its function), at the n-th step function after
// it recorded its execution (and, on some lives, after it applied its
// effect), or at the n-th AfterStep hook (the step's checkpoint is durable
// but Do has not returned: between a commit and its acknowledgement); or the
// parent kills it at a random time. See Scenario and Run.
//
// On SQLite the audit log is a second database file with its own connection
// (synchronous=FULL); on PostgreSQL it is two tables beside the engine's,
// written on their own connections (synchronous_commit=off: they must
// survive the child's death, not the server's). Check (or Monitor.Check)
// reads it back into a Report.
//
// Entry points: Run runs a whole scenario (children, kills, restarts,
// check); Recovery is the bench's recovery scenario (kill -9 with thousands
// of instances in flight, restart, time to all complete); StartChild and
// Monitor are the parts, for tests that orchestrate children themselves.
package crashtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" driver for the audit file

	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// EnvChild is the environment variable that makes a process a crashtest
// child; it holds the child's configuration as JSON.
const EnvChild = "AGENTFLOW_CRASHTEST_CHILD"

// Workflow is the name of the workflow class the child registers.
const Workflow = "crashtest"

// Backend names a store implementation.
type Backend string

// Backends.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// Target is the store the children share and where the audit log lives.
type Target struct {
	Backend Backend

	// SQLitePath is the engine's database file (SQLite).
	SQLitePath string
	// SQLiteSynchronous is the engine store's synchronous setting; default
	// FULL. The audit file is always FULL.
	SQLiteSynchronous string
	// AuditPath is the audit database file (SQLite); default SQLitePath
	// with ".audit" appended.
	AuditPath string

	// DSN and Schema locate the PostgreSQL database. Schema is required:
	// the engine's tables and the audit tables live in it.
	DSN    string
	Schema string
}

func (t Target) auditPath() string {
	if t.AuditPath != "" {
		return t.AuditPath
	}
	return t.SQLitePath + ".audit"
}

var schemaPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (t Target) validate() error {
	switch t.Backend {
	case SQLite:
		if t.SQLitePath == "" {
			return errors.New("crashtest: Target.SQLitePath is required for SQLite")
		}
	case Postgres:
		if t.DSN == "" {
			return errors.New("crashtest: Target.DSN is required for PostgreSQL")
		}
		if !schemaPattern.MatchString(t.Schema) {
			return fmt.Errorf("crashtest: Target.Schema %q must match %s", t.Schema, schemaPattern)
		}
	default:
		return fmt.Errorf("crashtest: unknown backend %q (want %q or %q)", t.Backend, SQLite, Postgres)
	}
	return nil
}

// openStore opens the engine's store (running its migrations).
func (t Target) openStore(ctx context.Context, maxConns int) (store.Store, error) {
	switch t.Backend {
	case SQLite:
		return sqlite.Open(ctx, t.SQLitePath, sqlite.Options{Synchronous: sqlite.Synchronous(t.SQLiteSynchronous)})
	case Postgres:
		return postgres.Open(ctx, t.DSN, postgres.Options{Schema: t.Schema, MaxConns: maxConns})
	}
	return nil, t.validate()
}

// openDB opens a plain connection pool on the engine's database, for the
// parent's queries (SQLite: query-only).
func (t Target) openDB(ctx context.Context, maxConns int) (*sql.DB, error) {
	var db *sql.DB
	switch t.Backend {
	case SQLite:
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "query_only(1)")
		var err error
		if db, err = sql.Open("sqlite", "file:"+t.SQLitePath+"?"+q.Encode()); err != nil {
			return nil, err
		}
	case Postgres:
		cfg, err := pgx.ParseConfig(t.DSN)
		if err != nil {
			return nil, fmt.Errorf("crashtest: dsn: %w", err)
		}
		cfg.RuntimeParams["search_path"] = t.Schema
		db = stdlib.OpenDB(*cfg)
	default:
		return nil, t.validate()
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Prepare creates the engine's tables (by opening the store once) and the
// audit tables, so that children started together never race to create
// them. Run and Recovery call it; call it yourself only when starting
// children with StartChild.
func Prepare(ctx context.Context, t Target) error {
	if err := t.validate(); err != nil {
		return err
	}
	if t.Backend == Postgres {
		db, err := openPG(ctx, t.DSN, "", 1)
		if err != nil {
			return fmt.Errorf("crashtest: prepare: %w", err)
		}
		_, err = db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+t.Schema)
		db.Close()
		if err != nil {
			return fmt.Errorf("crashtest: create schema %s: %w", t.Schema, err)
		}
	}
	st, err := t.openStore(ctx, 2)
	if err != nil {
		return fmt.Errorf("crashtest: prepare store: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("crashtest: prepare store: %w", err)
	}
	a, err := openAudit(ctx, t, 1)
	if err != nil {
		return fmt.Errorf("crashtest: prepare audit: %w", err)
	}
	defer a.close()
	if err := a.createTables(ctx); err != nil {
		return fmt.Errorf("crashtest: prepare audit: %w", err)
	}
	return nil
}

// openPG opens a pool on dsn with schema as the search path (if set) and
// the given run-time parameters (name, value, …).
func openPG(ctx context.Context, dsn, schema string, maxConns int, params ...string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	if schema != "" {
		cfg.RuntimeParams["search_path"] = schema
	}
	for i := 0; i+1 < len(params); i += 2 {
		cfg.RuntimeParams[params[i]] = params[i+1]
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// KillPoint is where a child kills itself.
type KillPoint string

// Kill points.
const (
	// KillNone: the child runs until stopped.
	KillNone KillPoint = ""
	// KillBeforeStep: in the BeforeStep hook, i.e. inside a step that has
	// not called its function yet.
	KillBeforeStep KillPoint = "before"
	// KillInStep: inside the step function, after it recorded its
	// execution (and, when ChildConfig.Seed is odd, after it also applied
	// its effect).
	KillInStep KillPoint = "in"
	// KillAfterStep: in the AfterStep hook: the step's checkpoint is
	// durable but Do has not returned.
	KillAfterStep KillPoint = "after"
)

// ChildConfig is what a child runs with; StartChild passes it in EnvChild.
type ChildConfig struct {
	Target Target

	// NodeID is the engine's node id; default a random one.
	NodeID string
	// Prefix starts every instance id; default "ct".
	Prefix string
	// Create, when positive, makes the child ensure that instances
	// <Prefix>-00000 … <Prefix>-<Create-1> exist, in batches of 100 that
	// are skipped when they already exist, right after the engine starts.
	Create int

	// Kill is where the child kills itself: at the KillAt-th time (1-based)
	// it reaches that point. Seed varies details (see KillInStep).
	Kill   KillPoint
	KillAt int
	Seed   int64

	// Engine options; zero takes the engine's default.
	Lease         time.Duration
	PollInterval  time.Duration
	MaxConcurrent int
	// MaxConns caps the PostgreSQL store's pool; default 16 (the audit log
	// has 4 more).
	MaxConns int

	// Sleep is the workflow's Sleep("nap") and RetryDelay the delay before
	// the flaky step's second attempt. Zero sleeps not at all and retries
	// at once.
	Sleep      time.Duration
	RetryDelay time.Duration

	// LogLevel is the child's slog level: "debug", "info", "warn" (the
	// default) or "error".
	LogLevel string
}

func (c *ChildConfig) defaults() {
	if c.Prefix == "" {
		c.Prefix = "ct"
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 16
	}
}

// IsChild reports whether this process was started as a crashtest child.
func IsChild() bool {
	_, ok := os.LookupEnv(EnvChild)
	return ok
}

func childConfigFromEnv() (ChildConfig, error) {
	var c ChildConfig
	if err := json.Unmarshal([]byte(os.Getenv(EnvChild)), &c); err != nil {
		return c, fmt.Errorf("decode %s: %w", EnvChild, err)
	}
	c.defaults()
	return c, c.Target.validate()
}

// InstanceID returns the id of the i-th instance under prefix.
func InstanceID(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// Expected output of an instance.
func expectedOutput(id string) string { return "A:" + id + ",L0,L1,F2" }

// stepKey is one Do step of an instance: its name and occurrence.
type stepKey struct {
	name string
	occ  int
}

// doSteps are the Do steps every instance runs, in order.
var doSteps = []stepKey{{"a", 0}, {"loop", 0}, {"loop", 1}, {"flaky", 0}, {"final", 0}}

// StepsPerInstance is the number of Do steps each instance runs.
const StepsPerInstance = 5

func idemKey(instance, step string, occ int) string {
	return fmt.Sprintf("%s:%s:%d", instance, step, occ)
}
