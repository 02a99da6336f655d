package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/examples/counter"
)

// rawConn is a WebSocket client on a bare TCP connection that does only
// what the test makes it do: it answers no ping and reads nothing unless
// asked, like a peer that has vanished. It has no buffer of its own, so a
// test measuring memory counts little of it.
type rawConn struct {
	t *testing.T
	net.Conn
}

// rawDial connects to the ws:// URL u and completes the handshake.
func rawDial(t *testing.T, u string) *rawConn { return rawDialEarly(t, u, nil) }

// rawDialEarly is rawDial sending early right after the request, without
// waiting for the answer.
func rawDialEarly(t *testing.T, u string, early []byte) *rawConn {
	t.Helper()
	c, err := dialRaw(t, u, early)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRaw is rawDialEarly leaving the closing to the caller.
func dialRaw(t *testing.T, u string, early []byte) (*rawConn, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	nc, err := net.DialTimeout("tcp", pu.Host, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", pu.Host, err)
	}
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", pu.RequestURI(), pu.Host)
	if _, err := nc.Write(append(req, early...)); err != nil {
		nc.Close()
		return nil, err
	}
	// Read the response a byte at a time, so that no frame after it is
	// taken into a buffer.
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		var b [1]byte
		if _, err := io.ReadFull(nc, b[:]); err != nil {
			nc.Close()
			return nil, fmt.Errorf("handshake with %s: %w after %q", u, err, head)
		}
		head = append(head, b[0])
	}
	nc.SetReadDeadline(time.Time{})
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		nc.Close()
		return nil, fmt.Errorf("handshake with %s: %q", u, head)
	}
	return &rawConn{t: t, Conn: nc}, nil
}

// frame is a final client frame, masked with the key 0, which leaves the
// payload as it is.
func frame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(append(b, 0, 0, 0, 0), payload...)
}

// writeFrame sends one final frame.
func (c *rawConn) writeFrame(op byte, payload []byte) error {
	_, err := c.Write(frame(op, payload))
	return err
}

// readFrame reads one frame from the server (which sends them unmasked).
func (c *rawConn) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.Conn, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.Conn, payload)
	return h[0] & 0x0f, payload, err
}

// nextText reads frames up to the next text frame, skipping pings.
func (c *rawConn) nextText() string {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		op, p, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if op == 0x1 {
			return string(p)
		}
	}
}

