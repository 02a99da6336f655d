package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"agentflow/admin"
	"agentflow/store"
	"agentflow/store/sqlite"
)

// cliServer serves the admin handler on loopback over a fresh SQLite
// store holding one finished instance (a retried step) and one waiting.
func cliServer(t *testing.T) (url string, st store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cli.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"wf-done", "wf-waiting"} {
		must(st.CreateInstances(ctx, []*store.Instance{{ID: id, Workflow: "report", Params: []byte(`["north"]`),
			Status: store.StatusRunning, Owner: "n1", CreatedAt: t0, UpdatedAt: t0}}))
	}
	l := store.Lease{InstanceID: "wf-done", Owner: "n1", Fence: 1}
	_, err = st.SaveStep(ctx, l, store.Step{Seq: 0, Name: "fetch", Kind: store.KindDo, State: store.StepPending, Attempt: 2,
		ErrorName: "Error", ErrorMessage: "connection reset", WakeAt: t0.Add(3 * time.Second), StartedAt: t0}, t0.Add(time.Second))
	must(err)
	_, err = st.SaveStep(ctx, l, store.Step{Seq: 0, Name: "fetch", Kind: store.KindDo, State: store.StepDone, Attempt: 2,
		Result: []byte(`"ok"`), StartedAt: t0.Add(3 * time.Second)}, t0.Add(4*time.Second))
	must(err)
	must(st.Finish(ctx, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`"report: north"`)}, t0.Add(5*time.Second)))
	l = store.Lease{InstanceID: "wf-waiting", Owner: "n1", Fence: 1}
	must(st.Suspend(ctx, l, store.Suspension{
		Step:   &store.Step{Seq: 0, Name: "confirm", Kind: store.KindWait, State: store.StepPending, WakeAt: t0.Add(time.Hour), StartedAt: t0},
		Status: store.StatusWaiting, WakeAt: t0.Add(time.Hour), WaitingEvent: "email-confirmed"}, t0.Add(time.Second)))
	srv := httptest.NewServer(admin.NewHandler(admin.Options{Store: st, Token: "tok"}))
	t.Cleanup(srv.Close)
	return srv.URL, st
}

func TestCLI(t *testing.T) {
	t.Parallel()
	url, _ := cliServer(t)
	env := map[string]string{envServer: url, envToken: "tok"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  []string // in stdout
		err  []string // in stderr
	}{
		{"describe draws the timeline", []string{"workflows", "describe", "wf-done"}, 0,
			[]string{"wf-done  report  COMPLETE", `output  "report: north"`, "fetch", "|", "x", "attempt 1 failed", "connection reset"}, nil},
		{"describe a wait", []string{"workflows", "describe", "wf-waiting"}, 0,
			[]string{"waiting for email-confirmed", ">"}, nil},
		{"describe --json", []string{"workflows", "describe", "wf-done", "--json"}, 0, []string{`"status": "complete"`, `"attempts"`}, nil},
		{"pause", []string{"workflows", "pause", "wf-waiting"}, 0, []string{"wf-waiting: paused"}, nil},
		{"resume", []string{"workflows", "resume", "wf-waiting"}, 0, []string{"wf-waiting: waiting"}, nil},
		{"send-event", []string{"workflows", "send-event", "wf-waiting", "email-confirmed", "--payload", `{"code":"1"}`}, 0, []string{`sent "email-confirmed"`}, nil},
		{"create", []string{"workflows", "create", "report", "--id", "wf-new", "--params", `["a"]`}, 0, []string{"wf-new: queued"}, nil},
		{"pause a finished instance", []string{"workflows", "pause", "wf-done"}, 1, nil, []string{"failed_precondition", "wf-done", "complete"}},
		{"unknown instance", []string{"workflows", "describe", "wf-nope"}, 1, nil, []string{"not_found", "wf-nope"}},
		{"wrong token", []string{"workflows", "describe", "wf-done", "--token", "nope"}, 1, nil, []string{"unauthenticated"}},
		{"bad params", []string{"workflows", "create", "report", "--params", "{"}, 2, nil, []string{"--params", "not valid JSON"}},
		{"missing argument", []string{"workflows", "pause"}, 2, nil, []string{"the instance ID"}},
		{"unknown flag", []string{"workflows", "describe", "x", "--nope"}, 2, nil, []string{"unknown flag: --nope"}},
		{"bad agent", []string{"agents", "describe", "Counter"}, 2, nil, []string{"CLASS/NAME"}},
		{"bad time", []string{"workflows", "list", "--created-from", "monday"}, 2, nil, []string{"--created-from"}},
		{"unknown agent", []string{"agents", "describe", "Counter/nobody"}, 1, nil, []string{"not_found", "Counter/nobody"}},
		{"outbox", []string{"outbox", "list", "--undelivered"}, 0, []string{"no outbox rows"}, nil},
		{"outbox bad limit", []string{"outbox", "list", "--limit", "101"}, 1, nil, []string{"invalid_argument", "limit"}},
		{"no server", []string{"workflows", "describe", "x", "--server", "http://127.0.0.1:1"}, 1, nil, []string{"127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runWith(context.Background(), tc.args, getenv, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.out {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			for _, want := range tc.err {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, &stderr)
				}
			}
		})
	}
}

