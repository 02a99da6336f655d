package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Publish waits for a reviewer's verdict on a post.
type Publish struct{}

func (Publish) Run(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
	verdict, err := workflow.WaitForEvent[string](step, "review", workflow.WaitOptions{Type: "review"})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%q %s", ev.Payload, verdict), nil
}

// Instance control: pause an instance, send it an event while it is
// paused, resume it; terminate another.
func ExampleInstance_Pause() {
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
	workflow.MustRegister(eng, "Publish", workflow.Workflow[string, string](Publish{}))

	// Created before the engine starts, the instances are queued, so the
	// pause takes effect at once (a running instance would be
	// waitingForPause until its current step ended).
	post, err := eng.Create(ctx, "Publish", workflow.CreateOptions{ID: "post-1", Params: "Hello"})
	if err != nil {
		panic(err)
	}
	spam, err := eng.Create(ctx, "Publish", workflow.CreateOptions{ID: "post-2", Params: "Buy now"})
	if err != nil {
		panic(err)
	}
	if err := post.Pause(ctx); err != nil {
		panic(err)
	}
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	if err := spam.Terminate(ctx); err != nil {
		panic(err)
	}
	if _, err := workflow.Result[string](ctx, spam); errors.Is(err, workflow.ErrTerminated) {
		fmt.Println(spam.ID, "terminated")
	}

	s, err := post.Status(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(post.ID, s.Status)
	if err := post.SendEvent(ctx, "review", "approved"); err != nil { // kept until it waits
		panic(err)
	}
	if err := post.Resume(ctx); err != nil {
		panic(err)
	}
	out, err := workflow.Result[string](ctx, post)
	if err != nil {
		panic(err)
	}
	fmt.Println(post.ID, out)
	// Output:
	// post-2 terminated
	// post-1 paused
	// post-1 "Hello" approved
}
