package flights_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"agentflow/agent"
	"agentflow/examples/flights"
	"agentflow/examples/flights/email"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// t0 is where the virtual clock starts: 12:00:00, so the request's 300 s
// end at 12:05:00 and the cron runs at 12:10, 12:15, ….
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sent is one email the recording sender was asked to deliver.
type sent struct{ key, to, text string }

// recorder is an email.Sender that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	sent []sent
}

func (r *recorder) Send(_ context.Context, key, to, text string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sent{key, to, text})
	return nil
}

func (r *recorder) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// lines collects what the agent tells Options.Observe.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(agentName, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, agentName+": "+line)
}

func (l *lines) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.l, func(s string) bool { return strings.Contains(s, sub) })
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

// story is both services of the example on one store with a virtual clock:
// the agent service (engine service "", the runtime, flights.Register) and
// the email-workflows service (a second engine, email.Register).
type story struct {
	t        *testing.T
	clock    *clockwork.FakeClock
	st       store.Store
	agents   *workflow.Engine
	emails   *workflow.Engine
	rt       *agent.Runtime
	srv      *httptest.Server
	sender   *recorder
	observed *lines
}

func newStory(t *testing.T) *story {
	t.Helper()
	ctx := t.Context()
	s := &story{t: t, clock: clockwork.NewFakeClockAt(t0), sender: &recorder{}, observed: &lines{}}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "flights.db"), sqlite.Options{Synchronous: sqlite.SynchronousOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s.st = st
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// A lease of an hour: the clock jumps by minutes, and with the default
	// 10 s the two engines would take each other for dead between jumps.
	s.agents, err = workflow.NewEngine(workflow.Options{Store: st, Clock: s.clock, Logger: logger, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.rt, err = agent.NewRuntime(agent.Options{Engine: s.agents, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := flights.Register(s.agents, s.rt, flights.Options{Observe: s.observed.add}); err != nil {
		t.Fatal(err)
	}
	s.emails, err = workflow.NewEngine(workflow.Options{Store: st, Clock: s.clock, Logger: logger, Lease: time.Hour, Service: email.Service})
	if err != nil {
		t.Fatal(err)
	}
	if err := email.Register(s.emails, s.sender); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*workflow.Engine{s.agents, s.emails} {
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(s.rt.Handler(agent.HandlerOptions{}))
	t.Cleanup(func() {
		s.srv.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.rt.Stop(sctx); err != nil {
			t.Errorf("stop runtime: %v", err)
		}
		for _, e := range []*workflow.Engine{s.agents, s.emails} {
			if err := e.Stop(sctx); err != nil {
				t.Errorf("stop engine: %v", err)
			}
		}
	})
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// quiet reports whether nothing is executing or due at the clock's now:
// no instance of either service needs a worker, and no schedule of the
// agent is running or (when dueToo) due. Due instances get their engine
// woken. The runtime is poked for the notices of the workflows of its own
// engine only; one queued by the email engine waits for its next poll, a
// second of the virtual clock later, so settling without moving the clock
// must not wait for it (dueToo false).
func (s *story) quiet(key store.AgentKey, dueToo bool) bool {
	ctx := s.t.Context()
	now := s.clock.Now()
	idle := true
	for _, e := range []struct {
		eng     *workflow.Engine
		service string
	}{{s.agents, ""}, {s.emails, email.Service}} {
		if e.eng.Executing() > 0 {
			idle = false
			continue
		}
		due, err := s.st.NextWakeTimes(ctx, e.service, now, 1)
		if err != nil {
			s.t.Fatal(err)
		}
		if len(due) > 0 {
			e.eng.Wake()
			idle = false
		}
	}
	ss, err := s.st.ListSchedules(ctx, key, store.ScheduleFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, sc := range ss {
		if sc.Owner != "" || dueToo && !sc.NextRunAt.After(now) {
			idle = false
		}
	}
	return idle
}

// settle waits, without moving the clock, until the agent's schedules and
// both services' instances are quiet (seen so three times in a row, so as
// not to catch a claim between its query and its launch).
func (s *story) settle(key store.AgentKey) { s.t.Helper(); s.settleDue(key, true) }

func (s *story) settleDue(key store.AgentKey, dueToo bool) {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n < 3; {
		if s.quiet(key, dueToo) {
			n++
		} else {
			n = 0
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not settled after 5 s at %s\nobserved:\n%s", s.clock.Now().Format(time.TimeOnly), s.observed)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// advanceTo moves the clock to at and settles.
func (s *story) advanceTo(at time.Time, key store.AgentKey) {
	s.t.Helper()
	s.clock.Advance(at.Sub(s.clock.Now()))
	s.settle(key)
}

// advanceToLoose is advanceTo for a moment at which the email engine queues
// a notice for the agent, which waits for the runtime's next poll.
func (s *story) advanceToLoose(at time.Time, key store.AgentKey) {
	s.t.Helper()
	s.clock.Advance(at.Sub(s.clock.Now()))
	s.settleDue(key, false)
}

// stepUntil moves the clock a second at a time (the agent runtime's poll
// interval: how soon it sees a notice another service's engine queued)
// until cond holds, settling after each step.
func (s *story) stepUntil(key store.AgentKey, what string, cond func() bool) {
	s.t.Helper()
	for i := 0; !cond(); i++ {
		if i == 30 {
			s.t.Fatalf("no %s after 30 virtual seconds (at %s)\nobserved:\n%s", what, s.clock.Now().Format(time.TimeOnly), s.observed)
		}
		s.clock.Advance(time.Second)
		s.settleDue(key, false)
	}
	s.settle(key)
}

func (s *story) request(path string, header http.Header) (int, string) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodPost, s.srv.URL+path, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (s *story) view(name string) flights.StateView {
	s.t.Helper()
	resp, err := http.Get(s.srv.URL + "/agents/my-agent/" + name + "/state")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v flights.StateView
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("GET state: %d %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

func (s *story) tracked(key store.AgentKey) []store.AgentWorkflow {
	s.t.Helper()
	ws, err := s.st.ListAgentWorkflows(s.t.Context(), key, store.WorkflowFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	return ws
}

func (s *story) schedules(key store.AgentKey, kind store.ScheduleKind) []store.Schedule {
	s.t.Helper()
	ss, err := s.st.ListSchedules(s.t.Context(), key, store.ScheduleFilter{Kind: kind})
	if err != nil {
		s.t.Fatal(err)
	}
	return ss
}

func (s *story) steps(id string) string {
	s.t.Helper()
	steps, err := s.st.ListSteps(s.t.Context(), id)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, st := range steps {
		out = append(out, fmt.Sprintf("%s:%s", st.Name, st.State))
	}
	return strings.Join(out, ", ")
}

// TestFlightStory runs the seed document end to end on the virtual clock,
// with both services: the request, the 300 s delay, the flight workflow
// (book, progress, 20 minutes' sleep, check-in), the five-minute status
// cron cancelling itself, and the email sent by the other service.
func TestFlightStory(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := newStory(t)
	const name = "trip"
	key := store.AgentKey{Class: flights.AgentClass, Name: name}

	// A request without the user-id header is refused.
	if code, body := s.request("/agents/my-agent/"+name, http.Header{}); code != http.StatusBadRequest || !strings.Contains(body, "user-id") {
		t.Fatalf("request without user-id: %d %q, want 400 naming the header", code, body)
	}
	if ss := s.schedules(key, ""); len(ss) != 0 {
		t.Fatalf("a refused request left schedules: %+v", ss)
	}

	// 12:00:00 — the request answers the schedule's id.
	code, body := s.request("/agents/my-agent/"+name, http.Header{"User-Id": {"u1"}})
	var answer struct {
		TaskID string `json:"taskId"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &answer) != nil || answer.TaskID == "" {
		t.Fatalf("request: %d %q, want 200 with a taskId", code, body)
	}
	ss := s.schedules(key, "")
	if len(ss) != 1 || ss[0].ID != answer.TaskID || ss[0].Kind != store.ScheduleDelayed ||
		!ss[0].NextRunAt.Equal(t0.Add(300*time.Second)) || string(ss[0].Payload) != `{"id":"u1","flight":"DL264","date":"2025-02-23"}` {
		t.Fatalf("schedules after the request: %+v, want %s due at 12:05:00 with the flight", ss, answer.TaskID)
	}

	// Nothing runs for 300 s.
	s.advanceTo(t0.Add(299*time.Second), key)
	if ws := s.tracked(key); len(ws) != 0 {
		t.Fatalf("workflows started before 300 s: %+v", ws)
	}
	if ss := s.schedules(key, ""); len(ss) != 1 || ss[0].ID != answer.TaskID {
		t.Fatalf("schedules at 12:04:59: %+v, want the request's only", ss)
	}

	// 12:05:01 — startWorkflow runs: the flight workflow books, reports
	// progress and sleeps 20 minutes; a */5 cron checks on it.
	s.advanceTo(t0.Add(301*time.Second), key)
	ws := s.tracked(key)
	if len(ws) != 1 || ws[0].Binding != flights.FlightBinding || ws[0].Workflow != flights.FlightWorkflow || ws[0].Service != "" {
		t.Fatalf("tracked after the delay: %+v, want one MY_WORKFLOW", ws)
	}
	flight := ws[0]
	if flight.Status != store.StatusRunning || string(flight.Metadata) != `{"flight":"DL264","user":"u1"}` {
		t.Errorf("flight tracked as %s with metadata %s, want running (it reported progress) with user and flight", flight.Status, flight.Metadata)
	}
	inst, err := s.st.GetInstance(t.Context(), flight.WorkflowID)
	if err != nil || inst.Status != store.StatusWaiting || !inst.WakeAt.Equal(t0.Add(301*time.Second+20*time.Minute)) || inst.Origin != key {
		t.Fatalf("flight instance = %+v, %v; want waiting until 12:25:01 with the agent as origin", inst, err)
	}
	if got, want := s.steps(flight.WorkflowID), "book:done, agent:progress:done, wait for check-in:pending"; got != want {
		t.Errorf("flight steps = %s, want %s", got, want)
	}
	if !s.observed.has(`progress of ` + flight.WorkflowID + ` (running): {"confirmation":"DL264-2025-02-23-`) {
		t.Errorf("OnWorkflowProgress did not hear the booking:\n%s", s.observed)
	}
	if ss := s.schedules(key, ""); len(ss) != 1 || ss[0].Kind != store.ScheduleCron || ss[0].Cron != "*/5 * * * *" ||
		!ss[0].NextRunAt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("schedules after startWorkflow: %+v, want only the */5 cron, next at 12:10", ss)
	}

	// 12:10 … 12:25:00 — four status checks see the workflow waiting.
	for i := 1; i <= 4; i++ {
		s.advanceTo(t0.Add(time.Duration(5+5*i)*time.Minute), key)
		v := s.view(name)
		if v.State.Checks != i || v.State.Workflows[flight.WorkflowID] != "waiting" {
			t.Fatalf("state at %s = %+v, want %d checks seeing waiting", s.clock.Now().Format(time.TimeOnly), v.State, i)
		}
	}
	if n := len(s.sender.all()); n != 0 {
		t.Fatalf("%d emails before the flight completed", n)
	}

	// 12:25:01 — check-in; the flight completes; OnWorkflowComplete starts
	// the email workflow in the other service, whose engine runs it; the
	// agent hears it finished at its next poll.
	s.advanceToLoose(t0.Add(301*time.Second+20*time.Minute), key)
	if got, want := s.steps(flight.WorkflowID), "book:done, agent:progress:done, wait for check-in:done, check in:done"; got != want {
		t.Errorf("flight steps = %s, want %s", got, want)
	}
	emailID := "email-" + flight.WorkflowID
	s.stepUntil(key, "email workflow tracked complete", func() bool {
		w, err := s.st.GetAgentWorkflow(t.Context(), key, emailID)
		return err == nil && w.Status == store.StatusComplete
	})
	mails := s.sender.all()
	if len(mails) != 1 || mails[0].to != "u1" || !strings.Contains(mails[0].text, "Subject: You are booked on DL264") ||
		!strings.Contains(mails[0].text, "Confirmation DL264-2025-02-23-") || !strings.Contains(mails[0].text, "seat 14C") ||
		!strings.HasPrefix(mails[0].key, emailID+":send:") {
		t.Fatalf("emails sent = %+v, want one to u1 with the confirmation", mails)
	}
	var out flights.Booking
	if fi, err := s.st.GetInstance(t.Context(), flight.WorkflowID); err != nil || fi.Status != store.StatusComplete ||
		json.Unmarshal(fi.Output, &out) != nil || out.Seat != "14C" || !strings.Contains(mails[0].text, out.Confirmation) {
		t.Fatalf("flight instance = %+v, %v; want complete with the emailed confirmation", fi, err)
	}
	ei, err := s.st.GetInstance(t.Context(), emailID)
	if err != nil || ei.Status != store.StatusComplete || ei.Service != email.Service || ei.Workflow != email.Workflow || ei.Origin != key {
		t.Fatalf("email instance = %+v, %v; want complete, of service %s, started by the agent", ei, err, email.Service)
	}
	byID := map[string]store.AgentWorkflow{}
	for _, w := range s.tracked(key) {
		byID[w.WorkflowID] = w
	}
	if f, e := byID[flight.WorkflowID], byID[emailID]; len(byID) != 2 || f.Status != store.StatusComplete ||
		e.Status != store.StatusComplete || e.Binding != flights.EmailBinding || e.Service != email.Service {
		t.Fatalf("tracked = %+v, want the flight and the email (EMAIL_WORKFLOW, %s) complete", byID, email.Service)
	}
	v := s.view(name)
	if v.State.Emails != 1 || v.State.Workflows[flight.WorkflowID] != "complete" || v.State.Checks != 4 || len(v.Workflows) != 2 {
		t.Fatalf("state after the flight = %+v", v)
	}
	if ss := s.schedules(key, store.ScheduleCron); len(ss) != 1 {
		t.Fatalf("crons before the next check: %+v, want the status check still there", ss)
	}

	// 12:30 — the status check sees the workflow complete and cancels
	// itself: no cron is left, and none runs again.
	s.advanceTo(t0.Add(30*time.Minute), key)
	if ss := s.schedules(key, ""); len(ss) != 0 {
		t.Fatalf("schedules after the final check: %+v, want none", ss)
	}
	if !s.observed.has("workflow " + flight.WorkflowID + " is complete; the check cancelled itself") {
		t.Errorf("the check did not report cancelling itself:\n%s", s.observed)
	}
	s.advanceTo(t0.Add(45*time.Minute), key)
	v = s.view(name)
	if v.State.Checks != 5 || v.State.Emails != 1 {
		t.Fatalf("state at 12:45 = %+v, want 5 checks and 1 email", v.State)
	}
	if n := len(s.sender.all()); n != 1 {
		t.Fatalf("%d emails in the end, want 1", n)
	}
	for _, w := range v.Workflows {
		if w.Status != string(store.StatusComplete) {
			t.Errorf("tracked over HTTP: %+v, want complete", w)
		}
	}
	t.Logf("story took %s of real time; observed:\n%s", time.Since(began).Round(time.Millisecond), s.observed)
}

// TestFlightRequestIsPOSTOnly: only a POST to the agent's path schedules a
// flight; any other method is answered 405 with an Allow header and
// schedules nothing.
func TestFlightRequestIsPOSTOnly(t *testing.T) {
	t.Parallel()
	s := newStory(t)
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
		scheduled    bool
	}{
		{http.MethodGet, "", http.StatusMethodNotAllowed, "POST", false},
		{http.MethodHead, "", http.StatusMethodNotAllowed, "POST", false},
		{http.MethodDelete, "", http.StatusMethodNotAllowed, "POST", false},
		{http.MethodPut, "", http.StatusMethodNotAllowed, "POST", false},
		{http.MethodPatch, "", http.StatusMethodNotAllowed, "POST", false},
		{http.MethodPost, "/state", http.StatusMethodNotAllowed, "GET", false},
		{http.MethodPost, "", http.StatusOK, "", true},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			t.Parallel()
			name := "trip-" + strings.ToLower(tc.method) + strings.ReplaceAll(tc.path, "/", "-")
			req, err := http.NewRequestWithContext(t.Context(), tc.method, s.srv.URL+"/agents/my-agent/"+name+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("user-id", "ada")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Allow") != tc.allow {
				t.Errorf("%s = %d (Allow %q) %q, want %d (Allow %q)", tc.method, resp.StatusCode, resp.Header.Get("Allow"), body, tc.status, tc.allow)
			}
			ss, err := s.st.ListSchedules(t.Context(), store.AgentKey{Class: flights.AgentClass, Name: name}, store.ScheduleFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(ss) > 0; got != tc.scheduled {
				t.Errorf("%s: %d schedules, want scheduled=%v", tc.method, len(ss), tc.scheduled)
			}
		})
	}
}
