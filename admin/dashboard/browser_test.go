package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"agentflow/admin"
	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/internal/browsertest"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// The browser test drives the dashboard in headless Chromium (Debian's
// chromium package; scripts/test installs it when missing). Without the
// browser it skips, or fails when the CI environment variable is set.
// Screenshots go to $AGENTFLOW_ARTIFACTS (default: the test's temporary
// directory, named in the log).

const browserToken = "dash-s3cret"

// order is the test's workflow: a charge that fails once and is retried,
// a sleep, a wait for an "approved" event, then a ship step.
func order(ctx context.Context, ev workflow.Event[string], step *workflow.Step) (string, error) {
	retry := workflow.StepConfig{Retries: &workflow.Retries{Limit: 3, Delay: 400 * time.Millisecond, Backoff: workflow.BackoffConstant}}
	charged, err := workflow.DoWith(step, "charge", retry, func(ctx context.Context, a workflow.Attempt) (string, error) {
		time.Sleep(150 * time.Millisecond)
		if a.Number == 1 {
			return "", errors.New("card processor timed out")
		}
		return "charged " + ev.Payload, nil
	})
	if err != nil {
		return "", err
	}
	if err := step.Sleep("cool-off", 600*time.Millisecond); err != nil {
		return "", err
	}
	if _, err := step.WaitForEvent("approval", workflow.WaitOptions{Type: "approved", Timeout: time.Hour}); err != nil {
		return "", err
	}
	return workflow.Do(step, "ship", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return charged + ", shipped", nil
	})
}

func quick(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (int, error) {
	return workflow.Do(step, "double", func(ctx context.Context, a workflow.Attempt) (int, error) { return 2 * ev.Payload, nil })
}

// world is a real server on loopback: the admin handler (with its
// dashboard) over a SQLite store, a workflow engine running order and
// quick, and an agent runtime serving the Counter.
type world struct {
	url string
	st  store.Store
	rt  *agent.Runtime
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dash.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	workflow.MustRegister(eng, "Order", workflow.Workflow[string, string](workflow.Func[string, string](order)))
	workflow.MustRegister(eng, "Quick", workflow.Workflow[int, int](workflow.Func[int, int](quick)))
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.Register(rt); err != nil {
		t.Fatal(err)
	}
	stop := func(name string, fn func(context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fn(ctx); err != nil {
			t.Errorf("stopping the %s: %v", name, err)
		}
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop("engine", eng.Stop) })
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop("agent runtime", rt.Stop) })
	mux := http.NewServeMux()
	mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{Token: browserToken}))
	mux.Handle("/", admin.NewHandler(admin.Options{Store: st, Token: browserToken}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &world{url: srv.URL, st: st, rt: rt}
}

// waitStatus waits until the instance has the status.
func (w *world) waitStatus(t *testing.T, id string, want store.Status) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		in, err := w.st.GetInstance(t.Context(), id)
		if err == nil && in.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: status %v (err %v), want %s", id, in.Status, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seedThink stores a Think agent's finished turn, as the think package
// would: its submission, its conversation with a tool call, its usage.
func seedThink(t *testing.T, st store.Store) {
	t.Helper()
	ctx, now := t.Context(), time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	k := store.AgentKey{Class: "Assistant", Name: "bob"}
	a, err := st.ActivateAgent(ctx, k, "seed", now)
	must(err)
	_, _, err = st.CreateSubmission(ctx, &store.Submission{ID: "sub_1", AgentKey: k,
		Messages: []byte(`[{"role":"user","content":"What time is it in Tokyo?"}]`), CreatedAt: now})
	must(err)
	s, err := st.StartSubmission(ctx, k, "seed", now)
	must(err)
	must(st.ApplySubmission(ctx, k, s.ID, "seed", now))
	must(st.AppendConversation(ctx, k, s.ID, "seed", [][]byte{
		[]byte(`{"role":"assistant","toolCalls":[{"id":"c1","name":"clock","arguments":{"zone":"Asia/Tokyo"}}]}`),
		[]byte(`{"role":"tool","toolCallId":"c1","toolName":"clock","content":"18:00"}`),
		[]byte(`{"role":"assistant","content":"It is 18:00 in Tokyo."}`),
	}, now))
	must(st.FinishSubmission(ctx, k, s.ID, "seed", store.SubmissionCompleted, "", []byte(`{"text":"It is 18:00 in Tokyo."}`),
		store.Usage{InputTokens: 3, OutputTokens: 12}, now))
	must(st.ReleaseAgent(ctx, store.AgentLease{AgentKey: k, Owner: "seed", Fence: a.Fence}, now))
}

// artifacts is where the screenshots go.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("AGENTFLOW_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// step runs one step of the scenario with its own deadline, naming it
// when it fails.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// until waits for a JavaScript condition to hold.
func until(cond string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))
}

// shot saves a full-page PNG of the tab.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func viewport(w, h int64, mobile bool) chromedp.Action[chromedp.Void] {
	if mobile {
		return chromedp.EmulateViewport(w, h, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulatePortrait)
	}
	return chromedp.EmulateViewport(w, h)
}

