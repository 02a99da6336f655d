package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Hello is a workflow class with one step.
type Hello struct{}

func (Hello) Run(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
	return workflow.Do(step, "greet", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return "hello " + ev.Payload, nil
	})
}

// Opening a SQLite store with options and closing it. The file is created
// and migrated on first open; an instance created before the store was
// closed runs once an engine starts on the file again.
func ExampleOpen() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentflow-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "app.db")

	st, err := sqlite.Open(ctx, path, sqlite.Options{
		Synchronous: sqlite.SynchronousNormal, // may lose the last commits on power loss, never on a crash
		ReadConns:   4,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(filepath.Base(st.Path()))
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	workflow.MustRegister(eng, "Hello", workflow.Workflow[string, string](Hello{}))
	// The engine is not started, so the instance stays queued.
	if _, err := eng.Create(ctx, "Hello", workflow.CreateOptions{ID: "hello-1", Params: "ada"}); err != nil {
		panic(err)
	}
	if err := st.Close(); err != nil {
		panic(err)
	}

	st, err = sqlite.Open(ctx, path, sqlite.Options{}) // the zero Options are the durable default
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, err = workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	workflow.MustRegister(eng, "Hello", workflow.Workflow[string, string](Hello{}))
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	inst, err := eng.Get(ctx, "hello-1")
	if err != nil {
		panic(err)
	}
	out, err := workflow.Result[string](ctx, inst)
	if err != nil {
		panic(err)
	}
	fmt.Println(inst.ID, out)
	// Output:
	// app.db
	// hello-1 hello ada
}
