// Package service is what the examples' two-service binaries (the flights
// example's and the triage example's, under examples/*/cmd) share: the
// signal handling, the flags that pick their shared store and join their
// cluster, a line printer, and the order in which an agent service or a
// workflow service starts, serves and stops.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"agentflow/agent"
	"agentflow/internal/httpserver"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Main runs a command: run, with a context that SIGINT or SIGTERM
// cancels. If run fails, Main prints its error after the command's name
// and exits 1.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Parse parses args with fs and refuses arguments after the flags.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// StoreFlags are --db, --postgres and --schema.
type StoreFlags struct {
	db, dsn, schema *string
}

// AddStoreFlags adds the store flags to fs; db is --db's default.
func AddStoreFlags(fs *flag.FlagSet, db string) *StoreFlags {
	return &StoreFlags{
		db:     fs.String("db", db, "SQLite database file, shared by both services (created if missing)"),
		dsn:    fs.String("postgres", "", "PostgreSQL DSN: share this database instead of the SQLite file"),
		schema: fs.String("schema", "", "PostgreSQL schema to use (created if missing); default the DSN's search path"),
	}
}

// Open opens the store the flags name and says which it is.
func (f *StoreFlags) Open(ctx context.Context) (store.Store, string, error) {
	if *f.dsn != "" {
		st, err := postgres.Open(ctx, *f.dsn, postgres.Options{Schema: *f.schema, MaxConns: 8})
		if err != nil {
			return nil, "", err
		}
		where := "PostgreSQL"
		if *f.schema != "" {
			where += " schema " + *f.schema
		}
		return st, where, nil
	}
	if *f.schema != "" {
		return nil, "", errors.New("--schema is for --postgres")
	}
	st, err := sqlite.Open(ctx, *f.db, sqlite.Options{})
	if err != nil {
		return nil, "", err
	}
	return st, "SQLite " + st.Path(), nil
}

// EnvClusterSecret is the environment variable --cluster-secret defaults to.
const EnvClusterSecret = "AGENTFLOW_CLUSTER_SECRET"

// ClusterFlags are --cluster-secret and, for a process that serves agents,
// --advertise.
type ClusterFlags struct {
	secret, advertise *string
}

// AddClusterFlags adds --cluster-secret to fs, and --advertise when serve
// is set (the process serves agents that other nodes must reach).
func AddClusterFlags(fs *flag.FlagSet, serve bool) *ClusterFlags {
	f := &ClusterFlags{secret: fs.String("cluster-secret", "",
		"secret shared by the processes of the cluster, which prove themselves to each other with it; default $"+EnvClusterSecret)}
	if serve {
		f.advertise = fs.String("advertise", "", `URL the other processes reach this one's agents at (default "http://<--addr>/agents")`)
	}
	return f
}

// Secret returns the cluster secret: the flag's, or else the environment's.
// It is required: without it the processes cannot call each other.
func (f *ClusterFlags) Secret(getenv func(string) string) (string, error) {
	s := *f.secret
	if s == "" {
		s = getenv(EnvClusterSecret)
	}
	if s == "" {
		return "", fmt.Errorf("--cluster-secret (or %s) is required: the services call each other's agents through the cluster", EnvClusterSecret)
	}
	return s, nil
}

// AdvertiseURL returns the URL to advertise: --advertise's, or else the
// agents handler on the address ln listens on.
func (f *ClusterFlags) AdvertiseURL(ln net.Listener) string {
	if f.advertise != nil && *f.advertise != "" {
		return *f.advertise
	}
	return "http://" + ln.Addr().String() + "/agents"
}

// Listen listens on addr, the --addr flag's value.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w (choose another address with --addr)", err)
	}
	return ln, nil
}

// Logger logs warnings (with verbose, debug messages) to w.
func Logger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Printer writes whole lines to W, one writer at a time, each prefixed
// with the time since it was made. As an io.Writer it writes what it is
// given unchanged, but never in between another write's bytes.
type Printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// NewPrinter returns a Printer on w.
func NewPrinter(w io.Writer) *Printer { return &Printer{w: w, start: time.Now()} }

// Printf prints one line.
func (p *Printer) Printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%7.3fs  %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Write implements io.Writer.
func (p *Printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}

// StepHooks are engine hooks that print each workflow step once it is
// done.
func (p *Printer) StepHooks() workflow.Hooks {
	return workflow.Hooks{
		AfterStep: func(_ context.Context, s workflow.StepRef) error {
			p.Printf("%s %s: step %q done", s.Workflow, s.InstanceID, s.Name)
			return nil
		},
	}
}

// Stop calls each stop in turn with ten seconds to finish, though ctx (the
// command's, cancelled by the signal) is done, and joins their errors.
func Stop(ctx context.Context, stops ...func(context.Context) error) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var errs []error
	for _, stop := range stops {
		errs = append(errs, stop(sctx))
	}
	return errors.Join(errs...)
}

// ServeAgents runs an agent service: it starts eng, then rt, then an HTTP
// server of rt's agents on ln, calls started (which says what it serves),
// and runs until ctx is done or the server fails. Then it stops the
// server, the runtime and the engine, in that order, printing name's
// "stopping" and, once all stopped cleanly, "stopped". The server's
// errors go to logger.
func ServeAgents(ctx context.Context, name string, p *Printer, logger *slog.Logger, eng *workflow.Engine, rt *agent.Runtime, ln net.Listener, started func()) error {
	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		_ = Stop(ctx, eng.Stop)
		return err
	}
	srv, err := httpserver.New(httpserver.Options{Handler: rt.Handler(agent.HandlerOptions{}),
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)})
	if err != nil {
		_ = Stop(ctx, rt.Stop, eng.Stop)
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	started()

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("server: %w", err)
	}
	p.Printf("%s: stopping", name)
	stopErr := Stop(ctx, srv.Shutdown, rt.Stop, eng.Stop)
	if errors.Is(stopErr, http.ErrServerClosed) {
		stopErr = nil
	}
	if err = errors.Join(err, stopErr); err != nil {
		return err
	}
	p.Printf("%s: stopped", name)
	return nil
}

// RunWorkflows runs a workflow service: it starts eng, calls started
// (which says what it runs), and runs until ctx is done. Then it stops
// the engine and calls each of after in turn, printing name's "stopping"
// and, once all stopped cleanly, "stopped".
func RunWorkflows(ctx context.Context, name string, p *Printer, eng *workflow.Engine, started func(), after ...func(context.Context) error) error {
	if err := eng.Start(ctx); err != nil {
		return err
	}
	started()
	<-ctx.Done()
	p.Printf("%s: stopping", name)
	if err := Stop(ctx, append([]func(context.Context) error{eng.Stop}, after...)...); err != nil {
		return err
	}
	p.Printf("%s: stopped", name)
	return nil
}
