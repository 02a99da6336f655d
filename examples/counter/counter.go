// Package counter is the example agent the dev server serves and the
// JavaScript-client test drives: a counter whose state is {"count": n}.
package counter

import (
	"context"
	"fmt"
	"time"

	"agentflow/agent"
)

// Name is the class name; its URL form is "counter".
const Name = "Counter"

// State is the counter's state.
type State struct {
	Count int `json:"count"`
}

// Counter counts.
type Counter struct {
	agent.Agent[State]
}

// Register registers Counter with its callable methods.
func Register(rt *agent.Runtime) error {
	return agent.Register[Counter](rt, Name, agent.ClassOptions{
		Callable: []string{"increment", "countdown"},
	})
}

// Increment adds by to the count and returns the new count.
func (c *Counter) Increment(ctx context.Context, by int) (int, error) {
	s := c.State()
	s.Count += by
	if err := c.SetState(ctx, s); err != nil {
		return 0, err
	}
	return s.Count, nil
}

// Countdown streams from, from-1, …, 1 and ends with "liftoff".
func (c *Counter) Countdown(ctx context.Context, s *agent.Stream, from int) (string, error) {
	if from < 0 || from > 1000 {
		return "", fmt.Errorf("countdown: from must be between 0 and 1000, got %d", from)
	}
	for n := from; n > 0; n-- {
		if err := s.Send(n); err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "liftoff", nil
}

// Reset sets the count to zero. It is not callable by clients; Go code
// (a workflow step, another agent, a schedule) may call it.
func (c *Counter) Reset(ctx context.Context) error {
	return c.SetState(ctx, State{})
}

// ValidateState refuses a negative count.
func (c *Counter) ValidateState(_ context.Context, next State, _ *agent.Conn) error {
	if next.Count < 0 {
		return fmt.Errorf("count must not be negative, got %d", next.Count)
	}
	return nil
}
