package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/store"
	"agentflow/workflow"
)

// Box is a test class with methods of every supported shape.
type Box struct {
	agent.Agent[BoxState]
	inFlight atomic.Int32
	overlaps *atomic.Int32
}

type BoxState struct {
	Items []string `json:"items"`
	Note  string   `json:"note"`
}

type Pair struct {
	A int `json:"a"`
	B int `json:"b"`
}

func (b *Box) InitialState() BoxState { return BoxState{Items: []string{}} }

func (b *Box) Add(ctx context.Context, item string) (int, error) {
	s := b.State()
	s.Items = append(append([]string(nil), s.Items...), item)
	return len(s.Items), b.SetState(ctx, s)
}

func (b *Box) Sum(p Pair) int                         { return p.A + p.B }
func (b *Box) Concat(a, c string) string              { return a + c }
func (b *Box) Nothing()                               {}
func (b *Box) Fail(ctx context.Context) error         { return errors.New("boom") }
func (b *Box) Panic(ctx context.Context) error        { panic("kaboom") }
func (b *Box) Chan(ch chan int)                       {} // not callable by name: a channel is not JSON
func (b *Box) Count(ctx context.Context) (int, error) { return len(b.State().Items), nil }

func (b *Box) Slow(ctx context.Context, d int) error {
	if b.inFlight.Add(1) > 1 && b.overlaps != nil {
		b.overlaps.Add(1)
	}
	defer b.inFlight.Add(-1)
	time.Sleep(time.Duration(d) * time.Millisecond)
	return nil
}

func (b *Box) ValidateState(_ context.Context, next BoxState, _ *agent.Conn) error {
	if len(next.Items) > 3 {
		return fmt.Errorf("a box holds at most 3 items, got %d", len(next.Items))
	}
	return nil
}

func registerBox(rt *agent.Runtime) {
	agent.MustRegister[Box](rt, "Box", agent.ClassOptions{Callable: []string{"add", "sum", "Concat", "slow"}})
}

