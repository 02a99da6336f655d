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

// Square squares its params in one step.
type Square struct{}

func (Square) Run(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
	return workflow.Do(step, "square", func(ctx context.Context, a workflow.Attempt) (int, error) {
		return ev.Payload * ev.Payload, nil
	})
}

// CreateBatch creates several instances in one write: all of them, or none.
func ExampleEngine_CreateBatch() {
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
	workflow.MustRegister(eng, "Square", workflow.Workflow[int, int](Square{}))
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	insts, err := eng.CreateBatch(ctx, "Square", []workflow.CreateOptions{
		{ID: "sq-2", Params: 2},
		{ID: "sq-3", Params: 3},
		{ID: "sq-4", Params: 4},
	})
	if err != nil {
		panic(err)
	}
	for _, inst := range insts {
		n, err := workflow.Result[int](ctx, inst)
		if err != nil {
			panic(err)
		}
		fmt.Println(inst.ID, n)
	}

	// One bad entry fails the whole batch: sq-5 is not created either.
	_, err = eng.CreateBatch(ctx, "Square", []workflow.CreateOptions{{ID: "sq-5", Params: 5}, {ID: "sq-2", Params: 2}})
	fmt.Println(errors.Is(err, workflow.ErrDuplicateID))
	_, err = eng.Get(ctx, "sq-5")
	fmt.Println(errors.Is(err, workflow.ErrNotFound))
	// Output:
	// sq-2 4
	// sq-3 9
	// sq-4 16
	// true
	// true
}
