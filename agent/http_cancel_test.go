package agent_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
)

// Busy holds its lock in Hold until released, serves HTTP, and records
// the errors reported to it.
type Busy struct{ agent.Agent[struct{}] }

var busy = struct {
	sync.Mutex
	release chan struct{}
	held    chan struct{}
	errs    []error
}{}

func (b *Busy) Hold(ctx context.Context, _ int) (int, error) {
	close(busy.held)
	<-busy.release
	return 0, nil
}

func (b *Busy) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}

func (b *Busy) OnError(ctx context.Context, err error) {
	busy.Lock()
	defer busy.Unlock()
	busy.errs = append(busy.errs, err)
}

// A client that gives up while its request waits for the instance's lock
// (as when the node that forwarded it dies) is no error of the agent's:
// nothing is reported to its error hook.
func TestRequestCancelledWaitingIsNoAgentError(t *testing.T) {
	busy.release, busy.held = make(chan struct{}), make(chan struct{})
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Busy](rt, "Busy", agent.ClassOptions{})
	}})
	srv := httptest.NewServer(e.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(srv.Close)
	held := make(chan error, 1)
	go func() {
		_, err := agent.Call(t.Context(), e.rt, "b", (*Busy).Hold, 0)
		held <- err
	}()
	<-busy.held
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/agents/busy/b", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request answered %s while the instance was held", resp.Status)
	}
	time.Sleep(100 * time.Millisecond) // for the handler to see the cancellation
	close(busy.release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	// The instance serves the next request, and reported nothing.
	resp, err := http.Get(srv.URL + "/agents/busy/b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("next request: %s", resp.Status)
	}
	busy.Lock()
	defer busy.Unlock()
	if len(busy.errs) > 0 {
		t.Fatalf("errors reported to the agent: %v", busy.errs)
	}
}
