package main

import (
	"context"
	"io"

	"agentflow/internal/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Main(ctx, args, stdout, stderr)
}
