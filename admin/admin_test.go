package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

const testToken = "s3cret-token"

// backends opens a fresh store of each kind the machine has: SQLite in a
// temporary file always, PostgreSQL in a schema of its own when
// AGENTFLOW_TEST_POSTGRES is set.
func backends(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "admin.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn, schema := pgtest.Schema(t)
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Schema: schema, MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

// The seeded world: instances in several states, agents with state,
// schedules and a Think agent's submissions.
var t0 = time.Date(2025, 2, 23, 9, 0, 0, 0, time.UTC)

const (
	idDone    = "wf-done"
	idWaiting = "wf-waiting"
	idQueued  = "wf-queued"
)

func seed(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	claimed := func(id, class string, at time.Time) store.Lease {
		must(st.CreateInstances(ctx, []*store.Instance{{ID: id, Workflow: class, Params: []byte(`{"n":1}`),
			Status: store.StatusRunning, Owner: "seed-node", CreatedAt: at, UpdatedAt: at}}))
		return store.Lease{InstanceID: id, Owner: "seed-node", Fence: 1}
	}
	// A report that retried its fetch once and completed.
	l := claimed(idDone, "report", t0)
	_, err := st.SaveStep(ctx, l, store.Step{Seq: 0, Name: "fetch", Kind: store.KindDo, State: store.StepPending, Attempt: 2,
		ErrorName: "Error", ErrorMessage: "connection reset", WakeAt: t0.Add(3 * time.Second), StartedAt: t0.Add(time.Second)}, t0.Add(2*time.Second))
	must(err)
	_, err = st.SaveStep(ctx, l, store.Step{Seq: 0, Name: "fetch", Kind: store.KindDo, State: store.StepDone, Attempt: 2,
		Result: []byte(`"ok"`), StartedAt: t0.Add(3 * time.Second)}, t0.Add(4*time.Second))
	must(err)
	must(st.Finish(ctx, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`"report: ok"`)}, t0.Add(5*time.Second)))
	// A signup that slept and now waits for its confirmation.
	l = claimed(idWaiting, "signup", t0.Add(time.Minute))
	_, err = st.SaveStep(ctx, l, store.Step{Seq: 0, Name: "grace", Kind: store.KindSleep, State: store.StepDone,
		StartedAt: t0.Add(time.Minute)}, t0.Add(2*time.Minute))
	must(err)
	must(st.Suspend(ctx, l, store.Suspension{
		Step:   &store.Step{Seq: 1, Name: "confirm", Kind: store.KindWait, State: store.StepPending, WakeAt: t0.Add(time.Hour), StartedAt: t0.Add(2 * time.Minute)},
		Status: store.StatusWaiting, WakeAt: t0.Add(time.Hour), WaitingEvent: "email-confirmed"}, t0.Add(2*time.Minute)))
	// A queued one of another service.
	must(st.CreateInstances(ctx, []*store.Instance{{ID: idQueued, Workflow: "email", Service: "email-workflows",
		Params: []byte(`null`), Status: store.StatusQueued, CreatedAt: t0.Add(2 * time.Minute), UpdatedAt: t0.Add(2 * time.Minute),
		WakeAt: t0.Add(100 * 365 * 24 * time.Hour)}})) // far in the future: no engine runs here anyway

	// A Counter with state and a schedule.
	k := store.AgentKey{Class: "Counter", Name: "alice"}
	a, err := st.ActivateAgent(ctx, k, "seed-node", t0)
	must(err)
	al := store.AgentLease{AgentKey: k, Owner: "seed-node", Fence: a.Fence}
	must(st.SaveAgentState(ctx, al, []byte(`{"count":3}`), t0))
	_, _, err = st.CreateSchedule(ctx, &store.Schedule{ID: "sch_1", AgentKey: k, Method: "tick", Payload: []byte(`{}`),
		Kind: store.ScheduleInterval, Interval: time.Minute, NextRunAt: t0.Add(time.Minute), CreatedAt: t0})
	must(err)
	must(st.ReleaseAgent(ctx, al, t0))
	// A Think agent with a pending and a completed submission.
	k = store.AgentKey{Class: "Assistant", Name: "bob"}
	a, err = st.ActivateAgent(ctx, k, "seed-node", t0)
	must(err)
	al = store.AgentLease{AgentKey: k, Owner: "seed-node", Fence: a.Fence}
	for _, id := range []string{"sub_1", "sub_2"} {
		_, _, err = st.CreateSubmission(ctx, &store.Submission{ID: id, AgentKey: k,
			Messages: []byte(`[{"role":"user","content":"hi"}]`), CreatedAt: t0})
		must(err)
	}
	s, err := st.StartSubmission(ctx, k, "seed-node", t0)
	must(err)
	must(st.ApplySubmission(ctx, k, s.ID, "seed-node", t0))
	must(st.FinishSubmission(ctx, k, s.ID, "seed-node", store.SubmissionCompleted, "", []byte(`{"text":"hello"}`), store.Usage{InputTokens: 3, OutputTokens: 1}, t0))
	must(st.ReleaseAgent(ctx, al, t0))
}

