package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"agentflow/agent"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Reminder schedules its own Remind method.
type Reminder struct {
	agent.Agent[struct{}]
	reminded chan<- string // given by the init function passed to Register
}

// RemindLater schedules Remind with note, once, after a delay.
func (r *Reminder) RemindLater(ctx context.Context, note string) (string, error) {
	s, err := r.Schedule(ctx, agent.After(20*time.Millisecond), "remind", note) // agent.After(5*time.Minute) in real life
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("scheduled %s (%s)", s.Method, s.Kind), nil
}

// Remind is called by the schedule, holding the instance's lock like any
// call.
func (r *Reminder) Remind(ctx context.Context, note string) error {
	r.reminded <- note
	return nil
}

// An agent scheduling one of its methods. Schedules are rows in the store:
// they survive restarts, and an idle agent with schedules costs no memory.
func ExampleAgent_Schedule() {
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
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		panic(err)
	}
	reminded := make(chan string, 1)
	agent.MustRegister[Reminder](rt, "Reminder", agent.ClassOptions{}, func(r *Reminder) { r.reminded = reminded })
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if err := rt.Start(ctx); err != nil {
		panic(err)
	}
	defer rt.Stop(ctx)

	msg, err := agent.Call(ctx, rt, "ada", (*Reminder).RemindLater, "water the plants")
	if err != nil {
		panic(err)
	}
	fmt.Println(msg)
	select {
	case note := <-reminded:
		fmt.Println("reminded:", note)
	case <-time.After(5 * time.Second):
		fmt.Println("no reminder")
	}

	// The method and the payload's type are checked when the schedule is
	// made; nothing is stored for a bad one.
	_, err = agent.With(ctx, rt, "ada", func(ctx context.Context, r *Reminder) (agent.ScheduleInfo, error) {
		return r.Schedule(ctx, agent.After(time.Minute), "remind", 42)
	})
	fmt.Println(errors.Is(err, agent.ErrBadArguments))
	// Output:
	// scheduled remind (delayed)
	// reminded: water the plants
	// true
}
