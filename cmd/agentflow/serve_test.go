package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"agentflow/admin"
	"agentflow/internal/httpserver"
	"agentflow/store/sqlite"
)

// TestServeHostileClients holds connections to `agentflow serve` the way a
// hostile or broken client would — many idle ones, headers sent a byte at a
// time, a body that never ends, a body over the limit — and checks that the
// other clients are answered meanwhile, that the oversized body is refused
// without being read, and that the slow headers' connection is cut at the
// server's read-header timeout.
func TestServeHostileClients(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "serve.db")
	st, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base, done, stderr := startServe(ctx, t, []string{"--store", db, "--addr", "127.0.0.1:0"}, func(string) string { return "" })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// 200 connections that never send a byte.
	for range 200 {
		dial(t)
	}
	// Headers, a byte every 100 ms: never a whole request.
	slowHeaders := dial(t)
	go func() {
		for _, b := range []byte("GET " + admin.APIPrefix + "/workflows HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)) {
			if _, err := slowHeaders.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	// A body announced as 1 MB, of which 10 bytes come.
	slowBody := dial(t)
	if _, err := io.WriteString(slowBody, "POST "+admin.APIPrefix+"/workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"workflow"); err != nil {
		t.Fatal(err)
	}
	started := time.Now()

	// A body over the limit is refused with 413 and a JSON error naming it.
	big := bytes.NewReader(bytes.Repeat([]byte("x"), admin.DefaultMaxBodyBytes+1))
	resp, err := http.Post(base+admin.APIPrefix+"/workflows", "application/json", big)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "bytes") {
		t.Errorf("a body of %d bytes: %d %s; want 413 naming the limit", admin.DefaultMaxBodyBytes+1, resp.StatusCode, body)
	}

	// The others are served, promptly, all the while.
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 20 {
		t0 := time.Now()
		resp, err := client.Get(base + admin.APIPrefix + "/workflows")
		if err != nil {
			t.Fatalf("request %d beside the hostile clients: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		if d := time.Since(t0); d > time.Second {
			t.Errorf("request %d took %s beside the hostile clients", i, d)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The slow headers' connection is closed at the read-header timeout,
	// without an answer.
	_ = slowHeaders.SetReadDeadline(time.Now().Add(httpserver.DefaultReadHeaderTimeout + 5*time.Second))
	n, err := bufio.NewReader(slowHeaders).Read(make([]byte, 1))
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("the slow headers' connection was still open %s after it started", time.Since(started).Round(time.Second))
	case n > 0:
		t.Errorf("the slow headers were answered")
	}
	if d := time.Since(started); d < httpserver.DefaultReadHeaderTimeout-time.Second {
		t.Errorf("the slow headers' connection was closed after %s, before the %s read-header timeout", d, httpserver.DefaultReadHeaderTimeout)
	}

	// A request in progress holds a graceful stop for up to 10 s; this
	// one would wait for the read timeout.
	slowBody.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("serve ended with exit %d: %s", code, stderr.String())
	}
}