// snapshot is everything the API can see, to check that a refused
// request changed nothing.
func snapshot(t *testing.T, st store.Store) string {
	t.Helper()
	ctx := context.Background()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	insts, err := st.ListInstances(ctx, store.InstanceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	enc.Encode(insts)
	for _, in := range insts {
		steps, _ := st.ListSteps(ctx, in.ID)
		events, _ := st.ListEvents(ctx, in.ID)
		enc.Encode(steps)
		enc.Encode(events)
	}
	agents, _ := st.ListAgents(ctx, store.AgentFilter{})
	enc.Encode(agents)
	for _, a := range agents {
		subs, _ := st.ListSubmissions(ctx, a.AgentKey, store.SubmissionFilter{})
		scheds, _ := st.ListSchedules(ctx, a.AgentKey, store.ScheduleFilter{})
		enc.Encode(subs)
		enc.Encode(scheds)
	}
	return b.String()
}

// spec is the OpenAPI document, loaded and validated by kin-openapi.
var spec = sync.OnceValues(func() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		return nil, err
	}
	return doc, doc.Validate(context.Background())
})

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := spec()
	if err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}
	return doc
}

// checkAnswers wraps h so that every answer is validated against the
// schema the document gives for its route, method and status; a failure
// fails t.
func checkAnswers(t *testing.T, h http.Handler) http.Handler {
	doc := loadSpec(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		if err := validateAnswer(doc, r, rec); err != nil {
			t.Errorf("%s %s → %d %s: %v", r.Method, r.URL, rec.Code, strings.TrimSpace(rec.Body.String()), err)
		}
	})
}

func validateAnswer(doc *openapi3.T, r *http.Request, rec *httptest.ResponseRecorder) error {
	ct := rec.Header().Get("Content-Type")
	if !strings.HasPrefix(r.URL.Path, APIPrefix+"/") {
		return nil
	}
	var schema *openapi3.Schema
	// r.Pattern is set by the API's mux ("GET /api/v1/workflows/{id}");
	// an answer given before it (401) or by it (404, 405) is an Error.
	_, path, _ := strings.Cut(r.Pattern, " ")
	if path == "" || rec.Code == http.StatusInternalServerError {
		if rec.Code < 400 {
			return errors.New("a success outside every route")
		}
		schema = doc.Components.Schemas["Error"].Value
	} else {
		item := doc.Paths.Value(path)
		if item == nil {
			return errors.New("the route is not in the document")
		}
		op := item.GetOperation(r.Method)
		if op == nil {
			return errors.New("the method is not in the document")
		}
		resp := op.Responses.Status(rec.Code)
		if resp == nil {
			return errors.New("the status is not in the document")
		}
		mt := resp.Value.Content.Get(strings.TrimSpace(strings.Split(ct, ";")[0]))
		if mt == nil {
			return errors.New("the content type " + ct + " is not in the document")
		}
		if mt.Schema == nil || strings.HasSuffix(r.URL.Path, ".yaml") {
			return nil
		}
		schema = mt.Schema.Value
	}
	var v any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		return err
	}
	return schema.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

// server serves the handler on loopback, with the token, every answer
// checked against the document.
func server(t *testing.T, st store.Store) (*httptest.Server, *Client) {
	h := NewHandler(Options{Store: st, Token: testToken, Now: func() time.Time { return t0.Add(time.Hour / 2) }})
	srv := httptest.NewServer(checkAnswers(t, h))
	t.Cleanup(srv.Close)
	return srv, &Client{BaseURL: srv.URL, Token: testToken, HTTPClient: srv.Client()}
}