func TestCLIList(t *testing.T) {
	t.Parallel()
	url, _ := cliServer(t)
	getenv := func(k string) string { return map[string]string{envServer: url, envToken: "tok"}[k] }
	var stdout, stderr bytes.Buffer
	if code := runWith(context.Background(), []string{"workflows", "list", "--status", "complete"}, getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	if out := stdout.String(); !strings.Contains(out, "wf-done") || strings.Contains(out, "wf-waiting") || !strings.Contains(out, "2 instances: waiting 1 · complete 1") {
		t.Errorf("workflows list --status complete:\n%s", out)
	}
	stdout.Reset()
	if code := runWith(context.Background(), []string{"workflows", "list", "--json"}, getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	var page admin.WorkflowPage
	if err := json.Unmarshal(stdout.Bytes(), &page); err != nil || len(page.Workflows) != 2 {
		t.Errorf("workflows list --json: %v\n%s", err, &stdout)
	}
}

func TestCLIWatchRedrawsOnChange(t *testing.T) {
	t.Parallel()
	url, st := cliServer(t)
	getenv := func(k string) string { return map[string]string{envServer: url, envToken: "tok"}[k] }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- runWith(ctx, []string{"workflows", "describe", "wf-waiting", "--watch"}, getenv, &stdout, &stderr)
	}()
	waitFor := func(s string) {
		for !strings.Contains(stdout.String(), s) {
			if ctx.Err() != nil {
				t.Fatalf("no %q in:\n%s", s, stdout.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("WAITING")
	if _, err := st.Pause(ctx, "wf-waiting", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor("PAUSED")
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("--watch ended with exit %d: %s", code, stderr.String())
	}
}

func TestServeNeedsAStore(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	noEnv := func(string) string { return "" }
	if code := runWith(context.Background(), []string{"serve"}, noEnv, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--store") {
		t.Errorf("serve without --store: exit %d, %s", code, &stderr)
	}
	stderr.Reset()
	missing := filepath.Join(t.TempDir(), "nope.db")
	if code := runWith(context.Background(), []string{"serve", "--store", missing}, noEnv, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "nope.db") {
		t.Errorf("serve with a missing file: exit %d, %s", code, &stderr)
	}
	badConfig := filepath.Join(t.TempDir(), "agentflow.yaml")
	if err := os.WriteFile(badConfig, []byte("store: x.db\nadress: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ config, want string }{
		{badConfig, "adress"},
		{filepath.Join(t.TempDir(), "none.yaml"), "none.yaml"},
	} {
		stderr.Reset()
		if code := runWith(context.Background(), []string{"serve", "--config", tc.config}, noEnv, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("serve --config %s: exit %d, %s; want exit 2 naming %q", tc.config, code, &stderr, tc.want)
		}
	}
}

// TestServe runs `agentflow serve` on an existing SQLite file named by its
// configuration file, with a token from the environment, and the CLI
// against it.
func TestServe(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "serve.db")
	st, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.CreateInstances(context.Background(), []*store.Instance{{ID: "wf-served", Workflow: "report",
		Params: []byte(`null`), Status: store.StatusQueued, CreatedAt: now, UpdatedAt: now, WakeAt: now}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// The store and address come from the configuration file; the token
	// in the file is overridden by the environment's.
	cfg := filepath.Join(t.TempDir(), "agentflow.yaml")
	if err := os.WriteFile(cfg, []byte("store: "+db+"\naddr: 127.0.0.1:0\ntoken: from-the-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envConfig: cfg, envToken: "tok"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base, done, stderr := startServe(ctx, t, nil, func(k string) string { return env[k] })
	// /metrics, behind the token: the instances by status, from the store.
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"tok", http.StatusOK}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /metrics with token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusOK && !strings.Contains(string(body), `agentflow_workflow_instances{agentflow_status="queued"} 1`) {
			t.Errorf("/metrics lacks the queued instance:\n%s", body)
		}
	}
	var out, errOut bytes.Buffer
	cliEnv := func(k string) string { return map[string]string{envServer: base, envToken: "tok"}[k] }
	if code := runWith(ctx, []string{"workflows", "terminate", "wf-served"}, cliEnv, &out, &errOut); code != 0 || !strings.Contains(out.String(), "wf-served: terminated") {
		t.Errorf("terminate through serve: exit %d: %s %s", code, &out, &errOut)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("serve ended with exit %d: %s", code, stderr.String())
	}
}

// startServe runs `agentflow serve` with args and getenv until ctx is done
// and returns its dashboard's base URL once it prints it, the channel its
// exit code arrives on, and its stderr.
func startServe(ctx context.Context, t *testing.T, args []string, getenv func(string) string) (base string, done <-chan int, stderr *syncBuffer) {
	t.Helper()
	var stdout syncBuffer
	stderr = &syncBuffer{}
	exit := make(chan int, 1)
	go func() { exit <- runWith(ctx, append([]string{"serve"}, args...), getenv, &stdout, stderr) }()
	for {
		if _, rest, ok := strings.Cut(stdout.String(), "dashboard: "); ok {
			return strings.TrimSuffix(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]), "/"), exit, stderr
		}
		select {
		case code := <-exit:
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		case <-ctx.Done():
			t.Fatalf("serve printed no address: %s", stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
