package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/metric"
	"go.yaml.in/yaml/v4"

	"agentflow/admin"
	"agentflow/internal/bearer"
	"agentflow/internal/httpserver"
	"agentflow/internal/telemetry"
	"agentflow/internal/telemetry/promexport"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// The environment variables of serve's --store, --addr and --config.
const (
	envStore  = "AGENTFLOW_STORE"
	envAddr   = "AGENTFLOW_ADDR"
	envConfig = "AGENTFLOW_CONFIG"
)

// serveConfig is serve's optional configuration file (--config): YAML
// (or JSON, which is YAML) with the flags' names as keys. A flag or an
// environment variable overrides the file.
type serveConfig struct {
	Store string `yaml:"store"`
	Addr  string `yaml:"addr"`
	Token string `yaml:"token"`
}

// readServeConfig reads the configuration file at path; an unknown key is
// an error that names it, so a typo does not silently fall back to a
// default.
func readServeConfig(path string) (serveConfig, error) {
	var c serveConfig
	f, err := os.Open(path)
	if err != nil {
		return c, usagef("--config: %v", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, usagef("--config %s: %v (keys: store, addr, token)", path, err)
	}
	return c, nil
}

func serveCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var storeFlag, addr, token, config string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "serve --store PATH|postgres://... [--addr HOST:PORT] [--token TOKEN]",
		Short: "Serve the operator API (and dashboard) for an existing store, without running workers",
		Long: `Serve the operator API at /api/v1/ (and the dashboard at /) for an existing store: a
SQLite file or a PostgreSQL database. Operators list, inspect and control a whole cluster
with it; no workflow or agent runs here, and the cluster's engines hear of a change through
the store's wake-ups. Flags default to $AGENTFLOW_STORE, $AGENTFLOW_ADDR and $AGENTFLOW_TOKEN,
then to the keys store, addr and token of the YAML file --config (or $AGENTFLOW_CONFIG) names.`,
		Args: args(0, "no arguments (the store is --store)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var file serveConfig
			if !cmd.Flags().Changed("config") {
				config = getenv(envConfig)
			}
			if config != "" {
				var err error
				if file, err = readServeConfig(config); err != nil {
					return err
				}
			}
			// A flag given wins, then its environment variable, then the
			// file, then the flag's default.
			flagOr := func(name, v, env, fromFile string) string {
				if cmd.Flags().Changed(name) {
					return v
				}
				if e := getenv(env); e != "" {
					return e
				}
				if fromFile != "" {
					return fromFile
				}
				return v
			}
			storeFlag = flagOr("store", storeFlag, envStore, file.Store)
			addr = flagOr("addr", addr, envAddr, file.Addr)
			token = flagOr("token", token, envToken, file.Token)
			if storeFlag == "" {
				return usagef("--store (or $%s) is required: a SQLite file or a postgres:// URL", envStore)
			}
			if token != "" {
				if _, err := bearer.New(token); err != nil {
					return usagef("--token: %v", err)
				}
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			return runServe(cmd.Context(), storeFlag, addr, token, logger, stdout)
		},
	}
	cmd.Flags().StringVar(&storeFlag, "store", "", "the store: a SQLite file, or a postgres:// URL (default $"+envStore+")")
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8787", "the address to listen on (default $"+envAddr+", else 127.0.0.1:8787)")
	cmd.Flags().StringVar(&token, "token", "", "the bearer token API clients must send (default $"+envToken+"; none when both are empty)")
	cmd.Flags().StringVar(&config, "config", "", "a YAML file with the keys store, addr and token, below the flags and environment variables (default $"+envConfig+")")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log debug messages")
	return cmd
}

// openStore opens the PostgreSQL store a postgres:// URL names, or the
// existing SQLite file at a path.
func openStore(ctx context.Context, where string, mp metric.MeterProvider) (store.Store, string, error) {
	if strings.HasPrefix(where, "postgres://") || strings.HasPrefix(where, "postgresql://") {
		st, err := postgres.Open(ctx, where, postgres.Options{MeterProvider: mp})
		if err != nil {
			return nil, "", fmt.Errorf("--store: %w", err)
		}
		desc := "PostgreSQL"
		if u, err := url.Parse(where); err == nil && u.Host != "" {
			desc = "PostgreSQL at " + u.Host + u.Path
		}
		return st, desc, nil
	}
	// serve inspects a store that exists: a mistyped path is an error, not
	// a new empty database.
	if _, err := os.Stat(where); err != nil {
		return nil, "", usagef("--store %q: %v (serve opens an existing SQLite file or a postgres:// URL)", where, errors.Unwrap(err))
	}
	st, err := sqlite.Open(ctx, where, sqlite.Options{MeterProvider: mp})
	if err != nil {
		return nil, "", fmt.Errorf("--store: %w", err)
	}
	return st, st.Path(), nil
}

func runServe(ctx context.Context, where, addr, token string, logger *slog.Logger, stdout io.Writer) error {
	prom, err := promexport.New()
	if err != nil {
		return err
	}
	defer prom.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // nothing to flush
	st, desc, err := openStore(ctx, where, prom.MeterProvider)
	if err != nil {
		return err
	}
	defer st.Close()
	// No engine runs here: the gauge of instances by status comes from the
	// store directly (the store's metrics cover the controls' writes).
	tel, err := telemetry.New(nil, prom.MeterProvider)
	if err != nil {
		return err
	}
	unreg, err := tel.ObserveInstances(15*time.Second, time.Now, func(ctx context.Context) (map[string]int, error) {
		return telemetry.CountByStatus(ctx, st)
	})
	if err != nil {
		return err
	}
	defer unreg()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%w (choose another address with --addr)", err)
	}
	defer ln.Close()
	srv, err := httpserver.New(httpserver.Options{
		Handler:  withMetrics(admin.NewHandler(admin.Options{Store: st, Token: token, Logger: logger}), prom.Handler, token),
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "agentflow serve: %s\n", desc)
	fmt.Fprintf(stdout, "api: %s%s/  (agentflow workflows list --server %s)\n", base, admin.APIPrefix, base)
	fmt.Fprintf(stdout, "dashboard: %s/\n", base)
	fmt.Fprintf(stdout, "metrics: %s/metrics  (Prometheus text format)\n", base)
	if token != "" {
		fmt.Fprintf(stdout, "clients must send the token: -H 'Authorization: Bearer <token>', or --token / $%s\n", envToken)
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	stopWithin(ctx, logger, "the server", srv.Shutdown)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// withMetrics serves metrics at /metrics, behind the token when there is
// one (Prometheus sends it with its scrape config's authorization), and
// everything else with h.
func withMetrics(h, metrics http.Handler, token string) http.Handler {
	tok, _ := bearer.New(token) // checked already; nil for none
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok != nil && !tok.Check(w, r) {
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	return mux
}
