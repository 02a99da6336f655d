package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/ids"
)

// sendQueue is how many frames may wait for a slow client; a client that
// falls further behind is disconnected rather than slowing the agent.
const sendQueue = 512

// writeTimeout bounds one frame's write to a client.
const writeTimeout = 10 * time.Second

// Conn is one WebSocket connection to an agent instance.
//
// An idle connection costs one goroutine (the one reading it) and no
// buffer of its own beyond the WebSocket library's: a message is read into
// a buffer that lives while it is handled, and a goroutine writes only
// while frames are waiting.
type Conn struct {
	id       string
	in       *instance
	ws       *websocket.Conn
	done     chan struct{} // closed by Close
	readonly atomic.Bool
	data     atomic.Value

	// Keepalive: when the client was last heard from (a frame, a pong, or
	// the end of handling its message), as time since start, and whether
	// a message is being handled, during which the connection is not read.
	start time.Time
	heard atomic.Int64
	// upgrade is the span context of the request that opened the
	// connection; the spans of its calls link to it.
	upgrade trace.SpanContext
	busy    atomic.Bool

	mu          sync.Mutex  // guards the fields below
	timer       *time.Timer // runs keepalive; nil when pings are off
	queue       [][]byte    // frames for the writer, oldest first
	pending     int         // frames queued or being written
	writing     bool        // a writer goroutine is running (or the connection is finished)
	closing     bool        // Close was called: frames are no longer taken
	aborted     bool        // ended without a close handshake (see abort)
	closeCode   websocket.StatusCode
	closeReason string
}

// ID returns the connection's id: the client's `_pk` query parameter when
// it sent one (the JavaScript client does), a random id otherwise.
func (c *Conn) ID() string { return c.id }

// Readonly reports whether the connection may not change the state.
func (c *Conn) Readonly() bool { return c.readonly.Load() }

// SetReadonly marks the connection readonly (or writable again). A readonly
// connection's state pushes are refused with a cf_agent_state_error frame,
// and SetState inside its calls fails with ErrReadonly.
func (c *Conn) SetReadonly(ro bool) { c.readonly.Store(ro) }

// SetData attaches a value to the connection, e.g. the authenticated user.
func (c *Conn) SetData(v any) { c.data.Store(&v) }

// Data returns the value SetData attached, or nil.
func (c *Conn) Data() any {
	if p, ok := c.data.Load().(*any); ok {
		return *p
	}
	return nil
}

// Send sends a text message to this client: v as it is when it is a string
// or []byte, as JSON otherwise.
func (c *Conn) Send(v any) error {
	msg, err := encodeMessage(v)
	if err != nil {
		return fmt.Errorf("send to connection %s: %w", c.id, err)
	}
	c.enqueue(msg)
	return nil
}

// Close closes the connection with a WebSocket close code and reason,
// after the frames already queued for it.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closeCode, c.closeReason = websocket.StatusCode(code), reason
	close(c.done)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.writeQueued()
	}
}

// abort ends the connection at once, without a close handshake, for a
// client that is gone or does not answer: the read in progress fails and
// readLoop reports code and reason.
func (c *Conn) abort(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.closeCode, c.closeReason = code, reason
		close(c.done)
	}
	c.aborted = true
	c.writing = true // no writer may start; one running fails its next write
	c.queue, c.pending = nil, 0
	c.mu.Unlock()
	c.ws.CloseNow()
}

func (c *Conn) enqueue(msg []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.pending >= sendQueue {
		c.mu.Unlock()
		c.Close(int(websocket.StatusPolicyViolation), "client too slow: send queue full")
		return
	}
	c.queue = append(c.queue, msg)
	c.pending++
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.writeQueued()
	}
}

// writeQueued writes the queued frames in order and returns when none is
// left, so that an idle connection has no writer goroutine; once the
// connection is closing it sends the close frame after them.
func (c *Conn) writeQueued() {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			closing, aborted := c.closing, c.aborted
			c.writing = closing // a closed connection never gets another writer
			c.mu.Unlock()
			if closing && !aborted {
				c.ws.Close(c.closeCode, c.closeReason)
			}
			return
		}
		c.mu.Unlock()
		for i, msg := range batch {
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, msg)
			cancel()
			if err != nil {
				c.abort(websocket.StatusGoingAway, "write failed")
				return
			}
			batch[i] = nil
			c.mu.Lock()
			c.pending--
			c.mu.Unlock()
		}
	}
}

