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
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"agentflow/examples/flights/email"
	"agentflow/examples/internal/service"
	"agentflow/workflow"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "email-workflows: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("email-workflows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "flights.db")
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
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Service: email.Service, Hooks: workflow.Hooks{
		AfterStep: func(_ context.Context, s workflow.StepRef) error {
			p.Printf("%s %s: step %q done", s.Workflow, s.InstanceID, s.Name)
			return nil
		},
	}})
	if err != nil {
		return err
	}
	if err := email.Register(eng, email.Printer{W: p}); err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	p.Printf("email-workflows: engine %s of service %q on %s", eng.NodeID(), email.Service, where)
	<-ctx.Done()
	p.Printf("email-workflows: stopping")
	if err := service.Stop(ctx, eng.Stop); err != nil {
		return err
	}
	p.Printf("email-workflows: stopped")
	return nil
}
