package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// syncBuffer is a bytes.Buffer that dev may write while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDevServesAgents runs `agentflow dev` until "Ctrl-C" (its context is
// cancelled) and checks the agents server it prints the address of: an
// unknown class answers 400, and a WebSocket client of the Counter gets
// its identity and state and can call it.
func TestDevServesAgents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	db := filepath.Join(t.TempDir(), "dev.db")
	exit := make(chan int, 1)
	go func() {
		code := 0
		if err := runDev(ctx, []string{"--db", db, "--grace", "200ms", "--addr", "127.0.0.1:0", "--flight-delay", "200ms", "--check-in-wait", "100ms"}, noEnv, &stdout, &stderr); err != nil {
			fmt.Fprintf(&stderr, "dev: %v\n", err)
			code = 1
		}
		exit <- code
	}()

	addrRE := regexp.MustCompile(`agents: ws://(127\.0\.0\.1:\d+)/agents/counter/<name>`)
	var addr string
	deadline := time.Now().Add(15 * time.Second)
	for addr == "" {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("dev exited %d before serving agents\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no agents address\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	}

	resp, err := http.Get("http://" + addr + "/agents/nope/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /agents/nope/x: status %d, want 400", resp.StatusCode)
	}

	// The flights example's agent answers the seed's request over HTTP.
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/agents/my-agent/web", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("user-id", "grace@example.com")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var task struct {
		TaskID string `json:"taskId"`
	}
	err = json.NewDecoder(resp.Body).Decode(&task)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || task.TaskID == "" {
		t.Errorf("POST /agents/my-agent/web: status %d, %+v, %v; want 200 with a taskId", resp.StatusCode, task, err)
	}
	if resp, err = http.Post("http://"+addr+"/agents/my-agent/web", "", nil); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /agents/my-agent/web without user-id: status %d, want 400", resp.StatusCode)
	}

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	ws, _, err := websocket.Dial(wctx, "ws://"+addr+"/agents/counter/x?_pk=dev-test", nil)
	if err != nil {
		t.Fatalf("WebSocket to /agents/counter/x: %v", err)
	}
	defer ws.CloseNow()
	next := func() map[string]any {
		t.Helper()
		_, b, err := ws.Read(wctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		return m
	}
	if m := next(); m["type"] != "cf_agent_identity" || m["name"] != "x" || m["agent"] != "counter" || m["stateFollows"] != true {
		t.Fatalf("first frame = %v, want the identity of counter x with stateFollows", m)
	}
	if m := next(); m["type"] != "cf_agent_state" {
		t.Fatalf("second frame = %v, want the state", m)
	}
	if err := ws.Write(wctx, websocket.MessageText, []byte(`{"type":"rpc","id":"1","method":"increment","args":[5]}`)); err != nil {
		t.Fatal(err)
	}
	for {
		m := next()
		if m["type"] != "rpc" {
			continue // the state the call set
		}
		if m["id"] != "1" || m["success"] != true || m["result"] != float64(5) {
			t.Fatalf("reply to increment(5) = %v, want success with 5", m)
		}
		break
	}

	// The Think agent: a client asks over its WebSocket and receives the
	// turn as cf_agent_think frames (the scripted model calls get_time,
	// then answers), ending with "done".
	tws, _, err := websocket.Dial(wctx, "ws://"+addr+"/agents/assistant/x?_pk=dev-test", nil)
	if err != nil {
		t.Fatalf("WebSocket to /agents/assistant/x: %v", err)
	}
	defer tws.CloseNow()
	if err := tws.Write(wctx, websocket.MessageText, []byte(`{"type":"rpc","id":"q","method":"ask","args":["What time is it in Asia/Tokyo?"]}`)); err != nil {
		t.Fatal(err)
	}
	var events []string
	var replied bool
	var answer string
	for {
		_, b, err := tws.Read(wctx)
		if err != nil {
			t.Fatalf("read from the Assistant: %v (events so far %v)", err, events)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		switch m["type"] {
		case "rpc":
			res, _ := m["result"].(map[string]any)
			if m["id"] != "q" || m["success"] != true || res["accepted"] != true {
				t.Fatalf("reply to ask = %v", m)
			}
			replied = true
		case "cf_agent_think":
			ev, _ := m["event"].(string)
			events = append(events, ev)
			if ev == "tool_call_end" && (m["name"] != "get_time" || fmt.Sprint(m["arguments"]) != "map[zone:Asia/Tokyo]") {
				t.Errorf("tool call frame = %v", m)
			}
			if ev == "text" {
				answer += m["text"].(string)
			}
			if ev == "done" && m["status"] != "completed" {
				t.Errorf("done frame = %v", m)
			}
		}
		if replied && len(events) > 0 && events[len(events)-1] == "done" {
			break
		}
	}
	if got := strings.Join(events, ","); got != "tool_call_start,tool_call_delta,tool_call_end,usage,finish,text,usage,finish,done" {
		t.Errorf("cf_agent_think events = %s", got)
	}
	if !strings.Contains(answer, "in Asia/Tokyo. (This answer is scripted") {
		t.Errorf("streamed answer = %q", answer)
	}

	// Ctrl-C: the server, the runtime and the engine stop, and dev exits 0.
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("dev exited %d after Ctrl-C\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("dev did not exit within 20 s of Ctrl-C\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	// The runtime closes the connection with 1001 (going away); the close
	// frame may be lost to the runtime cancelling the connection's read at
	// the same time, so only the closing is checked.
	if _, _, err := ws.Read(rctx); err == nil || rctx.Err() != nil {
		t.Errorf("read after dev stopped: %v, want the connection closed", err)
	}
	if _, err := http.Get("http://" + addr + "/agents/counter/x"); err == nil {
		t.Errorf("the agents server still answers after dev exited")
	}
}
