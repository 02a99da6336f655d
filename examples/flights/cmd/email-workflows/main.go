// Command email-workflows is the other service of the flights example: a
// workflow engine of service "email-workflows" running the email workflow
// (class MyWorkflow) that the agents of flights-agents start through their
// EMAIL_WORKFLOW binding. It shares their store (--db, or --postgres and
// --schema) and prints each email instead of sending it. SIGINT or SIGTERM
// stops it.
package main

import (
	"context"
	"flag"
	"io"
	"os"

	"agentflow/examples/flights/email"
	"agentflow/examples/internal/service"
	"agentflow/workflow"
)

func main() {
	service.Main("email-workflows", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	})
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("email-workflows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "flights.db")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := service.Parse(fs, args); err != nil {
		return err
	}
	logger := service.Logger(stderr, *verbose)
	p := service.NewPrinter(stdout)

	st, where, err := storeFlags.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Service: email.Service, Hooks: p.StepHooks()})
	if err != nil {
		return err
	}
	if err := email.Register(eng, email.Printer{W: p}); err != nil {
		return err
	}
	return service.RunWorkflows(ctx, "email-workflows", p, eng, func() {
		p.Printf("email-workflows: engine %s of service %q on %s", eng.NodeID(), email.Service, where)
	})
}