func TestRoutesMatchTheDocument(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("the document is OpenAPI %s; want 3.1", doc.OpenAPI)
	}
	registered := map[string]bool{}
	for _, r := range Routes() {
		key := r.Method + " " + r.Path
		registered[key] = true
		item := doc.Paths.Value(r.Path)
		if item == nil || item.GetOperation(r.Method) == nil {
			t.Errorf("route %s is not in the OpenAPI document", key)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !registered[method+" "+path] {
				t.Errorf("the OpenAPI document has %s %s, which the handler does not serve", method, path)
			}
		}
	}
}

func TestHappyPaths(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		seed(t, st)
		srv, c := server(t, st)
		ctx := context.Background()

		page, err := c.ListWorkflows(ctx, WorkflowFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if got := idsOf(page.Workflows); !slices.Equal(got, []string{idQueued, idWaiting, idDone}) {
			t.Errorf("list: %v, want newest first", got)
		}
		if page.Workflows[0].Params != nil {
			t.Errorf("a list page carries params: %s", page.Workflows[0].Params)
		}
		// Pages of one, followed by their tokens.
		var all []string
		f := WorkflowFilter{Limit: 1}
		for range 5 {
			p, err := c.ListWorkflows(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, idsOf(p.Workflows)...)
			if p.NextPageToken == "" {
				break
			}
			f.PageToken = p.NextPageToken
		}
		if !slices.Equal(all, []string{idQueued, idWaiting, idDone}) {
			t.Errorf("paged list: %v", all)
		}
		for _, tc := range []struct {
			f    WorkflowFilter
			want []string
		}{
			{WorkflowFilter{Statuses: []string{"waiting", "complete"}}, []string{idWaiting, idDone}},
			{WorkflowFilter{Workflows: []string{"report"}}, []string{idDone}},
			{WorkflowFilter{Services: []string{"email-workflows"}}, []string{idQueued}},
			{WorkflowFilter{CreatedFrom: t0.Add(time.Second), CreatedTo: t0.Add(2 * time.Minute)}, []string{idWaiting}},
		} {
			p, err := c.ListWorkflows(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := idsOf(p.Workflows); !slices.Equal(got, tc.want) {
				t.Errorf("list %+v: %v, want %v", tc.f, got, tc.want)
			}
		}
		counts, err := c.CountWorkflows(ctx, WorkflowFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if counts.Total != 3 || counts.Counts["complete"] != 1 || counts.Counts["waiting"] != 1 || counts.Counts["queued"] != 1 {
			t.Errorf("counts: %+v", counts)
		}

		d, err := c.DescribeWorkflow(ctx, idDone)
		if err != nil {
			t.Fatal(err)
		}
		if d.Workflow.Status != "complete" || string(d.Workflow.Output) != `"report: ok"` || len(d.Steps) != 1 {
			t.Fatalf("describe %s: %+v", idDone, d)
		}
		s := d.Steps[0]
		if s.Name != "fetch" || s.StartedAt.IsZero() || s.EndedAt.IsZero() || len(s.Attempts) != 2 ||
			s.Attempts[0].Error == nil || s.Attempts[0].Error.Message != "connection reset" || s.Attempts[0].RetryAt.IsZero() || s.Attempts[1].Error != nil {
			t.Errorf("describe %s: the fetch step: %+v", idDone, s)
		}
		d, err = c.DescribeWorkflow(ctx, idWaiting)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Steps) != 2 || d.Steps[1].Kind != "wait" || d.Steps[1].WaitingEvent != "email-confirmed" || !d.Steps[1].WakeAt.Equal(t0.Add(time.Hour)) {
			t.Errorf("describe %s: %+v", idWaiting, d.Steps)
		}

		// Control: pause, resume, send an event, terminate, restart.
		w, err := c.Pause(ctx, idWaiting)
		if err != nil || w.Status != "paused" {
			t.Fatalf("pause: %+v, %v", w, err)
		}
		if w, err = c.Resume(ctx, idWaiting); err != nil || w.Status != "waiting" {
			t.Fatalf("resume: %+v, %v", w, err)
		}
		if _, err = c.SendEvent(ctx, idWaiting, SendEventRequest{Type: "email-confirmed", Payload: json.RawMessage(`{"code":"1"}`)}); err != nil {
			t.Fatal(err)
		}
		if d, err = c.DescribeWorkflow(ctx, idWaiting); err != nil || len(d.Events) != 1 || d.Events[0].Type != "email-confirmed" || string(d.Events[0].Payload) != `{"code":"1"}` {
			t.Errorf("the event sent: %+v, %v", d.Events, err)
		}
		if w, err = c.Terminate(ctx, idWaiting); err != nil || w.Status != "terminated" {
			t.Fatalf("terminate: %+v, %v", w, err)
		}
		if w, err = c.Restart(ctx, idWaiting); err != nil || w.Status != "queued" || w.Restarts != 1 {
			t.Fatalf("restart: %+v, %v", w, err)
		}
		w, err = c.CreateWorkflow(ctx, CreateWorkflowRequest{Workflow: "report", ID: "wf-new", Params: json.RawMessage(`["a", "b"]`)})
		if err != nil || w.ID != "wf-new" || w.Status != "queued" || string(w.Params) != `["a","b"]` {
			t.Fatalf("create: %+v, %v", w, err)
		}
		if w, err = c.CreateWorkflow(ctx, CreateWorkflowRequest{Workflow: "report"}); err != nil || !strings.HasPrefix(w.ID, "wf_") || string(w.Params) != "null" {
			t.Fatalf("create with a generated id: %+v, %v", w, err)
		}

		// Agents.
		ap, err := c.ListAgents(ctx, AgentFilter{})
		if err != nil || len(ap.Agents) != 2 || ap.Agents[0].Class != "Assistant" || ap.Agents[1].StateBytes != len(`{"count":3}`) {
			t.Fatalf("agents: %+v, %v", ap, err)
		}
		ad, err := c.DescribeAgent(ctx, "Counter", "alice")
		if err != nil || string(ad.Agent.State) != `{"count":3}` || len(ad.Schedules) != 1 || ad.Schedules[0].Interval != "1m0s" {
			t.Fatalf("describe agent: %+v, %v", ad, err)
		}
		ad, err = c.DescribeAgent(ctx, "Assistant", "bob")
		if err != nil || len(ad.Submissions) != 2 || len(ad.Conversation) != 1 {
			t.Fatalf("describe Think agent: %+v, %v", ad, err)
		}
		sl, err := c.ListSchedules(ctx, "Counter", "alice", "interval")
		if err != nil || len(sl.Schedules) != 1 {
			t.Fatalf("schedules: %+v, %v", sl, err)
		}
		subs, err := c.ListSubmissions(ctx, "Assistant", "bob", []string{"pending"}, 0)
		if err != nil || len(subs.Submissions) != 1 || subs.Submissions[0].ID != "sub_2" {
			t.Fatalf("submissions: %+v, %v", subs, err)
		}
		sd, err := c.DescribeSubmission(ctx, "Assistant", "bob", "sub_1")
		if err != nil || sd.Submission.Status != "completed" || sd.Submission.Messages == nil || sd.Submission.InputTokens != 3 {
			t.Fatalf("describe submission: %+v, %v", sd, err)
		}
		cr, err := c.CancelSubmission(ctx, "Assistant", "bob", "sub_2")
		if err != nil || cr.PreviousStatus != "pending" || cr.Submission.Status != "aborted" {
			t.Fatalf("cancel: %+v, %v", cr, err)
		}
		ob, err := c.ListOutbox(ctx, OutboxFilter{Agent: "Assistant"})
		if err != nil || len(ob.Outbox) != 0 {
			t.Fatalf("outbox: %+v, %v", ob, err)
		}

		// The document, both ways.
		for _, p := range []string{"/openapi.json", "/openapi.yaml"} {
			resp, err := srv.Client().Get(srv.URL + APIPrefix + p + "?token=" + testToken)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte("3.1.0")) {
				t.Errorf("GET %s: %d %.80s", p, resp.StatusCode, b)
			}
		}
	})
}

