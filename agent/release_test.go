package agent_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/store"
)

// TestUnusedAgentLeavesNoRow looks at agents through uses that store
// nothing — a GET its class does not serve, a WebSocket opened and closed,
// a read of its state — and checks that once they are evicted no row is
// left, while an agent that set its state keeps its row; one looked at
// again starts afresh, at fence 1. A runtime that stops releases its live
// agents the same way.
func TestUnusedAgentLeavesNoRow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	register := func(rt *agent.Runtime) { counter.Register(rt) }
	key := func(name string) store.AgentKey { return store.AgentKey{Class: counter.Name, Name: name} }
	exists := func(st store.Store, name string) bool {
		t.Helper()
		_, err := st.GetAgent(ctx, key(name))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	t.Run("Evicted", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{rt: agent.Options{IdleTimeout: 20 * time.Millisecond}, setup: register})
		base := serve(t, e, agent.HandlerOptions{})
		resp, err := http.Get(base + "/agents/counter/get")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET of a class that serves no HTTP: %d, want 404", resp.StatusCode)
		}
		ws, _, err := websocket.Dial(ctx, wsURL(base, "/agents/counter/ws"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // identity, state
			if _, _, err := ws.Read(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ws.Close(websocket.StatusNormalClosure, "")
		if _, err := e.rt.Ref(counter.Name, "state").State(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := agent.Call(ctx, e.rt, "used", (*counter.Counter).Increment, 2); err != nil || n != 2 {
			t.Fatalf("increment = %d, %v", n, err)
		}
		eventually(t, 10*time.Second, "every agent to be evicted", func() bool { return e.rt.Live() == 0 })
		for _, name := range []string{"get", "ws", "state"} {
			if exists(e.store, name) {
				t.Errorf("agent %s, which stored nothing, still has a row after its eviction", name)
			}
		}
		if a, err := e.store.GetAgent(ctx, key("used")); err != nil || a.Owner != "" || string(a.State) != `{"count":2}` {
			t.Errorf("agent used: %+v, %v; want its row with its state, live nowhere", a, err)
		}
		if n, err := agent.Call(ctx, e.rt, "get", (*counter.Counter).Increment, 1); err != nil || n != 1 {
			t.Fatalf("increment of the agent whose row was deleted = %d, %v; want 1", n, err)
		}
		if a, err := e.store.GetAgent(ctx, key("get")); err != nil || a.Fence != 1 || string(a.State) != `{"count":1}` {
			t.Errorf("agent get once it stored something: %+v, %v; want fence 1 and its state", a, err)
		}
	})

	t.Run("Stopped", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{rt: agent.Options{IdleTimeout: time.Hour}, setup: register})
		if _, err := e.rt.Ref(counter.Name, "state").State(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := agent.Call(ctx, e.rt, "used", (*counter.Counter).Increment, 2); err != nil || n != 2 {
			t.Fatalf("increment = %d, %v", n, err)
		}
		if !exists(e.store, "state") || !exists(e.store, "used") {
			t.Fatal("live agents have no rows")
		}
		if err := e.rt.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if exists(e.store, "state") {
			t.Error("agent state, which stored nothing, still has a row after Stop")
		}
		if a, err := e.store.GetAgent(ctx, key("used")); err != nil || a.Owner != "" {
			t.Errorf("agent used after Stop: %+v, %v; want its row, live nowhere", a, err)
		}
	})
}

// Stash is a class whose method hands out its own value, so that a test
// can use it after the runtime let the activation go, as buggy
// application code might.
type Stash struct {
	agent.Agent[int]
}

func (s *Stash) Self(ctx context.Context) (*Stash, error) { return s, nil }

// TestReleasedActivationWritesNothing keeps an activation's value past
// its eviction. Its agent stored nothing, so the release deleted the row,
// and the next activation on the same node has the same lease: owner and
// fence 1. The old value's state writes must still fail, and not land in
// the new activation's row.
func TestReleasedActivationWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Now())
	e := newEnv(t, envOptions{clock: clock, rt: agent.Options{IdleTimeout: time.Minute}, setup: func(rt *agent.Runtime) {
		agent.MustRegister[Stash](rt, "Stash", agent.ClassOptions{})
	}})
	key := store.AgentKey{Class: "Stash", Name: "s"}
	old, err := agent.Call0(ctx, e.rt, "s", (*Stash).Self)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if n := e.rt.EvictIdle(ctx); n != 1 {
		t.Fatalf("evicted %d, want 1", n)
	}
	if _, err := e.store.GetAgent(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetAgent after the eviction: %v, want ErrNotFound", err)
	}
	cur, err := agent.Call0(ctx, e.rt, "s", (*Stash).Self)
	if err != nil {
		t.Fatal(err)
	}
	if cur == old {
		t.Fatal("the agent was not activated anew")
	}
	if a, err := e.store.GetAgent(ctx, key); err != nil || a.Fence != 1 || a.Owner != e.eng.NodeID() {
		t.Fatalf("the new activation's row: %+v, %v; want fence 1 on this node, the old activation's lease", a, err)
	}
	if err := old.SetState(ctx, 666); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("SetState on the released activation: %v; want ErrLeaseLost", err)
	}
	if a, err := e.store.GetAgent(ctx, key); err != nil || a.State != nil {
		t.Errorf("the row after the released activation's write: %+v, %v; want no state", a, err)
	}
}
