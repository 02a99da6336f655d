package workflow_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"agentflow/store/sqlite"
	"agentflow/workflow"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "a.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(e, "w", workflow.Func[string, string](func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
		a, err := workflow.Do(step, "a", func(ctx context.Context, at workflow.Attempt) (string, error) { return "A" + ev.Payload, nil })
		if err != nil {
			return "", err
		}
		if err := step.Sleep("nap", 50*time.Millisecond); err != nil {
			return "", err
		}
		m, err := workflow.WaitForEvent[string](step, "ev", workflow.WaitOptions{Type: "go"})
		if err != nil {
			return "", err
		}
		return a + m, nil
	}))
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(ctx)
	inst, err := e.Create(ctx, "w", workflow.CreateOptions{Params: "x"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s, _ := inst.Status(ctx)
	t.Logf("status %+v", s)
	if err := inst.SendEvent(ctx, "go", "!"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		s, _ = inst.Status(ctx)
		if s.Status == workflow.StatusComplete {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("status %+v %s", s, s.Output)
	if string(s.Output) != `"Ax!"` {
		t.Fatal("bad")
	}
}
