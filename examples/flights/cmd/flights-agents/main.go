// Command flights-agents is the agent service of the flights example (the
// first walkthrough of docs/DESIGN.md §3.5): a workflow engine of the default service
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
	"flag"
	"io"
	"os"
	"time"

	"agentflow/agent"
	"agentflow/examples/flights"
	"agentflow/examples/internal/service"
	"agentflow/workflow"
)

func main() {
	service.Main("flights-agents", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	})
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flights-agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags := service.AddStoreFlags(fs, "flights.db")
	addr := fs.String("addr", "127.0.0.1:8788", "address the agents are served on")
	delay := fs.Duration("delay", 300*time.Second, "how long after a request the flight workflow starts")
	checkIn := fs.Duration("check-in-wait", 20*time.Minute, "how long the flight workflow sleeps before checking in")
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
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Hooks: p.StepHooks()})
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
	ln, err := service.Listen(*addr)
	if err != nil {
		return err
	}
	defer ln.Close()

	return service.ServeAgents(ctx, "flights-agents", p, logger, eng, rt, ln, func() {
		p.Printf("flights-agents: engine %s on %s", eng.NodeID(), where)
		p.Printf("flights-agents: serving http://%s/agents/%s/<name> (POST with a user-id header; GET <name>/state)", ln.Addr(), agent.Kebab(flights.AgentClass))
	})
}
