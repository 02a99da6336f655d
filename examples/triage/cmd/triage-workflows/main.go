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
	// Print each workflow's end: the first step of an instance run here
	// starts a wait for it, which lasts until the engine has stopped.
	waits, endWaits := context.WithCancel(context.WithoutCancel(ctx))
	defer endWaits()
	var (
		eng     *workflow.Engine
		ends    sync.WaitGroup
		watched sync.Map // instance ids
	)
	hooks := p.StepHooks()
	hooks.BeforeStep = func(_ context.Context, s workflow.StepRef) error {
		if _, seen := watched.LoadOrStore(s.InstanceID, true); !seen {
			ends.Go(func() {
				printEnd(waits, p, eng, st, s.InstanceID)
				watched.Delete(s.InstanceID)
			})
		}
		return nil
	}
	eng, err = workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Service: triage.WorkflowService, Hooks: hooks})
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
	return service.RunWorkflows(ctx, "triage-workflows", p, eng, func() {
		p.Printf("triage-workflows: engine %s of service %q on %s", eng.NodeID(), triage.WorkflowService, where)
	}, func(context.Context) error {
		endWaits() // the engine has stopped: what has not finished finishes elsewhere
		ends.Wait()
		return nil
	})
}

// printEnd waits for instance id to finish, until ctx ends, and prints how
// it ended.
func printEnd(ctx context.Context, p *service.Printer, eng *workflow.Engine, st store.Store, id string) {
	inst, err := eng.Get(ctx, id)
	if err != nil {
		return
	}
	if _, err := inst.Wait(ctx); err != nil {
		return
	}
	in, err := st.GetInstance(context.WithoutCancel(ctx), id)
	if err != nil {
		p.Printf("%s %s: finished (its row: %v)", triage.WorkflowClass, id, err)
		return
	}
	if in.Status != store.StatusComplete {
		p.Printf("%s %s: %s: %s: %s (told %s %s)", in.Workflow, id, in.Status, in.ErrorName, in.ErrorMessage, in.Origin.Class, in.Origin.Name)
		return
	}
	var r triage.Result
	if err := json.Unmarshal(in.Output, &r); err != nil {
		p.Printf("%s %s: complete with output %s", in.Workflow, id, in.Output)
		return
	}
	p.Printf("%s %s: complete: issue #%d, draft %q, labels applied: %s (told %s %s)", in.Workflow, id,
		r.IssueNumber, r.Draft.Title, fmt.Sprint(r.Labels), in.Origin.Class, in.Origin.Name)
}
