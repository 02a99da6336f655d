// Command agentflow is the agentflow server and toolbox.
//
//	agentflow dev    run the example workflows on an embedded SQLite file,
//	                 serve the example agents on --addr (127.0.0.1:8787) and
//	                 play the flights example with both of its services; the
//	                 example Think agent uses the model AGENTFLOW_MODEL_*
//	                 configure, or a scripted one (see README)
//	agentflow bench  measure the engine (see BENCHMARKS.md)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"agentflow/internal/bench"
	"agentflow/internal/crashtest"
)

const usage = `usage: agentflow <command> [flags]

commands:
  dev     run the example workflows on an embedded SQLite file and print their progress,
          serve the example agents at ws://127.0.0.1:8787/agents/counter/<name> (--addr),
          and play the flights example (an agent, its workflow, and another service's email workflow);
          the Think agent at ws://127.0.0.1:8787/agents/assistant/<name> answers with the model
          AGENTFLOW_MODEL_BASE_URL, AGENTFLOW_MODEL_API_KEY and AGENTFLOW_MODEL configure, or a scripted one
  bench   run a benchmark scenario: agentflow bench --backend sqlite|postgres --scenario NAME [--json]
`

func main() {
	// `agentflow bench --scenario recovery` runs this binary again as the
	// process it kills; that child must take over before anything else.
	if crashtest.IsChild() {
		crashtest.RunChild()
		return
	}
	// `--scenario agent-conns` measures a server it runs as this binary.
	if bench.IsChild() {
		bench.RunChild()
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "dev":
		err = runDev(ctx, args[1:], os.Getenv, stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "agentflow: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "agentflow %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
