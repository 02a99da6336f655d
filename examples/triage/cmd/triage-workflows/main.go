// Command triage-workflows is the workflow service of the triage example's
// two-service variant: a workflow engine of service "triage-workflows"
// running TriageWorkflow, which the TriageAgents of triage-agents start
// through their TRIAGE_WORKFLOW binding. It shares their store (--db, or
// --postgres and --schema) and their cluster secret (--cluster-secret or
// AGENTFLOW_CLUSTER_SECRET), and hosts no agents: its agent runtime has no
// classes, so the workflow's prompt step and its call to ApplyLabels are
// sent to the node the agent is live on, and its reports reach the agent
// through the store. It prints each step and each workflow's end. SIGINT
// or SIGTERM stops it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"agentflow/agent"
	"agentflow/examples/internal/service"
	"agentflow/examples/triage"
	"agentflow/store"
	"agentflow/workflow"
)

func main() {
	service.Main("triage-workflows", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	})
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("triage-workflows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "triage.db")
	clusterFlags := service.AddClusterFlags(fs, false)
	verbose := fs.Bool("v", false, "log debug messages")
	if err := service.Parse(fs, args); err != nil {
		return err
	}
	secret, err := clusterFlags.Secret(getenv)
	if err != nil {
		return err
	}
	logger := service.Logger(stderr, *verbose)
	p := service.NewPrinter(stdout)

	st, where, err := storeFlags.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Service: triage.WorkflowService, Hooks: p.StepHooks()})
	if err != nil {
		return err
	}
	// Not started: it hosts no agents, and only sends their workflows'
	// calls to the nodes that do.
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, ClusterSecret: secret})
	if err != nil {
		return err
	}
	if err := triage.RegisterWorkflow(eng, rt); err != nil {
		return err
	}
	// Print each workflow's end (OnFinished must not block: the instance is
	// read on a goroutine of its own).
	var ends sync.WaitGroup
	eng.OnFinished(func(id string, origin store.AgentKey) {
		ends.Go(func() { printEnd(ctx, p, st, id, origin) })
	})
	return service.RunWorkflows(ctx, "triage-workflows", p, eng, func() {
		p.Printf("triage-workflows: engine %s of service %q on %s", eng.NodeID(), triage.WorkflowService, where)
	}, func(context.Context) error {
		ends.Wait() // the ends being printed, once the engine has stopped
		return nil
	})
}

// printEnd prints how instance id ended.
func printEnd(ctx context.Context, p *service.Printer, st store.Store, id string, origin store.AgentKey) {
	in, err := st.GetInstance(context.WithoutCancel(ctx), id)
	if err != nil {
		p.Printf("%s %s: finished (its row: %v)", triage.WorkflowClass, id, err)
		return
	}
	if in.Status != store.StatusComplete {
		p.Printf("%s %s: %s: %s: %s (told %s %s)", in.Workflow, id, in.Status, in.ErrorName, in.ErrorMessage, origin.Class, origin.Name)
		return
	}
	var r triage.Result
	if err := json.Unmarshal(in.Output, &r); err != nil {
		p.Printf("%s %s: complete with output %s", in.Workflow, id, in.Output)
		return
	}
	p.Printf("%s %s: complete: issue #%d, draft %q, labels applied: %s (told %s %s)", in.Workflow, id,
		r.IssueNumber, r.Draft.Title, fmt.Sprint(r.Labels), origin.Class, origin.Name)
}
