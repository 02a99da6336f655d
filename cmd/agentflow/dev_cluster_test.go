package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// startDevInProcess runs `agentflow dev` with args until the test ends and returns
// the address its agents server listens on.
func startDevInProcess(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	var stdout, stderr syncBuffer
	exit := make(chan error, 1)
	go func() { exit <- runDev(ctx, args, noEnv, &stdout, &stderr) }()
	addrRE := regexp.MustCompile(`agents: ws://(127\.0\.0\.1:\d+)/agents/counter/<name>`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			t.Cleanup(func() {
				if err := <-exit; err != nil {
					t.Errorf("dev %v: %v\nstderr:\n%s", args, err, stderr.String())
				}
			})
			return m[1]
		}
		select {
		case err := <-exit:
			t.Fatalf("dev %v exited before serving agents: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev %v printed no agents address\nstdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
		}
	}
}

// Two dev processes on one store with a cluster secret are one cluster:
// clients of one counter connected to either see the same agent.
func TestDevCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel) // runs before startDev's cleanups wait for dev to exit
	db := filepath.Join(t.TempDir(), "cluster.db")
	common := []string{"--db", db, "--grace", "100ms", "--flight-delay", "100ms", "--check-in-wait", "50ms", "--addr", "127.0.0.1:0", "--cluster-secret", "dev-secret"}
	a := startDevInProcess(t, ctx, common...)
	b := startDevInProcess(t, ctx, common...)

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	dial := func(addr string) (*websocket.Conn, func() map[string]any) {
		ws, _, err := websocket.Dial(wctx, "ws://"+addr+"/agents/counter/shared", nil)
		if err != nil {
			t.Fatalf("WebSocket through %s: %v", addr, err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		return ws, func() map[string]any {
			t.Helper()
			_, b, err := ws.Read(wctx)
			if err != nil {
				t.Fatalf("read through %s: %v", addr, err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("frame %s: %v", b, err)
			}
			return m
		}
	}
	wsA, nextA := dial(a)
	nextA() // identity
	nextA() // state
	_, nextB := dial(b)
	nextB()
	nextB()
	if err := wsA.Write(wctx, websocket.MessageText, []byte(`{"type":"rpc","id":"1","method":"increment","args":[3]}`)); err != nil {
		t.Fatal(err)
	}
	// b's client sees a's change: one agent, whichever node it lives on.
	for {
		m := nextB()
		if m["type"] == "cf_agent_state" {
			if got := fmt.Sprint(m["state"]); got != "map[count:3]" {
				t.Fatalf("state pushed through %s = %s, want count 3", b, got)
			}
			break
		}
	}
}
