// Command flights-agents is the agent service of the flights example (the
// seed document of SPEC §3.5): a workflow engine of the default service
// with the flight workflow, and the agent runtime serving MyAgent over HTTP.
// The email workflow it starts runs in the other service, email-workflows,
// which shares its store:
//
//	flights-agents  --db flights.db --addr 127.0.0.1:8788 --delay 5s --check-in-wait 2s
//	email-workflows --db flights.db
//	curl -X POST -H 'user-id: ada' http://127.0.0.1:8788/agents/my-agent/trip
//	curl http://127.0.0.1:8788/agents/my-agent/trip/state
//
// Use --postgres DSN (and --schema) in both to share a PostgreSQL database
// instead. SIGINT or SIGTERM stops the server, the runtime, then the engine.
package main

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
	"syscall"
	"time"

	"agentflow/agent"
	"agentflow/examples/flights"
	"agentflow/examples/internal/service"
	"agentflow/internal/httpserver"
	"agentflow/workflow"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "flights-agents: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flights-agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "flights.db")
	addr := fs.String("addr", "127.0.0.1:8788", "address the agents are served on")
	delay := fs.Duration("delay", 300*time.Second, "how long after a request the flight workflow starts")
	checkIn := fs.Duration("check-in-wait", 20*time.Minute, "how long the flight workflow sleeps before checking in")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	logger := service.Logger(stderr, *verbose)
	p := service.NewPrinter(stdout)

	st, where, err := storeFlags.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Hooks: workflow.Hooks{
		AfterStep: func(_ context.Context, s workflow.StepRef) error {
			p.Printf("%s %s: step %q done", s.Workflow, s.InstanceID, s.Name)
			return nil
		},
	}})
	if err != nil {
		return err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger})
	if err != nil {
		return err
	}
	err = flights.Register(eng, rt, flights.Options{Delay: *delay, CheckInWait: *checkIn,
		Observe: func(name, line string) { p.Printf("%s %s: %s", flights.AgentClass, name, line) }})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("%w (choose another address with --addr)", err)
	}
	defer ln.Close()

	if err := eng.Start(ctx); err != nil {
		return err
	}
	if err := rt.Start(ctx); err != nil {
		_ = service.Stop(ctx, eng.Stop)
		return err
	}
	srv, err := httpserver.New(httpserver.Options{Handler: rt.Handler(agent.HandlerOptions{}),
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)})
	if err != nil {
		_ = service.Stop(ctx, rt.Stop, eng.Stop)
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	p.Printf("flights-agents: engine %s on %s", eng.NodeID(), where)
	p.Printf("flights-agents: serving http://%s/agents/%s/<name> (POST with a user-id header; GET <name>/state)", ln.Addr(), agent.Kebab(flights.AgentClass))

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("server: %w", err)
	}
	p.Printf("flights-agents: stopping")
	stopErr := service.Stop(ctx, srv.Shutdown, rt.Stop, eng.Stop)
	if errors.Is(stopErr, http.ErrServerClosed) {
		stopErr = nil
	}
	if err = errors.Join(err, stopErr); err != nil {
		return err
	}
	p.Printf("flights-agents: stopped")
	return nil
}
