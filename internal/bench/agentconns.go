package bench

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
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/agent"
)

// agentConns measures what idle WebSocket connections cost the server. The
// server is a child process (this binary run again, see IsChild) serving
// ConnAgents sink agents, all activated before the baseline; this process
// opens Conns connections to them over loopback, each of which sends one
// text message of MessageBytes (not a protocol frame: it goes to the sink's
// OnMessage) and then stays open, reading nothing. Once every message has
// been handled the child's heap and goroutines (after a GC) and its
// resident set (after returning freed memory to the OS) are compared with
// the baseline; then the connections are closed and the child sampled
// again.
func (r *runner) agentConns(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	if err := raiseFileLimit(uint64(cfg.Conns) + 1024); err != nil {
		return nil, err
	}
	ch, err := r.startChild(ctx, childConfig{
		Backend: cfg.Backend, DSN: cfg.DSN, Dir: cfg.Dir, Synchronous: cfg.Synchronous, Agents: cfg.ConnAgents,
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, ch.stop()) }()

	msg := bytes.Repeat([]byte("x"), cfg.MessageBytes)
	url := func(i int) string { return "/agents/" + agent.Kebab(sinkClass) + "/" + sinkName(i%cfg.ConnAgents) }
	// Warm up: connections come and go, so that the server's pools and
	// maps are part of the baseline.
	warm := min(cfg.Conns/10, 200)
	r.progress("child %d on %s: %d agents live; warming up with %d connections", ch.pid, ch.addr, cfg.ConnAgents, warm)
	conns, err := openConns(ctx, ch.addr, warm, cfg.Callers, url, msg)
	if err != nil {
		closeConns(conns)
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := ch.waitMessages(ctx, int64(warm)); err != nil {
		closeConns(conns)
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	closeConns(conns)
	if err := ch.waitGoroutines(ctx, -1, 0); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	base, err := ch.sample(ctx, true)
	if err != nil {
		return nil, err
	}
	r.progress("baseline: heap %d B, RSS %d B, %d goroutines; opening %d connections that each send %d bytes",
		base.HeapBytes, base.rss, base.Goroutines, cfg.Conns, cfg.MessageBytes)
	start := time.Now()
	conns, err = openConns(ctx, ch.addr, cfg.Conns, cfg.Callers, url, msg)
	defer func() { closeConns(conns) }()
	if err != nil {
		return nil, err
	}
	if err := ch.waitMessages(ctx, int64(warm+cfg.Conns)); err != nil {
		return nil, err
	}
	opened := time.Since(start)
	idle, err := ch.sample(ctx, true)
	if err != nil {
		return nil, err
	}
	r.progress("%d connections open and idle after %s: heap %d B, RSS %d B, %d goroutines",
		len(conns), opened.Round(time.Millisecond), idle.HeapBytes, idle.rss, idle.Goroutines)

	closeConns(conns)
	conns = nil
	// The store's own goroutines come and go (a pool's connection opener,
	// say); a connection's that stayed would show by the thousand.
	if err := ch.waitGoroutines(ctx, base.Goroutines, 5); err != nil {
		return nil, err
	}
	// First what the runtime returns by itself once a GC has run, then
	// what is left once everything freed is returned.
	gced, err := ch.sample(ctx, false)
	if err != nil {
		return nil, err
	}
	after, err := ch.sample(ctx, true)
	if err != nil {
		return nil, err
	}
	r.progress("closed: heap %d B, RSS %d B after a GC, %d B after returning freed memory, %d goroutines",
		after.HeapBytes, gced.rss, after.rss, after.Goroutines)

	n := float64(cfg.Conns)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / n }
	rs := []Result{
		metric("heap_bytes_per_conn", per(idle.HeapBytes, base.HeapBytes), "bytes"),
		metric("stack_bytes_per_conn", per(idle.StackBytes, base.StackBytes), "bytes"),
		metric("goroutines_per_conn", float64(idle.Goroutines-base.Goroutines)/n, "goroutines"),
		metric("heap_bytes_after_close_per_conn", per(after.HeapBytes, base.HeapBytes), "bytes"),
		metric("goroutines_after_close", float64(after.Goroutines-base.Goroutines), "goroutines"),
		metric("open_s", opened.Seconds(), "s"),
	}
	if base.rss >= 0 {
		rs = append(rs,
			metric("rss_bytes_per_conn", per(uint64(idle.rss), uint64(base.rss)), "bytes"),
			metric("rss_bytes_after_close_gc_per_conn", per(uint64(gced.rss), uint64(base.rss)), "bytes"),
			metric("rss_bytes_after_close_per_conn", per(uint64(after.rss), uint64(base.rss)), "bytes"),
			metric("rss_bytes_baseline", float64(base.rss), "bytes"),
		)
	}
	return rs, nil
}

// child is a running bench child.
type child struct {
	cmd    *exec.Cmd
	pid    int
	addr   string
	stdin  io.Closer
	exited chan struct{} // closed once the process has been waited for
	err    error         // Wait's, once exited is closed
	client *http.Client
}

// startChild starts this binary as a bench child with cc and waits until
// it listens.
func (r *runner) startChild(ctx context.Context, cc childConfig) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	b, err := json.Marshal(cc)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), EnvChild+"="+string(b))
	cmd.Stderr = r.cfg.Log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start child: %w", err)
	}
	ch := &child{
		cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, exited: make(chan struct{}),
		// A connection per request: the child's goroutine count then holds
		// one for the request being served and none for idle ones.
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute},
	}
	type listening struct {
		addr string
		err  error
	}
	got := make(chan listening, 1)
	go func() {
		addr, err := waitListening(stdout, r.cfg.Log)
		got <- listening{addr, err}
	}()
	go func() {
		ch.err = cmd.Wait()
		close(ch.exited)
	}()
	select {
	case l := <-got:
		if l.err != nil {
			return nil, errors.Join(fmt.Errorf("child: %w", l.err), ch.stop())
		}
		ch.addr = l.addr
		return ch, nil
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), ch.stop())
	}
}