func idsOf(ws []Workflow) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	return out
}

// TestBadInput sends what must be refused, and checks the status, the
// code, that the message names what was wrong, and that nothing stored
// changed.
func TestBadInput(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		seed(t, st)
		srv, _ := server(t, st)
		before := snapshot(t, st)
		p := APIPrefix
		for _, tc := range []struct {
			name, method, path, body string
			token                    string // default testToken; "-" sends none
			status                   int
			code, names              string
		}{
			{"no token", "GET", p + "/workflows", "", "-", 401, CodeUnauthenticated, "Authorization"},
			{"wrong token", "POST", p + "/workflows/" + idWaiting + "/pause", "", "nope", 401, CodeUnauthenticated, "not valid"},
			{"unknown instance", "GET", p + "/workflows/wf-nope", "", "", 404, CodeNotFound, "wf-nope"},
			{"pause unknown", "POST", p + "/workflows/wf-nope/pause", "", "", 404, CodeNotFound, "wf-nope"},
			{"pause finished", "POST", p + "/workflows/" + idDone + "/pause", "", "", 409, CodeFailedPrecondition, idDone},
			{"terminate finished", "POST", p + "/workflows/" + idDone + "/terminate", "", "", 409, CodeFailedPrecondition, "complete"},
			{"resume not paused", "POST", p + "/workflows/" + idWaiting + "/resume", "", "", 409, CodeFailedPrecondition, "not paused"},
			{"event to finished", "POST", p + "/workflows/" + idDone + "/events", `{"type":"x"}`, "", 409, CodeFailedPrecondition, idDone},
			{"event bad type", "POST", p + "/workflows/" + idWaiting + "/events", `{"type":"a b"}`, "", 400, CodeInvalidArgument, "type"},
			{"event unknown field", "POST", p + "/workflows/" + idWaiting + "/events", `{"type":"x","pay":1}`, "", 400, CodeInvalidArgument, "pay"},
			{"create bad id", "POST", p + "/workflows", `{"workflow":"report","id":"-bad"}`, "", 400, CodeInvalidArgument, "id"},
			{"create no class", "POST", p + "/workflows", `{"id":"x"}`, "", 400, CodeInvalidArgument, "workflow"},
			{"create bad params", "POST", p + "/workflows", `{"workflow":"report","params":{]}`, "", 400, CodeInvalidArgument, "JSON"},
			{"create params not JSON type", "POST", p + "/workflows", `{"workflow":7}`, "", 400, CodeInvalidArgument, "workflow"},
			{"create existing id", "POST", p + "/workflows", `{"workflow":"report","id":"` + idDone + `"}`, "", 409, CodeAlreadyExists, idDone},
			{"create empty body", "POST", p + "/workflows", ``, "", 400, CodeInvalidArgument, "empty"},
			{"create too large", "POST", p + "/workflows", `{"workflow":"report","params":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`, "", 413, CodePayloadTooLarge, "bytes"},
			{"bad status filter", "GET", p + "/workflows?status=sleeping", "", "", 400, CodeInvalidArgument, "sleeping"},
			{"bad limit", "GET", p + "/workflows?limit=101", "", "", 400, CodeInvalidArgument, "limit"},
			{"bad time", "GET", p + "/workflows?created_from=yesterday", "", "", 400, CodeInvalidArgument, "created_from"},
			{"empty range", "GET", p + "/workflow-counts?created_from=2025-01-02T00:00:00Z&created_to=2025-01-01T00:00:00Z", "", "", 400, CodeInvalidArgument, "created_to"},
			{"unknown parameter", "GET", p + "/workflows?stat=waiting", "", "", 400, CodeInvalidArgument, "stat"},
			{"bad page token", "GET", p + "/workflows?page_token=garbage!", "", "", 400, CodeInvalidPageToken, "page_token"},
			{"page token of another list", "GET", p + "/workflows?page_token=" + encodeToken(pageToken{List: "agents", Class: "A", Name: "b"}), "", "", 400, CodeInvalidPageToken, "page_token"},
			{"agents bad page token", "GET", p + "/agents?page_token=eyJ9", "", "", 400, CodeInvalidPageToken, "page_token"},
			{"unknown agent", "GET", p + "/agents/Counter/nobody", "", "", 404, CodeNotFound, "Counter/nobody"},
			{"schedules of unknown agent", "GET", p + "/agents/Counter/nobody/schedules", "", "", 404, CodeNotFound, "Counter/nobody"},
			{"bad schedule kind", "GET", p + "/agents/Counter/alice/schedules?kind=weekly", "", "", 400, CodeInvalidArgument, "kind"},
			{"bad submission status", "GET", p + "/agents/Assistant/bob/submissions?status=done", "", "", 400, CodeInvalidArgument, "status"},
			{"unknown submission", "GET", p + "/agents/Assistant/bob/submissions/sub_9", "", "", 404, CodeNotFound, "sub_9"},
			{"cancel finished submission", "POST", p + "/agents/Assistant/bob/submissions/sub_1/cancel", "", "", 409, CodeFailedPrecondition, "sub_1"},
			{"cancel unknown submission", "POST", p + "/agents/Assistant/bob/submissions/sub_9/cancel", "", "", 404, CodeNotFound, "sub_9"},
			{"outbox bad flag", "GET", p + "/outbox?undelivered=yes", "", "", 400, CodeInvalidArgument, "undelivered"},
			{"unknown route", "GET", p + "/nope", "", "", 404, CodeNotFound, "/nope"},
			{"wrong method", "DELETE", p + "/workflows/" + idDone, "", "", 405, CodeMethodNotAllowed, "GET"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, err := http.NewRequest(tc.method, srv.URL+tc.path, body)
				if err != nil {
					t.Fatal(err)
				}
				switch tc.token {
				case "":
					req.Header.Set("Authorization", "Bearer "+testToken)
				case "-":
				default:
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e Error
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
					t.Fatalf("%d: the answer is not a JSON error: %v", resp.StatusCode, err)
				}
				if resp.StatusCode != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.names) {
					t.Errorf("%s %s: %d %+v; want %d %s naming %q", tc.method, tc.path, resp.StatusCode, e, tc.status, tc.code, tc.names)
				}
				if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("a 401 without WWW-Authenticate")
				}
			})
		}
		if after := snapshot(t, st); after != before {
			t.Errorf("refused requests changed the store:\nbefore %s\nafter  %s", before, after)
		}
	})
}