func TestKebab(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"Counter", "counter"},
		{"MyAgent", "my-agent"},
		{"HTTPServer", "h-t-t-p-server"},
		{"EMAIL_AGENT", "email-agent"},
		{"my_agent", "my-agent"},
		{"already-kebab", "already-kebab"},
	} {
		if got := agent.Kebab(tc.in); got != tc.want {
			t.Errorf("Kebab(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRegisterErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name string
		reg  func() error
		want string
	}{
		{"callable missing", func() error {
			return agent.Register[Box](e.rt, "Box2", agent.ClassOptions{Callable: []string{"nope"}})
		}, `callable method "nope"`},
		{"callable not jsonable", func() error {
			return agent.Register[Box](e.rt, "Box3", agent.ClassOptions{Callable: []string{"chan"}})
		}, `callable method "chan"`},
		{"callable base method", func() error {
			return agent.Register[Box](e.rt, "Box4", agent.ClassOptions{Callable: []string{"setState"}})
		}, `callable method "setState"`},
		{"empty name", func() error { return agent.Register[Box](e.rt, "", agent.ClassOptions{}) }, "class name is empty"},
		{"duplicate", func() error {
			if err := agent.Register[counter.Counter](e.rt, "Dup", agent.ClassOptions{}); err != nil {
				return err
			}
			return agent.Register[counter.Counter](e.rt, "Dup", agent.ClassOptions{})
		}, "already registered"},
	} {
		err := tc.reg()
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestCallByName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: registerBox})
	ctx := t.Context()
	box := e.rt.Ref("Box", "b1")
	for _, tc := range []struct {
		name    string
		method  string
		args    []any
		want    string
		wantErr error
		errText string
	}{
		{"go value", "add", []any{"apple"}, `1`, nil, ""},
		{"go name", "Add", []any{"pear"}, `2`, nil, ""},
		{"raw json", "add", []any{json.RawMessage(`"fig"`)}, `3`, nil, ""},
		{"struct via json", "sum", []any{map[string]int{"a": 2, "b": 3}}, `5`, nil, ""},
		{"struct value", "sum", []any{Pair{A: 1, B: 1}}, `2`, nil, ""},
		{"two args", "concat", []any{"a", "b"}, `"ab"`, nil, ""},
		{"no result", "nothing", nil, `null`, nil, ""},
		{"not callable by clients but by go", "count", nil, `3`, nil, ""},
		{"unknown method", "fly", nil, "", agent.ErrMethodNotFound, "Method fly does not exist"},
		{"base method", "SetState", nil, "", agent.ErrMethodNotFound, "Method SetState does not exist"},
		{"hook", "ValidateState", nil, "", agent.ErrMethodNotFound, ""},
		{"too many", "add", []any{"a", "b"}, "", agent.ErrBadArguments, "got 2 argument(s), want 1"},
		{"too few", "concat", []any{"a"}, "", agent.ErrBadArguments, "expected concat(string, string)"},
		{"wrong type", "add", []any{42}, "", agent.ErrBadArguments, "argument 1"},
		{"wrong raw type", "sum", []any{json.RawMessage(`"x"`)}, "", agent.ErrBadArguments, "argument 1"},
		{"method error", "fail", nil, "", nil, "boom"},
		{"state rejected", "add", []any{"plum"}, "", agent.ErrStateRejected, "at most 3 items"},
	} {
		got, err := box.Call(ctx, tc.method, tc.args...)
		switch {
		case tc.wantErr != nil || tc.errText != "":
			if err == nil {
				t.Errorf("%s: Call(%s) = %s, want an error", tc.name, tc.method, got)
				continue
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: err = %v, want errors.Is %v", tc.name, err, tc.wantErr)
			}
			if !contains(err.Error(), tc.errText) {
				t.Errorf("%s: err = %q, want it to contain %q", tc.name, err, tc.errText)
			}
		case err != nil:
			t.Errorf("%s: Call(%s): %v", tc.name, tc.method, err)
		case string(got) != tc.want:
			t.Errorf("%s: Call(%s) = %s, want %s", tc.name, tc.method, got, tc.want)
		}
	}
	// The rejected change left nothing behind.
	row, err := e.store.GetAgent(ctx, store.AgentKey{Class: "Box", Name: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"items":["apple","pear","fig"],"note":""}`; string(row.State) != want {
		t.Errorf("stored state = %s, want %s", row.State, want)
	}
	if _, err := e.rt.Ref("Nope", "x").Call(ctx, "add"); !errors.Is(err, agent.ErrUnknownClass) {
		t.Errorf("unknown class: err = %v, want ErrUnknownClass", err)
	}
}

func TestPanicIsAnError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: registerBox})
	_, err := e.rt.Ref("Box", "p").Call(t.Context(), "panic")
	var pe *agent.PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" {
		t.Fatalf("err = %v, want a PanicError with kaboom", err)
	}
	// The instance is still usable.
	if _, err := e.rt.Ref("Box", "p").Call(t.Context(), "add", "x"); err != nil {
		t.Fatalf("call after panic: %v", err)
	}
}

func TestTypedCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	ctx := t.Context()
	n, err := agent.Call(ctx, e.rt, "alice", (*counter.Counter).Increment, 5)
	if err != nil || n != 5 {
		t.Fatalf("Call = %d, %v; want 5", n, err)
	}
	n, err = agent.Call(ctx, e.rt, "alice", (*counter.Counter).Increment, 2)
	if err != nil || n != 7 {
		t.Fatalf("Call = %d, %v; want 7", n, err)
	}
	if _, err := agent.Call(ctx, e.rt, "x", (*Box).Add, "a"); !errors.Is(err, agent.ErrUnknownClass) {
		t.Fatalf("unregistered class: err = %v, want ErrUnknownClass", err)
	}
	st, err := e.rt.Ref(counter.Name, "alice").State(ctx)
	if err != nil || string(st) != `{"count":7}` {
		t.Fatalf("State = %s, %v", st, err)
	}
}

func TestCallsNeverOverlap(t *testing.T) {
	t.Parallel()
	var overlaps atomic.Int32
	e := newEnv(t, envOptions{setup: registerBox})
	ctx := t.Context()
	// Bind the shared counter on the live instance.
	if _, err := agent.With(ctx, e.rt, "o", func(ctx context.Context, b *Box) (int, error) {
		b.overlaps = &overlaps
		return 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := e.rt.Ref("Box", "o").Call(ctx, "slow", 2); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d calls overlapped another", n)
	}
}

func TestEvictionAndReactivation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{rt: agent.Options{IdleTimeout: time.Hour}, setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	ctx := t.Context()
	for i := range 10 {
		if _, err := agent.Call(ctx, e.rt, fmt.Sprint("c", i), (*counter.Counter).Increment, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.rt.Live(); n != 10 {
		t.Fatalf("Live = %d, want 10", n)
	}
	if n := e.rt.EvictIdle(ctx); n != 0 {
		t.Fatalf("evicted %d before the idle timeout", n)
	}
	e2 := newEnv(t, envOptions{store: e.store, rt: agent.Options{IdleTimeout: time.Nanosecond},
		setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	// e holds the agents; e2 is told where they live.
	_, err := agent.Call(ctx, e2.rt, "c3", (*counter.Counter).Increment, 1)
	var owned *store.AgentOwnedError
	if !errors.As(err, &owned) || owned.Node.ID != e.eng.NodeID() || !errors.Is(err, agent.ErrAgentElsewhere) {
		t.Fatalf("call on a second node: err = %v, want AgentOwnedError naming %s", err, e.eng.NodeID())
	}
	if err := e.rt.Stop(ctx); err != nil { // releases every instance
		t.Fatal(err)
	}
	n, err := agent.Call(ctx, e2.rt, "c3", (*counter.Counter).Increment, 1)
	if err != nil || n != 4 {
		t.Fatalf("after release: Call = %d, %v; want 4 (state survived)", n, err)
	}
	eventually(t, 5*time.Second, "eviction and release", func() bool {
		row, err := e2.store.GetAgent(ctx, store.AgentKey{Class: counter.Name, Name: "c3"})
		return e2.rt.Live() == 0 && err == nil && row.Owner == ""
	})
	n, err = agent.Call(ctx, e2.rt, "c3", (*counter.Counter).Increment, 1)
	if err != nil || n != 5 {
		t.Fatalf("after eviction: Call = %d, %v; want 5", n, err)
	}
}

// Hooked records its hooks.
type Hooked struct {
	agent.Agent[int]
	mu    sync.Mutex
	calls []string
}

func (h *Hooked) record(s string) {
	h.mu.Lock()
	h.calls = append(h.calls, s)
	h.mu.Unlock()
}

func (h *Hooked) OnStart(ctx context.Context) error { h.record("start"); return nil }
func (h *Hooked) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	h.record("request " + agent.Rest(r))
	fmt.Fprintf(w, "hello from %s%s", h.Name(), agent.Rest(r))
}
func (h *Hooked) OnStateChanged(ctx context.Context, s int, _ *agent.Conn) {
	h.record(fmt.Sprint("changed ", s))
}
func (h *Hooked) Set(ctx context.Context, n int) error { return h.SetState(ctx, n) }
func (h *Hooked) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func TestHooks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Hooked](rt, "Hooked", agent.ClassOptions{})
	}})
	ctx := t.Context()
	if _, err := e.rt.Ref("Hooked", "h").Call(ctx, "set", 3); err != nil {
		t.Fatal(err)
	}
	calls, err := e.rt.Ref("Hooked", "h").Call(ctx, "calls")
	if err != nil {
		t.Fatal(err)
	}
	if want := `["start","changed 3"]`; string(calls) != want {
		t.Fatalf("hooks = %s, want %s", calls, want)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A workflow step calls an agent by name and with the typed helper.
func TestWorkflowStepCallsAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		setup: func(rt *agent.Runtime) { counter.Register(rt) },
		workflows: func(eng *workflow.Engine, rt *agent.Runtime) {
			workflow.MustRegister(eng, "Tally", workflow.Func[string, int](func(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (int, error) {
				if _, err := workflow.Do(step, "by name", func(ctx context.Context, _ workflow.Attempt) (json.RawMessage, error) {
					return rt.Ref(counter.Name, ev.Payload).Call(ctx, "increment", 2)
				}); err != nil {
					return 0, err
				}
				return workflow.Do(step, "typed", func(ctx context.Context, _ workflow.Attempt) (int, error) {
					return agent.Call(ctx, rt, ev.Payload, (*counter.Counter).Increment, 3)
				})
			}))
		},
	})
	inst, err := e.eng.Create(t.Context(), "Tally", workflow.CreateOptions{Params: "from-workflow"})
	if err != nil {
		t.Fatal(err)
	}
	var st workflow.InstanceStatus
	eventually(t, 10*time.Second, "the workflow", func() bool {
		st, err = inst.Status(t.Context())
		return err == nil && st.Status.Finished()
	})
	if st.Status != workflow.StatusComplete || string(st.Output) != "5" {
		t.Fatalf("workflow = %s %s %+v, want complete with 5", st.Status, st.Output, st.Error)
	}
}
