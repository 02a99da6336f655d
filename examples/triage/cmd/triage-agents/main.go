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
	"flag"
	"fmt"
	"io"
	"os"

	"agentflow/agent"
	"agentflow/examples/assistant"
	"agentflow/examples/internal/service"
	"agentflow/examples/triage"
	"agentflow/model/scripted"
	"agentflow/think"
	"agentflow/workflow"
)

func main() {
	service.Main("triage-agents", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	})
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("triage-agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "triage.db")
	clusterFlags := service.AddClusterFlags(fs, true)
	addr := fs.String("addr", "127.0.0.1:8789", "address the agents are served on")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := service.Parse(fs, args); err != nil {
		return err
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

	ln, err := service.Listen(*addr)
	if err != nil {
		return err
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

	return service.ServeAgents(ctx, "triage-agents", p, logger, eng, rt, ln, func() {
		p.Printf("triage-agents: engine %s on %s; other nodes reach its agents at %s", eng.NodeID(), where, advertise)
		p.Printf("triage-agents: %s uses the %s; %s runs in service %q", triage.AgentClass, modelDesc, triage.Binding, triage.WorkflowService)
		p.Printf("triage-agents: serving http://%s/agents/%s/<name> (POST issues/<n>; POST workflows/<id>/approve or reject; GET state)",
			ln.Addr(), agent.Kebab(triage.AgentClass))
	})
}
