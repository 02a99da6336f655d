package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Params are what a Signup instance is created with.
type Params struct{ Email string }

// Signup creates an account, waits out a grace period and then waits for
// the user to confirm their email.
type Signup struct {
	Grace time.Duration // 72 hours in production; milliseconds here
}

func (s Signup) Run(ctx context.Context, ev workflow.Event[Params], step *workflow.Step) (string, error) {
	id, err := workflow.Do(step, "create-account", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return createAccount(ctx, ev.Payload.Email, a.IdempotencyKey) // retried with backoff on error
	})
	if err != nil {
		return "", err
	}
	if err := step.Sleep("grace-period", s.Grace); err != nil { // no goroutine, no memory while asleep
		return "", err
	}
	ok, err := workflow.WaitForEvent[bool](step, "confirm", workflow.WaitOptions{Type: "email-confirmed", Timeout: 24 * time.Hour})
	if errors.Is(err, workflow.ErrTimeout) {
		return "unconfirmed", nil
	}
	if err != nil {
		return "", err
	}
	if !ok {
		return "declined", nil
	}
	return "welcome, " + id, nil
}

// createAccount stands for a call to another system. A real one would pass
// the idempotency key on, so that an attempt cut off by a crash and run
// again creates one account.
func createAccount(_ context.Context, email, _ string) (string, error) {
	name, _, _ := strings.Cut(email, "@")
	return name, nil
}

// A workflow class with a step, a sleep and a wait for an event, run by a
// real engine on a SQLite file. The event is sent before the instance
// waits for it; it is buffered until then.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentflow-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{}) // or postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	workflow.MustRegister(eng, "Signup", workflow.Workflow[Params, string](Signup{Grace: 20 * time.Millisecond}))
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	inst, err := eng.Create(ctx, "Signup", workflow.CreateOptions{Params: Params{Email: "ada@example.com"}})
	if err != nil {
		panic(err)
	}
	if err := inst.SendEvent(ctx, "email-confirmed", true); err != nil {
		panic(err)
	}
	out, err := workflow.Result[string](ctx, inst) // waits for the instance to finish
	if err != nil {
		panic(err)
	}
	fmt.Println(out)

	steps, err := inst.Steps(ctx)
	if err != nil {
		panic(err)
	}
	for _, s := range steps {
		fmt.Println(s.Kind, s.Name)
	}
	// Output:
	// welcome, ada
	// do create-account
	// sleep grace-period
	// wait confirm
}
