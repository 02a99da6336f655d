package assistant_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"agentflow/agent"
	"agentflow/examples/assistant"
	"agentflow/examples/assistant/web"
	"agentflow/internal/browsertest"
	"agentflow/internal/nodetest"
	"agentflow/model"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// The chat page's browser test drives examples/assistant/web, the React
// page on useAgentChat that agentflow dev serves at /chat/, in headless
// Chromium (Debian's chromium package, as the dashboard's test) against a
// real engine, runtime and SQLite store on loopback. Without the browser
// it skips, or fails when the CI environment variable is set.

// slowly is what makes pageModel answer slowly: it says "Let me think"
// and then waits until its turn is cancelled or the server stops.
const slowly = "slowly"

// pageModel is the Assistant's scripted model, but for messages asking
// for a slow answer.
type pageModel struct{ fast model.Provider }

func (m pageModel) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	last := req.Messages[len(req.Messages)-1]
	if last.Role != model.RoleUser || !strings.Contains(last.Content, slowly) {
		return m.fast.Stream(ctx, req)
	}
	return func(yield func(model.Event, error) bool) {
		if !yield(model.Event{Kind: model.EventText, Text: "Let me think"}, nil) {
			return
		}
		<-ctx.Done()
		yield(model.Event{}, ctx.Err())
	}
}

// pageServer is one incarnation of the server on a fixed address: stop it
// and start another on the same store, as a server restarted mid-turn.
type pageServer struct {
	st   store.Store
	addr string
	eng  *workflow.Engine
	rt   *agent.Runtime
	srv  *http.Server
	done chan struct{}
}

func startPageServer(t *testing.T, st store.Store, addr string) *pageServer {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := assistant.Register(rt, assistant.Options{Model: pageModel{fast: assistant.Scripted()}}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{}))
	mux.Handle("/chat/", http.StripPrefix("/chat", web.Handler()))
	s := &pageServer{st: st, addr: ln.Addr().String(), eng: eng, rt: rt, srv: &http.Server{Handler: mux}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop stops the server at once: its connections are cut, its turns with
// them.
func (s *pageServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.srv.Close()
	s.rt.Stop(ctx)
	s.eng.Stop(ctx)
	<-s.done
}

// do runs one step with its own deadline, naming it when it fails.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage: %s", what, err, pageMessages(ctx))
	}
}

// until waits for a JavaScript condition to hold.
func until(cond string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
}

// shown is the page's messages: "role:text" per message, in order.
const shown = `[...document.querySelectorAll('#messages li')].map(li => li.dataset.role + ':' + li.innerText.replace(/\s+/g, ' ').trim())`

// ids is the page's message ids, joined.
const ids = `[...document.querySelectorAll('#messages li')].map(li => li.dataset.id).join(',')`