// TestDashboardInBrowser opens the dashboard in headless Chromium over a
// live world: the token prompt, the list and its status filter, an
// instance's timeline, pause and resume, send-event, terminate and
// restart, an agent whose state changes while its page is open, a Think
// agent's conversation, the outbox; at a laptop's and a phone's viewport.
func TestDashboardInBrowser(t *testing.T) {
	start := time.Now()
	ctx := browsertest.New(t, browsertest.Options{AcceptDialogs: true})
	w := newWorld(t)
	dir := artifacts(t)
	bg := t.Context()

	create := func(class, id string, params any) {
		t.Helper()
		b, _ := json.Marshal(params)
		now := time.Now()
		err := w.st.CreateInstances(bg, []*store.Instance{{ID: id, Workflow: class, Params: b,
			Status: store.StatusQueued, CreatedAt: now, UpdatedAt: now, WakeAt: now}})
		if err != nil {
			t.Fatal(err)
		}
	}
	create("Quick", "quick-1", 21)
	create("Order", "order-1", "order #1")
	w.waitStatus(t, "quick-1", store.StatusComplete)
	w.waitStatus(t, "order-1", store.StatusWaiting)
	seedThink(t, w.st)
	alice := w.rt.Ref(counter.Name, "alice")
	if _, err := alice.Call(bg, "increment", 1); err != nil {
		t.Fatal(err)
	}

	// The list, after the token prompt.
	step(t, ctx, "open the list and give the token",
		viewport(1280, 800, false),
		chromedp.Navigate(w.url+"/"),
		chromedp.WaitVisible(chromedp.ID("token-input")),
		chromedp.SendKeys(chromedp.ID("token-input"), browserToken+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`tr.wf-row[data-id="order-1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr.wf-row[data-id="quick-1"]`)),
		until(`document.querySelector('#counts [data-status="waiting"] b')?.textContent === '1'`),
	)
	shot(t, ctx, dir, "laptop-list")

	// Filter by status: only the waiting instance is left.
	step(t, ctx, "filter by status",
		chromedp.SetValue(chromedp.ID("f-status"), "waiting"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('f-status').dispatchEvent(new Event('change'))`),
		until(`(() => { const rows = [...document.querySelectorAll('tr.wf-row')];
			return rows.length === 1 && rows[0].dataset.id === 'order-1' })()`),
		until(`location.hash.includes('status=waiting')`),
	)

	// The instance page: the timeline shows the failed attempt, its
	// backoff, the retry, the sleep and the wait.
	step(t, ctx, "open the instance and see its timeline",
		chromedp.Click(chromedp.CSS(`tr.wf-row[data-id="order-1"] a`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-step="charge"] .bar.fail`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-step="charge"] .bar.backoff`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-step="charge"] .bar.ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-kind="sleep"][data-state="done"] .bar.sleep`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-kind="wait"][data-state="pending"] .bar.wait`)),
		until(`document.querySelector('#wf-status').dataset.status === 'waiting'`),
		until(`document.body.textContent.includes('card processor timed out')`),
		until(`document.querySelector('#wf-params').textContent.includes('order #1')`),
	)
	shot(t, ctx, dir, "laptop-instance-waiting")

	// Pause and resume, from the page's buttons.
	step(t, ctx, "pause",
		chromedp.Click(chromedp.CSS(`button[data-action="pause"]`)),
		until(`document.querySelector('#wf-status').dataset.status === 'paused'`),
		until(`!document.querySelector('button[data-action="resume"]').disabled`),
	)
	w.waitStatus(t, "order-1", store.StatusPaused)
	shot(t, ctx, dir, "laptop-instance-paused")
	step(t, ctx, "resume",
		chromedp.Click(chromedp.CSS(`button[data-action="resume"]`)),
		until(`document.querySelector('#wf-status').dataset.status === 'waiting'`),
	)
	w.waitStatus(t, "order-1", store.StatusWaiting)

	// Send the event it waits for: it completes, with its output.
	step(t, ctx, "send an event",
		chromedp.SendKeys(chromedp.CSS(`.event-form input[name="type"]`), "approved"),
		chromedp.SendKeys(chromedp.CSS(`.event-form textarea`), `{"by":"ops"}`),
		chromedp.Click(chromedp.CSS(`.event-form button[type="submit"]`)),
		until(`document.querySelector('#wf-status').dataset.status === 'complete'`),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-step="ship"] .bar.ok`)),
		until(`document.querySelector('#wf-output')?.textContent.includes('shipped')`),
		until(`document.querySelector('#events').textContent.includes('approved')`),
	)
	shot(t, ctx, dir, "laptop-instance")
	// The README's picture (docs/dashboard-instance.png): the top of the page.
	step(t, ctx, "a smaller viewport", viewport(1000, 860, false), until(`document.querySelector('#timeline')`))
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(dir, "readme-instance.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "back to a laptop", viewport(1280, 800, false))

	// Terminate another instance, then restart it: it runs again from
	// its first step.
	create("Order", "order-2", "order #2")
	w.waitStatus(t, "order-2", store.StatusWaiting)
	step(t, ctx, "terminate",
		chromedp.Navigate(w.url+"/#/workflows/order-2"),
		until(`document.querySelector('#wf-status')?.dataset.status === 'waiting'`),
		chromedp.Click(chromedp.CSS(`button[data-action="terminate"]`)),
		until(`document.querySelector('#wf-status').dataset.status === 'terminated'`),
		until(`document.querySelector('button[data-action="pause"]').disabled`),
	)
	w.waitStatus(t, "order-2", store.StatusTerminated)
	step(t, ctx, "restart",
		chromedp.Click(chromedp.CSS(`button[data-action="restart"]`)),
		until(`document.querySelector('#wf-status').dataset.status === 'waiting'`),
		until(`document.querySelector('#timeline .tl-row[data-step="charge"] .bar.ok') !== null`),
		until(`[...document.querySelectorAll('dl.facts dt')].find((dt) => dt.textContent === 'Restarts')?.nextElementSibling.textContent === '1'`),
	)

	// An agent: its state changes while the page is open.
	step(t, ctx, "open the agent",
		chromedp.Navigate(w.url+"/#/agents"),
		chromedp.WaitVisible(chromedp.CSS(`tr.agent-row[data-name="alice"] a`)),
		chromedp.Click(chromedp.CSS(`tr.agent-row[data-name="alice"] a`)),
		until(`document.querySelector('#agent-state-json')?.textContent.includes('"count": 1')`),
	)
	if _, err := alice.Call(bg, "increment", 41); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "see the agent's state change",
		until(`document.querySelector('#agent-state-json')?.textContent.includes('"count": 42')`),
	)
	shot(t, ctx, dir, "laptop-agent")
	step(t, ctx, "a Think agent's submissions and conversation",
		chromedp.Navigate(w.url+"/#/agents/Assistant/bob"),
		until(`document.querySelector('ol.conversation')?.textContent.includes('It is 18:00 in Tokyo.')`),
		until(`document.body.textContent.includes('→ clock({"zone":"Asia/Tokyo"})')`),
		until(`document.body.textContent.includes('3 in / 12 out')`),
	)
	shot(t, ctx, dir, "laptop-think-agent")
	step(t, ctx, "the outbox", chromedp.Navigate(w.url+"/#/outbox"), chromedp.WaitVisible(chromedp.ID("outbox")))

	// A phone: the same pages, readable in 390 CSS pixels.
	step(t, ctx, "phone: the list",
		viewport(390, 844, true),
		chromedp.Navigate(w.url+"/#/"),
		chromedp.WaitVisible(chromedp.CSS(`tr.wf-row[data-id="order-1"]`)),
		until(`document.documentElement.scrollWidth <= window.innerWidth`),
	)
	shot(t, ctx, dir, "phone-list")
	step(t, ctx, "phone: the instance",
		chromedp.Navigate(w.url+"/#/workflows/order-1"),
		chromedp.WaitVisible(chromedp.CSS(`#timeline .tl-row[data-step="ship"] .bar.ok`)),
		until(`document.documentElement.scrollWidth <= window.innerWidth`),
	)
	shot(t, ctx, dir, "phone-instance")
	step(t, ctx, "phone: the agent",
		chromedp.Navigate(w.url+"/#/agents/Counter/alice"),
		until(`document.querySelector('#agent-state-json')?.textContent.includes('"count": 42')`),
	)
	shot(t, ctx, dir, "phone-agent")
	t.Logf("screenshots in %s; the scenario took %v", dir, time.Since(start).Round(time.Millisecond))
}

// TestDashboardAssets checks how the assets are served: the page at /,
// JavaScript modules with a JavaScript type, the security headers, no
// directory listing, and read-only methods.
func TestDashboardAssets(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "assets.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(admin.NewHandler(admin.Options{Store: st, Token: browserToken}))
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", `<script type="module" src="app.js">`},
		{"GET", "/app.js", 200, "text/javascript", "import"},
		{"GET", "/views/workflow.js", 200, "text/javascript", "export function workflowView"},
		{"GET", "/app.css", 200, "text/css", ".timeline"},
		{"GET", "/views/", 404, "", ""},
		{"GET", "/nope.js", 404, "", ""},
		{"POST", "/", 405, "", ""},
		{"GET", "/api/v1/workflows", 401, "application/json", "unauthenticated"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != tc.code || !strings.HasPrefix(res.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s: %d %q, body %.80q; want %d %q with %q", tc.method, tc.path, res.StatusCode,
				res.Header.Get("Content-Type"), body, tc.code, tc.ctype, tc.body)
		}
		if tc.code == 200 && !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s %s: Content-Security-Policy %q", tc.method, tc.path, res.Header.Get("Content-Security-Policy"))
		}
	}
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
