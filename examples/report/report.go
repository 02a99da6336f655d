// Package report is an example workflow of three steps whose first step
// fails once and succeeds on its retry.
package report

import (
	"context"
	"errors"
	"strings"
	"time"

	"agentflow/workflow"
)

// Name is the class name Report is registered under.
const Name = "Report"

// Report is the workflow class.
type Report struct{}

// Run implements workflow.Workflow.
func (Report) Run(ctx context.Context, ev workflow.Event[[]string], step *workflow.Step) (string, error) {
	retry := workflow.StepConfig{Retries: &workflow.Retries{Limit: 3, Delay: 500 * time.Millisecond, Backoff: workflow.BackoffConstant}}
	rows, err := workflow.DoWith(step, "fetch", retry, func(ctx context.Context, a workflow.Attempt) ([]string, error) {
		if a.Number == 1 {
			return nil, errors.New("source temporarily unavailable")
		}
		return ev.Payload, nil
	})
	if err != nil {
		return "", err
	}
	summary, err := workflow.Do(step, "summarize", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return strings.Join(rows, ", "), nil
	})
	if err != nil {
		return "", err
	}
	return workflow.Do(step, "publish", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return "report: " + summary, nil
	})
}
