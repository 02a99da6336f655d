// Command agentflow is the agentflow server and toolbox.
//
//	agentflow dev          run the example workflows on an embedded SQLite file,
//	                       serve the example agents and the operator API on --addr
//	                       (127.0.0.1:8787) and play the flights example with both of
//	                       its services; the example Think agent uses the model
//	                       AGENTFLOW_MODEL_* configure, or a scripted one (see README)
//	agentflow serve        serve the operator API (and dashboard) for an existing store
//	agentflow workflows    list, describe, create and control workflow instances
//	agentflow agents       list and describe agents
//	agentflow schedules    list an agent's schedules
//	agentflow submissions  list, describe and cancel a Think agent's submissions
//	agentflow bench        measure the engine (see BENCHMARKS.md)
//
// The commands that talk to a server take --server (default
// $AGENTFLOW_SERVER, else http://127.0.0.1:8787) and --token (default
// $AGENTFLOW_TOKEN). Exit codes: 0 ok, 1 a server or API error, 2 a usage
// error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"agentflow/internal/bench"
	"agentflow/internal/crashtest"
)

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

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the server, the store or the API said no
	exitUsage = 2 // the command line is wrong
)

// usageError is a command line that cannot be run: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, os.Getenv, stdout, stderr)
}

func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	root := newRoot(getenv, stdout, stderr)
	root.SetArgs(args)
	if len(args) == 0 {
		root.SetOut(stderr)
		root.Usage()
		return exitUsage
	}
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	name := "agentflow"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	var ue usageError
	switch {
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command "):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return exitError
}

func newRoot(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "agentflow",
		Short:         "agentflow: durable workflows and agents in Go — server and toolbox",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true

	root.AddCommand(&cobra.Command{
		Use:   "dev [flags]",
		Short: "Run the examples on an embedded SQLite file and serve their agents and the API",
		Long: `Run the example workflows on an embedded SQLite file and print their progress,
serve the example agents at ws://127.0.0.1:8787/agents/counter/<name> (--addr) and the
operator API (and dashboard) at http://127.0.0.1:8787/, and play the flights example (an
agent, its workflow, and another service's email workflow). The Think agent at
ws://127.0.0.1:8787/agents/assistant/<name> answers with the model AGENTFLOW_MODEL_BASE_URL,
AGENTFLOW_MODEL_API_KEY and AGENTFLOW_MODEL configure, or a scripted one.
Run 'agentflow dev -h' for its flags.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDev(cmd.Context(), args, getenv, stdout, stderr)
		},
	})
	root.AddCommand(&cobra.Command{
		Use:                "bench --backend sqlite|postgres --scenario NAME [--json]",
		Short:              "Run a benchmark scenario (see BENCHMARKS.md)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd.Context(), args, stdout, stderr)
		},
	})
	root.AddCommand(serveCommand(getenv, stdout, stderr))
	c := &cli{getenv: getenv, stdout: stdout}
	root.AddCommand(c.workflowsCommand(), c.agentsCommand(), c.schedulesCommand(), c.submissionsCommand(), c.outboxCommand())
	return root
}