func pageMessages(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({status: document.getElementById('status')?.innerText, error: document.getElementById('error')?.innerText, messages: `+shown+`})`))
	if err != nil {
		return err.Error()
	}
	return s
}

func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// answered holds when the page's last message is the Assistant's answer
// about zone, with its get_time call and the call's result.
func answered(zone string) string {
	return `(() => { const li = [...document.querySelectorAll('#messages li')].at(-1);
		return !!li && li.dataset.role === 'assistant' && document.getElementById('status').innerText !== 'streaming'
			&& !!li.querySelector('.tool[data-tool="get_time"][data-state="output-available"]')
			&& li.innerText.includes('It is') && li.innerText.includes('` + zone + `'); })()`
}

// serverIDs is the conversation's message ids, as the server has them.
func serverIDs(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/agents/assistant/page/get-messages")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var msgs []struct{ ID string }
	if err := json.NewDecoder(res.Body).Decode(&msgs); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return strings.Join(out, ",")
}

// TestChatPage opens the Assistant's chat page in headless Chromium: a
// message answered with a tool call rendered, a second browser (a second
// tab, another person) that sees the same conversation live, a reload that shows the history, a turn stopped
// mid-stream, and a server stopped mid-turn and restarted, after which the
// pages recover with no message lost or doubled. It also rebuilds the
// page and checks the build is the one committed, when npm is there.
func TestChatPage(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "chat.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := startPageServer(t, st, "127.0.0.1:0")
	base := "http://" + s.addr
	url := base + "/chat/?name=page"
	dir := t.TempDir()
	if d := os.Getenv("AGENTFLOW_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, "chat")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	shot := func(ctx context.Context, name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// send types text into the prompt and submits the form, as a person
	// does: through the input's value setter and an input event, which
	// React takes as typing (chromedp's SendKeys races with React's DOM
	// updates under the race detector, inside chromedp).
	send := func(ctx context.Context, text string) chromedp.Action[chromedp.Void] {
		q, _ := json.Marshal(text)
		return chromedp.Evaluate[chromedp.Void](`(() => { const el = document.getElementById('prompt');
			Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(el, ` + string(q) + `);
			el.dispatchEvent(new Event('input', { bubbles: true }));
			el.form.requestSubmit(); })()`)
	}
	ready := until(`document.getElementById('status')?.innerText === 'ready'`)

	one := browsertest.New(t, browsertest.Options{Width: 900, Height: 900})
	fl := watch(t, one, "one")
	do(t, one, "open the page", chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("prompt")), ready, fl.connected(0))
	do(t, one, "ask", send(one, "What time is it in Asia/Tokyo?"), until(answered("Asia/Tokyo")))
	shot(one, "answered")

	two := browsertest.New(t, browsertest.Options{Width: 900, Height: 900})
	fl2 := watch(t, two, "two")
	do(t, two, "a second browser shows the conversation", chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("prompt")),
		until(`document.querySelectorAll('#messages li').length === 2`), ready, fl2.connected(0))
	do(t, two, "ask from the second browser", send(two, "What time is it in Europe/Oslo?"), until(answered("Europe/Oslo")))
	do(t, one, "the first browser sees it live", until(answered("Europe/Oslo")))
	want := serverIDs(t, base)
	for _, tab := range []context.Context{one, two} {
		do(t, tab, "the tabs agree with the server", until(ids+` === '`+want+`'`))
	}

	before := evaluate[string](t, one, ids)
	n := fl.connects.Load()
	do(t, one, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("prompt")), ready, fl.connected(n),
		until(`document.querySelectorAll('#messages li').length === 4`))
	if after := evaluate[string](t, one, ids); after != before {
		t.Fatalf("after a reload the page shows %s, before %s", after, before)
	}

	// Stop a turn mid-stream: what was shown of it stays, on both tabs.
	do(t, one, "ask for a slow answer", send(one, "Tell me "+slowly+"."),
		until(`(() => { const lis = document.querySelectorAll('#messages li');
			return lis.length === 6 && lis[5].dataset.role === 'assistant' && lis[5].innerText.includes('Let me think'); })()`),
		chromedp.WaitVisible(chromedp.ID("stop")))
	shot(one, "streaming")
	do(t, one, "stop it", chromedp.Evaluate[chromedp.Void](`document.getElementById('stop').click()`), ready)
	do(t, two, "the second browser sees it stopped", ready, until(`document.querySelectorAll('#messages li').length === 6`))
	want = serverIDs(t, base)
	for _, tab := range []context.Context{one, two} {
		do(t, tab, "the tabs agree with the server", until(ids+` === '`+want+`'`))
	}

	// Stop the server mid-turn and start another on the same store and
	// address: the pages reconnect and show the conversation as stored,
	// the question once, and go on.
	do(t, one, "ask for another slow answer", send(one, "Once more, "+slowly+"."),
		until(`(() => { const lis = document.querySelectorAll('#messages li');
			return lis.length === 8 && lis[7].dataset.role === 'assistant' && lis[7].innerText.includes('Let me think'); })()`))
	n, n2 := fl.connects.Load(), fl2.connects.Load()
	s.stop()
	s = startPageServer(t, st, s.addr)
	do(t, one, "the first browser reconnects", fl.connected(n))
	do(t, two, "the second browser reconnects", fl2.connected(n2))
	do(t, one, "ask after the restart", until(`document.getElementById('status')?.innerText !== 'streaming'`),
		chromedp.WaitVisible(chromedp.ID("send")))
	do(t, one, "the page recovers", send(one, "What time is it in UTC?"), until(answered("UTC")))
	// The second browser was following the cut-off turn: it is told how
	// the turn ended (useChat keeps the error until its next send).
	do(t, two, "the second browser recovers", until(answered("UTC")),
		until(`document.getElementById('error')?.innerText.includes('cut off by a crash')`))
	shot(one, "recovered")
	want = serverIDs(t, base)
	for _, tab := range []context.Context{one, two} {
		do(t, tab, "the tabs agree with the server after the restart", until(ids+` === '`+want+`'`))
	}
	texts := evaluate[[]string](t, one, shown)
	asked := 0
	for _, m := range texts {
		if strings.HasPrefix(m, "user:") && strings.Contains(m, "Once more") {
			asked++
		}
	}
	if asked != 1 || len(texts) != 9 {
		t.Errorf("after the restart the page shows the cut-off question %d times, and %d messages: %q", asked, len(texts), texts)
	}
	sub, err := st.ListSubmissions(t.Context(), store.AgentKey{Class: assistant.Name, Name: "page"}, store.SubmissionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, x := range sub {
		statuses = append(statuses, string(x.Status))
	}
	if got := strings.Join(statuses, ","); got != "completed,completed,aborted,error,completed" {
		t.Errorf("the ledger: %s", got)
	}

	t.Run("build", func(t *testing.T) { checkBuild(t) })
}

// checkBuild builds the page with the pinned packages into a temporary
// directory and compares it with the committed dist/.
func checkBuild(t *testing.T) {
	npm := nodetest.Tool(t, "npm")
	nodetest.Install(t, "web")
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), npm, "exec", "--", "vite", "build", "--outDir", out, "--emptyOutDir")
	cmd.Dir = "web"
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vite build: %v\n%s", err, b)
	}
	err := filepath.WalkDir("web/dist", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("web/dist", path)
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(out, rel))
		if errors.Is(err, os.ErrNotExist) || !bytes.Equal(got, want) {
			t.Errorf("web/dist/%s is not what the build makes: run npm ci && npm run build in examples/assistant/web", rel)
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// frameLog is a browser's WebSocket frames, logged when the test fails,
// and how many conversations it got on connect (cf_agent_chat_messages
// with connect set): the one a server sends a new connection replaces
// the page's, so a message is typed only after it, as a person does.
type frameLog struct {
	mu       sync.Mutex
	lines    []string
	connects atomic.Int64
}

func watch(t *testing.T, ctx context.Context, label string) *frameLog {
	fl := &frameLog{}
	add := func(dir string, id network.RequestID, payload string) {
		if strings.Contains(payload, `"type":"cf_agent_chat_messages"`) && strings.Contains(payload, `"connect":true`) {
			fl.connects.Add(1)
		}
		if len(payload) > 300 {
			payload = payload[:300]
		}
		fl.mu.Lock()
		fl.lines = append(fl.lines, time.Now().Format("05.000")+" "+label+" "+string(id)+" "+dir+" "+payload)
		fl.mu.Unlock()
	}
	go func() {
		for ev, err := range chromedp.Events(ctx, network.WebSocketFrameSent) {
			if err != nil {
				return
			}
			add(">", ev.RequestID, string(ev.Response.PayloadData))
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(ctx, network.WebSocketFrameReceived) {
			if err != nil {
				return
			}
			add("<", ev.RequestID, string(ev.Response.PayloadData))
		}
	}()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		fl.mu.Lock()
		defer fl.mu.Unlock()
		for _, l := range fl.lines {
			t.Log(l)
		}
	})
	return fl
}

// connected waits until the browser has got more than n conversations on
// connect.
func (fl *frameLog) connected(n int64) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		for fl.connects.Load() <= n {
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("no conversation on connect: %w", ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		return chromedp.Void{}, nil
	}
}
