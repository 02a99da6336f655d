package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"agentflow/agent"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// CounterState is a Counter's state, stored as JSON.
type CounterState struct {
	Count int `json:"count"`
}

// Counter is an agent class: a struct embedding agent.Agent with its state
// type.
type Counter struct{ agent.Agent[CounterState] }

// Increment adds by to the count and returns the new count.
func (c *Counter) Increment(ctx context.Context, by int) (int, error) {
	s := c.State()
	s.Count += by
	return s.Count, c.SetState(ctx, s) // persisted, then sent to every connected client
}

// Countdown streams: each Send reaches the caller before the result.
func (c *Counter) Countdown(ctx context.Context, s *agent.Stream, from int) (string, error) {
	for n := from; n > 0; n-- {
		if err := s.Send(n); err != nil {
			return "", err
		}
	}
	return "liftoff", nil
}

// Reset is not listed as callable: Go code may call it, clients may not.
func (c *Counter) Reset(ctx context.Context) error { return c.SetState(ctx, CounterState{}) }

// ValidateState refuses a state before it is stored, whether a method or a
// client set it.
func (c *Counter) ValidateState(_ context.Context, next CounterState, _ *agent.Conn) error {
	if next.Count < 0 {
		return fmt.Errorf("count must not be negative, got %d", next.Count)
	}
	return nil
}

// OnRequest answers plain HTTP requests to /agents/counter/<name>.
func (c *Counter) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c.State())
}

// An agent class on a runtime sharing a workflow engine's store: a typed
// call, a call by name, a streaming call, a refused state and a plain HTTP
// request.
func Example() {
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
	rt, err := agent.NewRuntime(agent.Options{Engine: eng}) // shares the engine's store, clock and node
	if err != nil {
		panic(err)
	}
	agent.MustRegister[Counter](rt, "Counter", agent.ClassOptions{Callable: []string{"increment", "countdown"}})
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if err := rt.Start(ctx); err != nil { // after eng.Start; rt.Stop before eng.Stop
		panic(err)
	}
	defer rt.Stop(ctx)

	// From Go, typed: any exported method, checked at compile time.
	n, err := agent.Call(ctx, rt, "alice", (*Counter).Increment, 5)
	if err != nil {
		panic(err)
	}
	fmt.Println("increment:", n)

	// By name, with the arguments checked when called; the result is JSON.
	alice := rt.Ref("Counter", "alice")
	res, err := alice.Call(ctx, "increment", 2)
	if err != nil {
		panic(err)
	}
	fmt.Println("increment by name:", string(res))

	res, err = alice.CallWith(ctx, "countdown", agent.CallOptions{OnChunk: func(chunk json.RawMessage) error {
		fmt.Println("chunk:", string(chunk))
		return nil
	}}, 3)
	if err != nil {
		panic(err)
	}
	fmt.Println("countdown:", string(res))

	_, err = agent.Call(ctx, rt, "alice", (*Counter).Increment, -10)
	fmt.Println("refused:", errors.Is(err, agent.ErrStateRejected))

	// Over HTTP: /agents/<class in kebab case>/<name>; WebSocket clients
	// connect to the same URL.
	srv := httptest.NewServer(rt.Handler(agent.HandlerOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/agents/counter/alice")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	fmt.Print("GET: ", string(body))
	// Output:
	// increment: 5
	// increment by name: 7
	// chunk: 3
	// chunk: 2
	// chunk: 1
	// countdown: "liftoff"
	// refused: true
	// GET: {"count":7}
}