// serveWS accepts a WebSocket connection to the live instance in, which
// the caller holds a reference to until this returns. Once the client is
// connected the connection takes a reference of its own and is served on a
// goroutine of its own (serve), and this returns: net/http's state for the
// request, and the request goroutine's stack, grown by the activation, are
// not kept for the life of the connection.
func (h *handler) serveWS(w http.ResponseWriter, r *http.Request, in *instance) {
	rt := h.rt
	if hijackable(w) {
		w = smallBuffers{w}
	}
	ws, err := websocket.Accept(w, r, h.acceptOptions())
	if err != nil {
		return // Accept has answered the request
	}

	// Messages up to MaxMessageBytes are read; larger ones are drained
	// and refused without closing the connection, up to this hard cap.
	ws.SetReadLimit(int64(rt.opts.MaxMessageBytes) * 64)
	id := r.URL.Query().Get("_pk")
	if id == "" {
		id = ids.Random()
	}
	c := &Conn{id: id, in: in, ws: ws, done: make(chan struct{})}
	if rt.tel.Tracing() {
		c.upgrade = trace.SpanContextFromContext(r.Context())
	}

	raw, err := in.obj.stateJSON()
	if err != nil {
		c.Close(int(websocket.StatusInternalError), "encode state")
		return
	}
	in.stateMu.Lock()
	c.enqueue(identityFrame(in.key.Name, in.cls.kebab))
	c.enqueue(stateFrame(raw))
	in.addConn(c)
	in.stateMu.Unlock()

	ctx := context.WithValue(rt.ctx, connKey, c)
	if hook, ok := in.obj.(ConnectHook); ok {
		if err := in.run(ctx, func() error { return hook.OnConnect(ctx, c, r) }); err != nil {
			in.removeConn(c)
			c.Close(int(websocket.StatusPolicyViolation), truncateReason(err.Error()))
			return
		}
	}
	rt.mu.Lock()
	in.refs++ // the connection's, released when serve returns
	rt.mu.Unlock()
	rt.tel.WSConnected(ctx, in.cls.name, 1)
	c.startKeepalive()
	go c.serve(ctx)
}

// connBufferSize is the size of a connection's read and write buffers.
// net/http hands a hijacked connection over with 4 KiB of each, which an
// idle connection would keep; reads and writes larger than the buffer
// bypass it, so a smaller one costs only a few more system calls for
// large frames.
const connBufferSize = 1 << 10

// smallBuffers makes websocket.Accept get the hijacked connection with
// buffers of connBufferSize rather than net/http's.
type smallBuffers struct{ http.ResponseWriter }

func (s smallBuffers) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	// Bytes the client sent after its request, not waiting for the
	// answer, must stay in the reader's buffer: that is where Accept
	// looks for them.
	n := brw.Reader.Buffered()
	if n > connBufferSize {
		return nc, brw, nil
	}
	b, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc), connBufferSize)
	if _, err := br.Peek(n); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, connBufferSize)), nil
}

// hijackable reports whether w, or a writer it wraps, can be hijacked, as
// websocket.Accept checks before it answers; without it Accept refuses the
// upgrade as not implemented.
func hijackable(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// serve reads the connection until it ends, then calls OnClose and lets go
// of the instance.
func (c *Conn) serve(ctx context.Context) {
	in := c.in
	defer in.rt.tel.WSConnected(ctx, in.cls.name, -1)
	defer in.rt.release(in)
	defer in.removeConn(c)
	defer c.stopKeepalive()
	code, reason := c.readLoop(ctx)
	c.Close(int(code), reason)
	if hook, ok := in.obj.(CloseHook); ok {
		_ = in.run(context.WithoutCancel(ctx), func() error { hook.OnClose(ctx, c, int(code), reason); return nil })
	}
}

// readLoop handles the client's messages one at a time, in order, until
// the connection ends, and returns how it ended.
func (c *Conn) readLoop(ctx context.Context) (websocket.StatusCode, string) {
	limit := int64(c.in.rt.opts.MaxMessageBytes)
	for {
		typ, rd, err := c.ws.Reader(ctx)
		if err != nil {
			return c.ended(err)
		}
		c.hear()
		// A buffer per message, not per connection: a connection that once
		// got a large message must not keep a buffer of its size.
		var buf bytes.Buffer
		n, err := buf.ReadFrom(io.LimitReader(hearing{rd, c}, limit+1))
		if err == nil && n > limit {
			buf = bytes.Buffer{}
			var rest int64
			rest, err = io.Copy(io.Discard, hearing{rd, c})
			if err == nil {
				c.enqueue(errorFrame(frameError, fmt.Sprintf(
					"message of %d bytes exceeds the limit of %d bytes; it was discarded", n+rest, limit)))
				continue
			}
		}
		if errors.Is(err, websocket.ErrMessageTooBig) {
			return websocket.StatusMessageTooBig, "message too large"
		}
		if err != nil {
			return c.ended(err)
		}
		c.busy.Store(true)
		c.handle(ctx, typ, buf.Bytes())
		c.hear()
		c.busy.Store(false)
	}
}

// ended says how a connection whose read failed with err ended: the
// client's close code, the reason the server aborted it, or going away.
func (c *Conn) ended(err error) (websocket.StatusCode, string) {
	if s := websocket.CloseStatus(err); s != -1 {
		return s, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return c.closeCode, c.closeReason
	}
	return websocket.StatusGoingAway, ""
}

// hearing notes each part of a message read as the client being heard
// from, so that a large message arriving slowly keeps its connection.
type hearing struct {
	r io.Reader
	c *Conn
}

func (h hearing) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		h.c.hear()
	}
	return n, err
}

