package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Order is what a Checkout instance is created with.
type Order struct {
	Item string
	Card string
}

// CardDeclinedError is a failure that retrying cannot fix. Its ErrorName is
// the name the engine records for it.
type CardDeclinedError struct{ Card string }

func (e *CardDeclinedError) Error() string     { return "card " + e.Card + " was declined" }
func (e *CardDeclinedError) ErrorName() string { return "CardDeclined" }

// Checkout reserves the item with a flaky inventory service, retried, and
// then charges the card, which is not retried when it is declined.
type Checkout struct{}

func (Checkout) Run(ctx context.Context, ev workflow.Event[Order], step *workflow.Step) (string, error) {
	cfg := workflow.StepConfig{
		Retries: &workflow.Retries{Limit: 3, Delay: 10 * time.Millisecond, Backoff: workflow.BackoffConstant},
		Timeout: time.Second, // per attempt
	}
	_, err := workflow.DoWith(step, "reserve", cfg, func(ctx context.Context, a workflow.Attempt) (bool, error) {
		if a.Number < 3 {
			fmt.Printf("reserve %s: attempt %d failed\n", ev.Payload.Item, a.Number)
			return false, errors.New("inventory unavailable") // retried after Delay
		}
		fmt.Printf("reserve %s: attempt %d succeeded\n", ev.Payload.Item, a.Number)
		return true, nil
	})
	if err != nil {
		return "", err
	}
	_, err = workflow.DoWith(step, "charge", cfg, func(ctx context.Context, a workflow.Attempt) (string, error) {
		return "", workflow.NonRetryable(&CardDeclinedError{Card: ev.Payload.Card}) // fails the step at once
	})
	var se *workflow.StepError // the same on every replay; the original error value is not kept
	if errors.As(err, &se) && se.Name == "CardDeclined" {
		return fmt.Sprintf("%s failed after %d attempt: %s", se.Step, se.Attempts, se.Message), nil
	}
	if err != nil {
		return "", err // the instance ends errored
	}
	return "paid", nil
}

// Retries with DoWith, a non-retryable error, and a *StepError handled in
// Run.
func ExampleDoWith() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentflow-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	workflow.MustRegister(eng, "Checkout", workflow.Workflow[Order, string](Checkout{}))
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	inst, err := eng.Create(ctx, "Checkout", workflow.CreateOptions{Params: Order{Item: "book", Card: "4000-0002"}})
	if err != nil {
		panic(err)
	}
	out, err := workflow.Result[string](ctx, inst)
	if err != nil {
		panic(err)
	}
	fmt.Println(out)
	// Output:
	// reserve book: attempt 1 failed
	// reserve book: attempt 2 failed
	// reserve book: attempt 3 succeeded
	// charge failed after 1 attempt: card 4000-0002 was declined
}
