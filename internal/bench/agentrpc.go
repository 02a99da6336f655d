package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/workflow"
)

// agentRPC measures calls on one live agent, one after another: in process
// with the typed helper agent.Call and by name with Ref.Call, and over a
// WebSocket on loopback as the JavaScript client makes them. Each is
// measured for a method that does not touch the store (pinger.Ping) and,
// in process and over the WebSocket, for counter.Increment, whose SetState
// is a durable write on every call.
func (r *runner) agentRPC(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	rig, closeRig, err := r.openAgents(ctx, agent.Options{}, func(rt *agent.Runtime, _ *workflow.Engine) error {
		if err := agent.Register[pinger](rt, pingerClass, agent.ClassOptions{Callable: []string{"ping"}}); err != nil {
			return err
		}
		return counter.Register(rt)
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeRig()) }()
	rt := rig.rt
	warm := max(cfg.Calls/10, 100)
	wwarm := max(cfg.WriteCalls/10, 10)

	// In process. The first call activates the instance; the warm-up
	// calls include it.
	r.progress("in process: %d calls of %s.Ping (after %d warm-up), %d of Counter.Increment", cfg.Calls, pingerClass, warm, cfg.WriteCalls)
	ping := func(ctx context.Context, i int) error {
		n, err := agent.Call(ctx, rt, "p", (*pinger).Ping, i)
		if err == nil && n != i {
			err = fmt.Errorf("Ping(%d) returned %d", i, n)
		}
		return err
	}
	inproc, err := timeCalls(ctx, warm, cfg.Calls, ping)
	if err != nil {
		return nil, fmt.Errorf("in-process Ping: %w", err)
	}
	ref := rt.Ref(pingerClass, "p")
	byName, err := timeCalls(ctx, warm, cfg.Calls, func(ctx context.Context, i int) error {
		_, err := ref.Call(ctx, "ping", i)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in-process Ref.Call ping: %w", err)
	}
	incr := func(ctx context.Context, i int) error {
		_, err := agent.Call(ctx, rt, "c", (*counter.Counter).Increment, 1)
		return err
	}
	inprocWrite, err := timeCalls(ctx, wwarm, cfg.WriteCalls, incr)
	if err != nil {
		return nil, fmt.Errorf("in-process Increment: %w", err)
	}

	// Over a WebSocket to a real HTTP server on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: rt.Handler(agent.HandlerOptions{}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "ws://" + ln.Addr().String() + "/agents/"

	r.progress("WebSocket on %s: %d rpc frames to ping (after %d warm-up), %d to increment", ln.Addr(), cfg.Calls, warm, cfg.WriteCalls)
	wsPing, err := timeWS(ctx, base+agent.Kebab(pingerClass)+"/p", "ping", warm, cfg.Calls)
	if err != nil {
		return nil, fmt.Errorf("WebSocket ping: %w", err)
	}
	wsWrite, err := timeWS(ctx, base+agent.Kebab(counter.Name)+"/c", "increment", wwarm, cfg.WriteCalls)
	if err != nil {
		return nil, fmt.Errorf("WebSocket increment: %w", err)
	}
	// Every Increment landed: the counter's stored state says so.
	want := wwarm + cfg.WriteCalls + wwarm + cfg.WriteCalls
	raw, err := rt.Ref(counter.Name, "c").State(ctx)
	if err != nil {
		return nil, err
	}
	var st counter.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if st.Count != want {
		return nil, fmt.Errorf("counter is %d after %d increments", st.Count, want)
	}

	return []Result{
		metric("inproc_p50_us", percentileSorted(inproc, 50), "us"),
		metric("inproc_p99_us", percentileSorted(inproc, 99), "us"),
		metric("inproc_byname_p50_us", percentileSorted(byName, 50), "us"),
		metric("inproc_byname_p99_us", percentileSorted(byName, 99), "us"),
		metric("inproc_write_p50_us", percentileSorted(inprocWrite, 50), "us"),
		metric("inproc_write_p99_us", percentileSorted(inprocWrite, 99), "us"),
		metric("ws_p50_us", percentileSorted(wsPing, 50), "us"),
		metric("ws_p99_us", percentileSorted(wsPing, 99), "us"),
		metric("ws_write_p50_us", percentileSorted(wsWrite, 50), "us"),
		metric("ws_write_p99_us", percentileSorted(wsWrite, 99), "us"),
	}, nil
}

// timeCalls makes warm calls, then n timed ones, one after another, and
// returns the timed ones' latencies in µs, sorted.
func timeCalls(ctx context.Context, warm, n int, call func(ctx context.Context, i int) error) ([]float64, error) {
	for i := range warm {
		if err := call(ctx, i); err != nil {
			return nil, err
		}
	}
	lat := make([]float64, n)
	for i := range n {
		start := time.Now()
		if err := call(ctx, i); err != nil {
			return nil, err
		}
		lat[i] = us(time.Since(start))
	}
	slices.Sort(lat)
	return lat, nil
}

// wsReply is the part of an rpc reply frame the bench reads.
type wsReply struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Success bool            `json:"success"`
	Done    *bool           `json:"done"`
	Error   string          `json:"error"`
	Result  json.RawMessage `json:"result"`
}

// timeWS connects to url, sends warm and then n rpc frames calling method
// with one argument, each after the previous one's final reply, and returns
// the timed round trips in µs, sorted.
func timeWS(ctx context.Context, url, method string, warm, n int) ([]float64, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	cancel()
	if err != nil {
		return nil, err
	}
	defer c.CloseNow()
	// The server greets with the identity and state frames.
	for range 2 {
		if _, _, err := c.Read(ctx); err != nil {
			return nil, fmt.Errorf("reading the greeting: %w", err)
		}
	}
	prefix := []byte(`{"type":"rpc","method":"` + method + `","id":"`)
	var msg []byte
	call := func(i int) error {
		id := strconv.Itoa(i)
		msg = append(append(append(msg[:0], prefix...), id...), `","args":[1]}`...)
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			return err
		}
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return err
			}
			var rep wsReply
			if err := json.Unmarshal(b, &rep); err != nil {
				return fmt.Errorf("reply %q: %w", b, err)
			}
			if rep.Type != "rpc" || rep.ID != id || (rep.Done != nil && !*rep.Done) {
				continue // a broadcast or a chunk
			}
			if !rep.Success {
				return fmt.Errorf("rpc %s failed: %s", method, rep.Error)
			}
			return nil
		}
	}
	for i := range warm {
		if err := call(i); err != nil {
			return nil, err
		}
	}
	lat := make([]float64, n)
	for i := range n {
		start := time.Now()
		if err := call(warm + i); err != nil {
			return nil, err
		}
		lat[i] = us(time.Since(start))
	}
	slices.Sort(lat)
	_ = c.Close(websocket.StatusNormalClosure, "")
	return lat, nil
}