// stop closes the child's standard input, which makes it stop and remove
// its store, and waits for it to exit; it kills it after a minute.
func (ch *child) stop() error {
	ch.stdin.Close()
	select {
	case <-ch.exited:
	case <-time.After(time.Minute):
		ch.cmd.Process.Kill()
		<-ch.exited
		return errors.New("the child did not stop within a minute of its stdin closing; killed it")
	}
	if ch.err != nil {
		return fmt.Errorf("child: %w", ch.err)
	}
	return nil
}

// sample is the child's figures after a GC (and, with release, after
// returning freed memory to the OS), with its resident set.
type sample struct {
	childStats
	rss int64 // bytes; -1 where /proc is not there
}

func (ch *child) sample(ctx context.Context, release bool) (sample, error) {
	q := "?gc"
	if release {
		q += "&release"
	}
	var s sample
	if err := ch.get(ctx, "/bench/stats"+q, &s.childStats); err != nil {
		return s, err
	}
	s.rss = residentOf(ch.pid)
	return s, nil
}

func (ch *child) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ch.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := ch.client.Do(req)
	if err != nil {
		select {
		case <-ch.exited:
			return fmt.Errorf("the child has exited: %v", ch.err)
		default:
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitMessages waits until the child's sinks have got n messages.
func (ch *child) waitMessages(ctx context.Context, n int64) error {
	var got int64
	for {
		if err := ch.get(ctx, "/bench/messages", &got); err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages handled: %w", got, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitGoroutines waits until the child's goroutine count comes down to
// target+slack, or with target < 0 stops changing, giving up after 30 s
// (closed connections finish their close handshakes in the background).
func (ch *child) waitGoroutines(ctx context.Context, target, slack int) error {
	deadline := time.Now().Add(30 * time.Second)
	prev := -1
	for {
		var s childStats
		if err := ch.get(ctx, "/bench/stats", &s); err != nil {
			return err
		}
		if target >= 0 && s.Goroutines <= target+slack || target < 0 && s.Goroutines == prev {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the child still has %d goroutines 30 s after the connections closed (baseline %d)", s.Goroutines, target)
		}
		prev = s.Goroutines
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// residentOf reads a process's resident set size (VmRSS) from /proc.
func residentOf(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// openConns opens n WebSocket connections to the server at addr, path(i)
// for the i-th, from callers goroutines; each sends msg as one text frame
// once connected and then reads nothing. It returns the connections opened
// (all n unless it fails).
func openConns(ctx context.Context, addr string, n, callers int, path func(int) string, msg []byte) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(callers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := openConn(ctx, addr, path(i), msg)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	open := conns[:0]
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, firstErr
}

// openConn makes the WebSocket handshake on a bare TCP connection and
// sends msg as one text frame. Client frames are masked; the mask key 0
// leaves the payload as it is, so every connection sends the same bytes.
func openConn(ctx context.Context, addr, path string, msg []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, err }
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr); err != nil {
		return fail(err)
	}
	// Read the response; frames after it may come along, and are dropped:
	// this client reads nothing else.
	var resp []byte
	buf := make([]byte, 512)
	for !bytes.Contains(resp, []byte("\r\n\r\n")) {
		k, err := c.Read(buf)
		if err != nil {
			return fail(fmt.Errorf("handshake: %w", err))
		}
		resp = append(resp, buf[:k]...)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) {
		line, _, _ := bytes.Cut(resp, []byte("\r\n"))
		return fail(fmt.Errorf("handshake: %s", line))
	}
	if _, err := (&net.Buffers{frameHeader(0x1, len(msg)), msg}).WriteTo(c); err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// frameHeader is the header of a final client frame of n bytes, masked
// with the key 0.
func frameHeader(op byte, n int) []byte {
	h := []byte{0x80 | op}
	switch {
	case n < 126:
		h = append(h, 0x80|byte(n))
	case n <= 0xffff:
		h = append(h, 0x80|126, byte(n>>8), byte(n))
	default:
		h = append(h, 0x80|127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	return append(h, 0, 0, 0, 0)
}

// closeConns sends each connection a close frame (1000) and closes it.
func closeConns(conns []net.Conn) {
	for _, c := range conns {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
		c.Close()
	}
}
