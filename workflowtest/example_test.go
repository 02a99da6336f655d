package workflowtest_test

// These tests are the README's "Testing workflows" example. They are tests
// rather than Examples because workflowtest.New needs a testing.TB, which an
// Example function does not have.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/workflow"
	"agentflow/workflowtest"
)

// Order is what an Order instance is created with.
type Order struct {
	Item string `json:"item"`
}

// OrderFlow charges for an order, leaves three days to cancel it, and ships it.
type OrderFlow struct {
	Charges *atomic.Int32 // how many times the card was charged
}

func (f OrderFlow) Run(ctx context.Context, ev workflow.Event[Order], step *workflow.Step) (string, error) {
	if _, err := workflow.Do(step, "charge", func(ctx context.Context, a workflow.Attempt) (bool, error) {
		f.Charges.Add(1) // a real step would pass a.IdempotencyKey to the payment service
		return true, nil
	}); err != nil {
		return "", err
	}
	if err := step.Sleep("cool-off", 72*time.Hour); err != nil {
		return "", err
	}
	return workflow.Do(step, "ship", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return "shipped " + ev.Payload.Item, nil
	})
}

// A three-day sleep passes at once on the virtual clock.
func TestExampleThreeDaySleep(t *testing.T) {
	env := workflowtest.New(t, workflowtest.Options{})
	workflowtest.Register(env, "Order", workflow.Workflow[Order, string](OrderFlow{Charges: new(atomic.Int32)}))
	start := env.Clock.Now()
	run := env.Create("Order", Order{Item: "book"})
	status := run.Wait() // advances the virtual clock past the sleep
	var out string
	if err := run.Output(&out); err != nil {
		t.Fatalf("status %+v: %v", status, err)
	}
	if out != "shipped book" {
		t.Errorf("output = %q, want %q", out, "shipped book")
	}
	if passed := env.Clock.Since(start); passed < 72*time.Hour {
		t.Errorf("virtual time passed = %s, want at least 72h", passed)
	}
}

// Stopping a workflow right after a step, as a crash there would, and
// replaying it on a new engine: the step is not run again.
func TestExampleStopAfterRestart(t *testing.T) {
	env := workflowtest.New(t, workflowtest.Options{})
	flow := OrderFlow{Charges: new(atomic.Int32)}
	workflowtest.Register(env, "Order", workflow.Workflow[Order, string](flow))
	env.StopAfter("charge")
	run := env.Create("Order", Order{Item: "book"})
	run.Wait()    // stopped right after "charge" committed
	env.Restart() // a new engine takes over, as after a crash
	status := run.Wait()
	if status.Status != workflow.StatusComplete {
		t.Fatalf("status = %+v, want complete", status)
	}
	if n := flow.Charges.Load(); n != 1 {
		t.Errorf("charged %d times, want 1", n)
	}
}