// steadyGoroutines is the least of a few counts: goroutines of the
// runtime's and the engine's background work come and go.
func steadyGoroutines() int {
	n := runtime.NumGoroutine()
	for range 10 {
		time.Sleep(10 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// memory is the heap in use after a GC and the goroutine stacks in use.
func memory() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// An idle connection keeps neither a buffer the size of the largest message
// it got nor a writer goroutine, and leaves nothing behind once closed.
//
// It measures the whole process's heap and goroutines, so it does not run
// in parallel with other tests.
func TestIdleConnectionCost(t *testing.T) {
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	base := wsURL(serve(t, e, agent.HandlerOptions{}), "/agents/counter/")
	const (
		conns   = 40
		msgSize = 256 << 10
	)
	// The clients are closed here, not by cleanups, which would keep them
	// until the test ends.
	cs := make([]*rawConn, conns)
	closeAll := func() {
		for i, c := range cs {
			if c != nil {
				c.writeFrame(0x8, []byte{0x03, 0xe8}) // close, 1000
				c.Close()
			}
			cs[i] = nil
		}
	}
	t.Cleanup(closeAll)
	dial := func(i int, name string) {
		c, err := dialRaw(t, base+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
		c.nextText() // identity
		c.nextText() // state
	}
	// Warm up: activate the agents, and let the server's first
	// connections come and go.
	for i := range 4 {
		dial(i, fmt.Sprint("a", i))
	}
	closeAll()
	time.Sleep(200 * time.Millisecond)
	msg := bytes.Repeat([]byte("x"), msgSize) // not a protocol frame: answered with an error frame

	g0 := steadyGoroutines()
	h0, s0 := memory()
	for i := range cs {
		dial(i, fmt.Sprint("a", i%4))
		if err := cs[i].writeFrame(0x1, msg); err != nil {
			t.Fatal(err)
		}
		if f := cs[i].nextText(); !strings.Contains(f, "unrecognized message") {
			t.Fatalf("answer to a %d-byte message: %.200s", msgSize, f)
		}
	}
	g1 := steadyGoroutines()
	h1, s1 := memory()
	heap := (float64(h1) - float64(h0)) / conns
	stack := (float64(s1) - float64(s0)) / conns
	g := float64(g1-g0) / conns
	t.Logf("idle, per connection: %.0f heap bytes, %.0f stack bytes, %.2f goroutines", heap, stack, g)
	// The server's side of an idle connection is its reader goroutine, the
	// WebSocket library's state with 1 KiB read and write buffers, and its
	// Conn: about 6 KB of heap; the raw client's side is a few hundred
	// bytes. It once also kept a buffer of the largest message (550 KB
	// here), a writer goroutine, net/http's request state and 4 KiB
	// buffers (12 KB), and the request goroutine's stack (16 KiB).
	if heap > 8<<10 {
		t.Errorf("an idle connection holds %.0f heap bytes after a %d-byte message, want at most 8 KiB", heap, msgSize)
	}
	if stack > 12<<10 {
		t.Errorf("an idle connection's goroutines have %.0f bytes of stack, want at most 12 KiB", stack)
	}
	if g > 1 {
		t.Errorf("an idle connection has %.2f goroutines, want 1 (its reader)", g)
	}

	closeAll()
	eventually(t, 10*time.Second, "the connections' goroutines to end", func() bool { return steadyGoroutines() <= g0 })
	h2, _ := memory()
	runtime.KeepAlive(msg) // in all three samples alike
	left := (float64(h2) - float64(h0)) / conns
	t.Logf("after close, per connection: %.0f heap bytes", left)
	// Dead goroutines' descriptors stay with the Go runtime for reuse.
	if left > 1<<10 {
		t.Errorf("closed connections left %.0f heap bytes each, want about none", left)
	}
}

// Watched records each WebSocket close in its state, which outlives the
// instance.
type Watched struct {
	agent.Agent[[]string]
}

func (w *Watched) OnClose(ctx context.Context, c *agent.Conn, code int, reason string) {
	_ = w.SetState(ctx, append(w.State(), fmt.Sprintf("%d %s", code, reason)))
}

// Wait sleeps for ms milliseconds, during which its connection is not read.
func (w *Watched) Wait(ctx context.Context, ms int) (int, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return ms, nil
}

func TestKeepalive(t *testing.T) {
	t.Parallel()
	// Generous enough that a loaded machine running the suite with -race
	// answers pings in time; the drop is still checked against them.
	const (
		ping    = 100 * time.Millisecond
		timeout = 500 * time.Millisecond
	)
	opts := agent.Options{PingInterval: ping, ReadTimeout: timeout, IdleTimeout: 20 * time.Millisecond}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, rt *agent.Runtime, base string)
	}{
		{"a silent client is dropped and its agent evicted", func(t *testing.T, rt *agent.Runtime, base string) {
			c := rawDial(t, base+"/agents/watched/silent")
			start := time.Now()
			// The peer never answers: it reads only to see the server hang up.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			pings := 0
			for {
				op, _, err := c.readFrame()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("read: %v, want the server to hang up", err)
					}
					break
				}
				if op == 0x9 {
					pings++
				}
			}
			// The server counts from its side of the handshake, a little
			// before start.
			if took := time.Since(start); took < timeout-ping || took > timeout+ping+time.Second {
				t.Errorf("dropped after %s, want after about %s and at most about %s", took, timeout, timeout+ping)
			}
			if pings == 0 {
				t.Error("the server hung up without pinging")
			}
			eventually(t, 5*time.Second, "the agent to be evicted", func() bool { return rt.Live() == 0 })
			raw, err := rt.Ref("Watched", "silent").State(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(`["1006 no pong within %s"]`, timeout); string(raw) != want {
				t.Errorf("closes = %s, want %s", raw, want)
			}
		}},
		{"a client that answers pings stays", func(t *testing.T, rt *agent.Runtime, base string) {
			c := dial(t, base+"/agents/watched/alive")
			frames := readAll(t, c.ws)
			<-frames // identity
			<-frames // state
			time.Sleep(5 * timeout)
			if rt.Live() != 1 {
				t.Fatalf("%d agents live, want the connected one", rt.Live())
			}
			c.send(`{"type":"rpc","id":"1","method":"wait","args":[1]}`)
			if f := <-frames; !strings.Contains(f, `"success":true`) {
				t.Fatalf("reply %s", f)
			}
		}},
		{"a client whose call outlasts the timeout stays", func(t *testing.T, rt *agent.Runtime, base string) {
			c := dial(t, base+"/agents/watched/busy")
			frames := readAll(t, c.ws)
			<-frames
			<-frames
			ms := int(4 * timeout / time.Millisecond)
			c.send(fmt.Sprintf(`{"type":"rpc","id":"1","method":"wait","args":[%d]}`, ms))
			if f := <-frames; !strings.Contains(f, fmt.Sprintf(`"result":%d`, ms)) {
				t.Fatalf("reply %s", f)
			}
			time.Sleep(2 * timeout)
			c.send(`{"type":"rpc","id":"2","method":"wait","args":[1]}`)
			if f := <-frames; !strings.Contains(f, `"id":"2"`) {
				t.Fatalf("reply %s", f)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{rt: opts, setup: func(rt *agent.Runtime) {
				agent.MustRegister[Watched](rt, "Watched", agent.ClassOptions{Callable: []string{"wait"}})
			}})
			tc.run(t, e.rt, serve(t, e, agent.HandlerOptions{}))
		})
	}
}

// readAll reads the connection's frames in the background, which also
// answers the server's pings, and hands them over as strings.
func readAll(t *testing.T, ws *websocket.Conn) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			ch <- string(b)
		}
	}()
	return ch
}

func TestKeepaliveOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name    string
		ping    time.Duration
		timeout time.Duration
		wantErr string
	}{
		{"defaults", 0, 0, ""},
		{"timeout defaults to twice the interval", time.Second, 0, ""},
		{"off", -1, 0, ""},
		{"timeout not longer than the interval", time.Second, time.Second, "must be longer than PingInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := agent.NewRuntime(agent.Options{Engine: e.eng, PingInterval: tc.ping, ReadTimeout: tc.timeout})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("NewRuntime(PingInterval %s, ReadTimeout %s) = %v, want %q", tc.ping, tc.timeout, err, tc.wantErr)
			}
		})
	}
}

// Frames a client sends right behind its handshake request, before the
// answer, are read: those the server's HTTP reader already took in too.
func TestFramesSentWithHandshake(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		agent.MustRegister[Watched](rt, "Watched", agent.ClassOptions{Callable: []string{"wait"}})
	}})
	base := wsURL(serve(t, e, agent.HandlerOptions{}), "/agents/watched/")
	for _, tc := range []struct {
		name   string
		frames int
		pad    int // bytes of padding in each frame's id
	}{
		{"one frame", 1, 0},
		{"several frames", 5, 0},
		{"more than a read buffer", 8, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var early []byte
			for i := range tc.frames {
				id := fmt.Sprintf("%d-%s", i, strings.Repeat("p", tc.pad))
				early = append(early, frame(0x1, fmt.Appendf(nil, `{"type":"rpc","id":%q,"method":"wait","args":[%d]}`, id, i))...)
			}
			// An agent of its own: Watched's closes change its state.
			c := rawDialEarly(t, base+url.PathEscape(tc.name), early)
			c.nextText() // identity
			c.nextText() // state
			for i := range tc.frames {
				var reply struct {
					ID     string
					Result int
				}
				if f := c.nextText(); json.Unmarshal([]byte(f), &reply) != nil || !strings.HasPrefix(reply.ID, fmt.Sprint(i, "-")) || reply.Result != i {
					t.Fatalf("reply %d: %.100s", i, f)
				}
			}
		})
	}
}

// Behind a ResponseWriter that cannot be hijacked (middleware that does
// not pass Hijack on), an upgrade is refused as not implemented before
// anything is written, as websocket.Accept does by itself.
func TestUpgradeWithoutHijacker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	h := e.rt.Handler(agent.HandlerOptions{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(struct{ http.ResponseWriter }{w}, r) // hides Hijack
	}))
	t.Cleanup(srv.Close)
	_, resp, err := websocket.Dial(t.Context(), wsURL(srv.URL, "/agents/counter/c"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotImplemented {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial through a writer without Hijack: status %d, %v; want 501", status, err)
	}
}
