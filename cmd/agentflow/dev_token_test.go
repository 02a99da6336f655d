package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDevToken: --token wins over AGENTFLOW_TOKEN, even empty; a token that
// cannot be sent in a header is refused, naming where it came from.
func TestDevToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		args  []string
		env   string
		token string
		err   string
	}{
		{"none", nil, "", "", ""},
		{"environment", nil, "from-env", "from-env", ""},
		{"flag", []string{"--token", "from-flag"}, "", "from-flag", ""},
		{"flag wins", []string{"--token=from-flag"}, "from-env", "from-flag", ""},
		{"empty flag turns it off", []string{"--token="}, "from-env", "", ""},
		{"bad flag", []string{"--token", "two words"}, "", "", "--token: the token has ' ' at byte 3: it must be visible ASCII characters, without spaces"},
		{"bad environment", nil, "line\n", "", "AGENTFLOW_TOKEN: the token has '\\n' at byte 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("dev", flag.ContinueOnError)
			v := fs.String("token", "", "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			getenv := func(k string) string {
				if k == envToken {
					return tc.env
				}
				return ""
			}
			got, err := devToken(fs, *v, getenv)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("devToken = %q, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.token {
				t.Fatalf("devToken = %q, %v; want %q", got, err, tc.token)
			}
		})
	}

	// dev refuses a bad token before it starts anything.
	var stdout, stderr bytes.Buffer
	db := filepath.Join(t.TempDir(), "dev.db")
	err := runDev(t.Context(), []string{"--db", db, "--token", "a b"}, noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--token: the token has ' '") || stdout.Len() > 0 {
		t.Errorf("dev --token 'a b' = %v, printing %q; want the token's error and nothing started", err, &stdout)
	}
}

// TestDevServesWithToken: with AGENTFLOW_TOKEN set, dev's agents server
// refuses clients without it, over HTTP and WebSocket, and serves those
// that send it; dev's own flight request still goes through.
func TestDevServesWithToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	db := filepath.Join(t.TempDir(), "dev.db")
	env := func(k string) string {
		if k == envToken {
			return "s3cret"
		}
		return ""
	}
	exit := make(chan error, 1)
	go func() {
		exit <- runDev(ctx, []string{"--db", db, "--grace", "200ms", "--addr", "127.0.0.1:0",
			"--flight-delay", "200ms", "--check-in-wait", "100ms"}, env, &stdout, &stderr)
	}()

	addrRE := regexp.MustCompile(`agents: ws://(127\.0\.0\.1:\d+)/agents/counter/<name>`)
	var addr string
	for deadline := time.Now().Add(15 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-exit:
			t.Fatalf("dev exited (%v) before serving agents\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no agents address\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	}
	// dev prints the token's line a moment after the addresses.
	want := "agents: clients must send the token (--token or AGENTFLOW_TOKEN)"
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stdout.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
			break
		}
	}

	for _, tc := range []struct {
		name   string
		path   string
		header string // Authorization
		ws     bool
		status int
	}{
		{"no token", "/agents/my-agent/web/state", "", false, http.StatusUnauthorized},
		{"wrong token", "/agents/my-agent/web/state", "Bearer nope", false, http.StatusUnauthorized},
		{"header", "/agents/my-agent/web/state", "Bearer s3cret", false, http.StatusOK},
		{"query parameter", "/agents/my-agent/web/state?token=s3cret", "", false, http.StatusOK},
		{"websocket without", "/agents/counter/x", "", true, http.StatusUnauthorized},
		{"websocket with", "/agents/counter/x?token=s3cret", "", true, http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			var resp *http.Response
			if tc.ws {
				ws, r, err := websocket.Dial(rctx, "ws://"+addr+tc.path, nil)
				if err == nil {
					ws.CloseNow()
				} else if r == nil {
					t.Fatal(err)
				}
				resp = r
			} else {
				req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				if resp, err = http.DefaultClient.Do(req); err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// dev sends its flight request once the server is up: wait for it.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(stdout.String(), `POST /agents/my-agent/traveller (user-id: ada@example.com) → {"taskId"`); {
		if time.Now().After(deadline) {
			t.Fatalf("dev's own flight request did not go through:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-exit:
		if err != nil {
			t.Errorf("dev: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal(fmt.Sprintf("dev did not stop\nstdout:\n%s", stdout.String()))
	}
}