// hear notes that the client was heard from now.
func (c *Conn) hear() { c.heard.Store(int64(time.Since(c.start))) }

// silence is how long the client has not been heard from.
func (c *Conn) silence() time.Duration {
	return time.Since(c.start) - time.Duration(c.heard.Load())
}

// startKeepalive arms the connection's keepalive timer (see
// Options.PingInterval), counting the client as heard from now. It costs a
// timer, not a goroutine, while the connection is idle.
func (c *Conn) startKeepalive() {
	c.start = time.Now()
	every := c.in.rt.opts.PingInterval
	if every <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = time.AfterFunc(every, c.keepalive)
}

func (c *Conn) stopKeepalive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}

// keepalive runs on the connection's timer: it pings a client silent for
// PingInterval, aborts one silent for ReadTimeout, and sets the timer for
// the next check. A client whose message is being handled is not read
// from meanwhile, so it is not held to the timeout then.
func (c *Conn) keepalive() {
	o := &c.in.rt.opts
	select {
	case <-c.done:
		return
	default:
	}
	if !c.busy.Load() && c.silence() >= o.PingInterval {
		// Ping waits for the pong, which readLoop reads.
		ctx, cancel := context.WithTimeout(context.Background(), max(o.ReadTimeout-c.silence(), time.Millisecond))
		if c.ws.Ping(ctx) == nil {
			c.hear()
		}
		cancel()
		if !c.busy.Load() && c.silence() >= o.ReadTimeout {
			c.abort(websocket.StatusAbnormalClosure, fmt.Sprintf("no pong within %s", o.ReadTimeout))
			return
		}
	}
	next := o.PingInterval
	if !c.busy.Load() {
		next = max(o.PingInterval-c.silence(), o.PingInterval/16)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.timer.Reset(next)
	}
}

// handle answers one client message.
func (c *Conn) handle(ctx context.Context, typ websocket.MessageType, msg []byte) {
	in := c.in
	var (
		f   frame
		err = errNotProtocol
	)
	if typ == websocket.MessageText {
		f, err = decodeFrame(msg)
	}
	switch {
	case errors.Is(err, errNotProtocol):
		if h, ok := in.obj.(MessageHandler); ok {
			cp := bytes.Clone(msg)
			if err := in.run(ctx, func() error { h.OnMessage(ctx, c, cp); return nil }); err != nil {
				in.reportError(ctx, err)
			}
			return
		}
		c.enqueue(errorFrame(frameError, `unrecognized message: expected a JSON frame of type "cf_agent_state" or "rpc"`))
	case err != nil && f.ID != "":
		c.enqueue(encodeReply(rpcReply{ID: f.ID, Error: err.Error()}))
	case err != nil && f.Type == frameState:
		c.enqueue(errorFrame(frameStateError, err.Error()))
	case err != nil:
		c.enqueue(errorFrame(frameError, err.Error()))
	case f.Type == frameState:
		c.pushState(ctx, f.State)
	default:
		c.call(ctx, f)
	}
}

// pushState applies a client's state push.
func (c *Conn) pushState(ctx context.Context, state []byte) {
	if c.Readonly() {
		c.enqueue(errorFrame(frameStateError, "Connection is readonly"))
		return
	}
	err := c.in.run(ctx, func() error { return c.in.obj.setStateJSON(ctx, state) })
	if err != nil {
		msg := err.Error()
		if !errors.Is(err, ErrStateRejected) {
			msg = "State update rejected: " + msg
		}
		c.enqueue(errorFrame(frameStateError, msg))
	}
}

// call answers an rpc frame.
func (c *Conn) call(ctx context.Context, f frame) {
	in := c.in
	reply := func(r rpcReply) { r.ID = f.ID; c.enqueue(encodeReply(r)) }
	_, m, err := in.rt.lookup(in.key.Class, f.Method, true)
	if err != nil {
		reply(rpcReply{Error: err.Error()})
		return
	}
	args, err := m.decodeArgs(in.cls.name, f.Args)
	if err != nil {
		reply(rpcReply{Error: err.Error()})
		return
	}
	o := CallOptions{conn: c}
	if m.stream {
		o.OnChunk = func(chunk json.RawMessage) error {
			select {
			case <-c.done:
				return errors.New("connection closed")
			default:
			}
			reply(rpcReply{Success: true, Done: &doneFalse, Result: chunk})
			return nil
		}
	}
	res, err := in.rt.invoke(ctx, in.cls, in.key.Name, m, args, o)
	if err != nil {
		var pe *PanicError
		if errors.As(err, &pe) {
			in.reportError(ctx, fmt.Errorf("%s.%s: %w", in.cls.name, m.wire, err))
		}
		reply(rpcReply{Error: err.Error()})
		return
	}
	reply(rpcReply{Success: true, Done: &doneTrue, Result: res})
}

// truncateReason fits a close reason into a control frame (123 bytes).
func truncateReason(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}