func TestClientReturnsErrors(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "admin.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, c := server(t, st)
	_, err = c.DescribeWorkflow(context.Background(), "wf-nope")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != CodeNotFound {
		t.Fatalf("got %v, want a 404 *Error", err)
	}
	c.Token = "wrong"
	if _, err = c.ListWorkflows(context.Background(), WorkflowFilter{}); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("got %v, want a 401 *Error", err)
	}
}

func TestDashboardHook(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "admin.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dash := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "dashboard "+r.URL.Path) })
	h := NewHandler(Options{Store: st, Token: testToken, Dashboard: dash})
	for path, want := range map[string]string{"/": "dashboard /", "/app.js": "dashboard /app.js"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("GET %s: %d %q, want %q (the dashboard, without the token)", path, rec.Code, rec.Body, want)
		}
	}
	rec := httptest.NewRecorder()
	NewHandler(Options{Store: st}).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "/api/v1/") {
		t.Errorf("GET / without a dashboard: %d %q", rec.Code, rec.Body)
	}
}

// TestCancelRunning: a running submission is cancelled through
// Options.CancelRunning, the agent's side (here a stand-in that ends the
// turn as the agent's runtime would), and answered with how it ended;
// without the option it is refused, and nothing changes.
func TestCancelRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "admin.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k := store.AgentKey{Class: "Assistant", Name: "carol"}
	if _, _, err := st.CreateSubmission(ctx, &store.Submission{ID: "sub_run", AgentKey: k,
		Messages: []byte(`[{"role":"user","content":"hi"}]`), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartSubmission(ctx, k, "node-1", t0); err != nil {
		t.Fatal(err)
	}
	var asked []string
	cancel := func(ctx context.Context, a store.AgentKey, id string) error {
		asked = append(asked, a.String()+" "+id)
		return st.FinishSubmission(ctx, a, id, "node-1", store.SubmissionAborted, "cancelled", nil, store.Usage{}, t0)
	}
	p := "/api/v1/agents/Assistant/carol/submissions/sub_run/cancel"
	post := func(h http.Handler) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("POST", p, nil)
		r.Header.Set("Authorization", "Bearer "+testToken)
		h.ServeHTTP(rec, r)
		return rec
	}
	if rec := post(NewHandler(Options{Store: st, Token: testToken})); rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "CancelRunning") {
		t.Fatalf("without CancelRunning: %d %s, want 409 naming the option", rec.Code, rec.Body)
	}
	rec := post(NewHandler(Options{Store: st, Token: testToken, CancelRunning: cancel}))
	var got CancelResult
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("with CancelRunning: %d %s", rec.Code, rec.Body)
	}
	if got.PreviousStatus != "running" || got.Submission.Status != "aborted" || len(asked) != 1 || asked[0] != "Assistant/carol sub_run" {
		t.Errorf("cancel = %+v, asked %q; want running → aborted, asked once for Assistant/carol sub_run", got, asked)
	}
}
