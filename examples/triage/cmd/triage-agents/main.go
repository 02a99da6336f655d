// Command triage-agents is the agent service of the triage example's
// two-service variant (seed 001 across processes): a workflow engine of the
// default service and the agent runtime serving TriageAgent over HTTP, a
// node of the cluster. The triage workflow its agents start runs in the
// other service, triage-workflows, which shares its store and reaches the
// agent through the cluster — the prompt step's submission, the call that
// applies the labels — while its reports come through the store:
//
//	export AGENTFLOW_CLUSTER_SECRET=$(openssl rand -hex 16)
//	triage-agents    --db triage.db --addr 127.0.0.1:8789
//	triage-workflows --db triage.db
//	curl -X POST http://127.0.0.1:8789/agents/triage-agent/repo/issues/42          # {"workflowId":"wf_…"}
//	curl http://127.0.0.1:8789/agents/triage-agent/repo/state                      # the draft, once ready
//	curl -X POST http://127.0.0.1:8789/agents/triage-agent/repo/workflows/wf_…/approve
//
// Use --postgres DSN (and --schema) in both to share a PostgreSQL database
// instead. --advertise is the URL the other processes reach this one at
// (default http://<--addr>/agents). TriageAgent uses the model the
// assistant example's environment configures (see the README), and its
// own scripted model without one. SIGINT or SIGTERM stops the server, the
// runtime, then the engine.
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

	"agentflow/agent"
	"agentflow/examples/assistant"
	"agentflow/examples/internal/service"
	"agentflow/examples/triage"
	"agentflow/internal/httpserver"
	"agentflow/model/scripted"
	"agentflow/think"
	"agentflow/workflow"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "triage-agents: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("triage-agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "triage.db")
	clusterFlags := service.AddClusterFlags(fs, true)
	addr := fs.String("addr", "127.0.0.1:8789", "address the agents are served on")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	secret, err := clusterFlags.Secret(getenv)
	if err != nil {
		return err
	}
	provider, modelDesc, err := assistant.Provider(getenv)
	if err != nil {
		return fmt.Errorf("the model: %w", err)
	}
	if _, ok := provider.(*scripted.Model); ok {
		provider, modelDesc = triage.Scripted(), "scripted triage model (no provider configured)"
	}
	logger := service.Logger(stderr, *verbose)
	p := service.NewPrinter(stdout)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("%w (choose another address with --addr)", err)
	}
	defer ln.Close()
	st, where, err := storeFlags.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger})
	if err != nil {
		return err
	}
	advertise := clusterFlags.AdvertiseURL(ln)
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, AdvertiseURL: advertise, ClusterSecret: secret})
	if err != nil {
		return err
	}
	err = triage.RegisterAgent(rt, think.Options{Model: provider}, triage.AgentOptions{Service: triage.WorkflowService,
		Observe: func(name, line string) { p.Printf("%s %s: %s", triage.AgentClass, name, line) }})
	if err != nil {
		return err
	}

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
	p.Printf("triage-agents: engine %s on %s; other nodes reach its agents at %s", eng.NodeID(), where, advertise)
	p.Printf("triage-agents: %s uses the %s; %s runs in service %q", triage.AgentClass, modelDesc, triage.Binding, triage.WorkflowService)
	p.Printf("triage-agents: serving http://%s/agents/%s/<name> (POST issues/<n>; POST workflows/<id>/approve or reject; GET state)",
		ln.Addr(), agent.Kebab(triage.AgentClass))

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("server: %w", err)
	}
	p.Printf("triage-agents: stopping")
	stopErr := service.Stop(ctx, srv.Shutdown, rt.Stop, eng.Stop)
	if errors.Is(stopErr, http.ErrServerClosed) {
		stopErr = nil
	}
	if err = errors.Join(err, stopErr); err != nil {
		return err
	}
	p.Printf("triage-agents: stopped")
	return nil
}
