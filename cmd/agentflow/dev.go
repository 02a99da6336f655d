package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"agentflow/admin"
	"agentflow/agent"
	"agentflow/examples/assistant"
	"agentflow/examples/assistant/web"
	"agentflow/examples/counter"
	"agentflow/examples/flights"
	"agentflow/examples/flights/email"
	"agentflow/examples/report"
	"agentflow/examples/signup"
	"agentflow/examples/triage"
	"agentflow/internal/bearer"
	"agentflow/internal/httpserver"
	"agentflow/internal/telemetry/promexport"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// runDev runs the example workflows on an embedded SQLite file and prints
// their progress: a report whose first step is retried, and a signup that
// sleeps and then waits for an event, which dev sends once it waits. It also
// serves the example agents (the Counter, and the flights example's
// MyAgent) over HTTP and WebSocket on --addr, at /agents/<class>/<name>,
// where the `agents` JavaScript client connects. And it plays the flights
// example (the seed document of DESIGN §3.5) with both of its services — this
// engine, and a second one of service email-workflows on the same store —
// by sending MyAgent the seed's request itself. The example Think agent,
// the Assistant, answers with the model the environment (read through
// getenv) configures, or with the scripted model; --once asks it one
// question and prints the answer. The second Think example, TriageAgent
// (seed 001: a prompt step in a workflow, then a human approval), uses the
// same model, or its own scripted one; --once triages issue 42, prints the
// draft, approves it with SendWorkflowEvent and prints the labels applied.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	defer func() {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			err = nil // stopped (Ctrl-C) while starting or running the examples
		}
	}()
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbPath := fs.String("db", "agentflow-dev.db", "SQLite database file (created if missing)")
	once := fs.Bool("once", false, "exit when the examples have finished instead of running until interrupted")
	grace := fs.Duration("grace", 2*time.Second, "how long the signup example sleeps")
	verbose := fs.Bool("v", false, "log the engine's debug messages")
	addr := fs.String("addr", "127.0.0.1:8787", `address the agents server listens on ("" to not serve agents)`)
	flightDelay := fs.Duration("flight-delay", 5*time.Second, "how long after the request the flights example starts its workflow (300 s in the seed)")
	checkInWait := fs.Duration("check-in-wait", 2*time.Second, "how long the flight workflow sleeps before checking in (20 minutes in the seed)")
	pgDSN := fs.String("postgres", "", "PostgreSQL URL to run on instead of the SQLite file (several dev processes may share it as a cluster); default $"+envPostgres)
	secretFlag := fs.String("cluster-secret", "", "secret shared by the nodes of a cluster: with it, a request or call for an agent live on another dev process is sent there; default $"+envClusterSecret)
	advertise := fs.String("advertise", "", `URL other nodes reach this one's agents at (default "http://<--addr>/agents")`)
	tokenFlag := fs.String("token", "", "bearer token agents clients must send (Authorization: Bearer <token>, or ?token=<token> from a browser WebSocket); default $"+envToken+", and none when both are empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token, err := devToken(fs, *tokenFlag, getenv)
	if err != nil {
		return err
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *pgDSN == "" {
		*pgDSN = getenv(envPostgres)
	}
	if *secretFlag == "" {
		*secretFlag = getenv(envClusterSecret)
	}
	// Metrics are served at /metrics (Prometheus text format).
	prom, err := promexport.New()
	if err != nil {
		return err
	}
	defer prom.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // nothing to flush
	// Traces go to an OTLP collector when the standard variables name one.
	traces, err := newTraceExport(ctx, getenv)
	if err != nil {
		return err
	}
	defer stopWithin(ctx, logger, "the trace exporter", traces.Shutdown)
	st, where, err := openDevStore(ctx, *dbPath, *pgDSN, prom.MeterProvider)
	if err != nil {
		return err
	}
	defer st.Close()

	p := &printer{w: stdout, start: time.Now()}
	hooks := workflow.Hooks{
		BeforeStep: func(_ context.Context, s workflow.StepRef) error {
			if s.Attempt > 1 {
				p.printf("%-8s %s  step %-20s attempt %d", s.Workflow, s.InstanceID, s.Name, s.Attempt)
			}
			return nil
		},
		AfterStep: func(_ context.Context, s workflow.StepRef) error {
			p.printf("%-8s %s  step %-20s done", s.Workflow, s.InstanceID, s.Name)
			return nil
		},
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Hooks: hooks,
		TracerProvider: traces.tracerProvider(), MeterProvider: prom.MeterProvider})
	if err != nil {
		return err
	}
	workflow.MustRegister(eng, signup.Name, workflow.Workflow[signup.Params, signup.Result](signup.Signup{}))
	workflow.MustRegister(eng, report.Name, workflow.Workflow[[]string, string](report.Report{}))
	// The flights example's other service: in production a process of its
	// own (examples/flights/cmd/email-workflows) sharing the store.
	emails, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Hooks: hooks, Service: email.Service,
		TracerProvider: traces.tracerProvider(), MeterProvider: prom.MeterProvider})
	if err != nil {
		return err
	}
	if err := email.Register(emails, email.Printer{W: p}); err != nil {
		return err
	}

	var ln net.Listener
	if *addr != "" {
		// Listen before anything starts, so that a busy port fails at once.
		if ln, err = net.Listen("tcp", *addr); err != nil {
			return fmt.Errorf("agents server: %w (choose another address with --addr)", err)
		}
		defer ln.Close()
	}
	ro := agent.Options{Engine: eng, Logger: logger}
	if *secretFlag != "" {
		ro.ClusterSecret = *secretFlag
		ro.AdvertiseURL = *advertise
		if ro.AdvertiseURL == "" && ln != nil {
			ro.AdvertiseURL = "http://" + ln.Addr().String() + "/agents"
		}
	} else if *advertise != "" {
		return fmt.Errorf("--advertise needs --cluster-secret (or %s): the nodes of a cluster prove themselves to each other with it", envClusterSecret)
	}
	rt, err := agent.NewRuntime(ro)
	if err != nil {
		return err
	}
	if err := counter.Register(rt); err != nil {
		return err
	}
	err = flights.Register(eng, rt, flights.Options{Delay: *flightDelay, CheckInWait: *checkInWait,
		Observe: func(name, line string) { p.printf("%-8s %s  %s", flights.AgentClass, name, line) }})
	if err != nil {
		return err
	}
	provider, modelDesc, err := assistant.Provider(getenv)
	if err != nil {
		return fmt.Errorf("think: the %s's model: %w", assistant.Name, err)
	}
	if err := assistant.Register(rt, assistant.Options{Model: provider}); err != nil {
		return err
	}
	// TriageAgent shares the configured model; with none it plays its own
	// script (the Assistant's answers questions about the time).
	triageModel := provider
	if _, ok := provider.(*scripted.Model); ok {
		triageModel = triage.Scripted()
	}
	if err := triage.Register(eng, rt, think.Options{Model: triageModel}); err != nil {
		return err
	}
	// The engine starts first and stops last; the agent runtime runs on it,
	// and the HTTP server in front of the runtime. The deferred stops run in
	// the reverse order: server, runtime, engine.
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer stopWithin(ctx, logger, "the engine", eng.Stop)
	if err := emails.Start(ctx); err != nil {
		return err
	}
	defer stopWithin(ctx, logger, "the email-workflows engine", emails.Stop)
	if err := rt.Start(ctx); err != nil {
		return err
	}
	defer stopWithin(ctx, logger, "the agent runtime", rt.Stop)
	p.printf("agentflow dev: engine %s on %s; engine %s of service %q on the same store", eng.NodeID(), where, emails.NodeID(), email.Service)
	if traces.Endpoint != "" {
		p.printf("traces: sent to %s (OTLP over HTTP)", traces.Endpoint)
	}
	if ro.AdvertiseURL != "" {
		p.printf("cluster: this node's agents are reached at %s; requests for agents live on other nodes are sent there", ro.AdvertiseURL)
	}
	if _, ok := provider.(*scripted.Model); ok {
		p.printf("think: %s uses the %s; set %s (and %s, %s) for a real one, see the README",
			assistant.Name, modelDesc, assistant.EnvBaseURL, assistant.EnvAPIKey, assistant.EnvModel)
	} else {
		p.printf("think: %s uses the %s", assistant.Name, modelDesc)
	}
	p.printf("think: %s uses the %s", triage.AgentClass, modelDesc)
	// dev's own requests (requestFlight) go to the handler directly; the
	// server's requires the token, when there is one.
	handler := rt.Handler(agent.HandlerOptions{})
	if ln != nil {
		// The agents at /agents/, the operator API and dashboard at the
		// rest, both behind the token.
		mux := http.NewServeMux()
		mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{Token: token}))
		// The Assistant's chat page: static files only, its data comes
		// from the agent (with ?token= when there is one).
		mux.Handle("/chat/", http.StripPrefix("/chat", web.Handler()))
		// A running Think turn lives in a runtime's memory: the API cancels
		// it through a named call to the agent, wherever it is live.
		cancelRunning := func(ctx context.Context, k store.AgentKey, id string) error {
			_, err := think.CancelSubmission(ctx, rt, k.Class, k.Name, id)
			return err
		}
		mux.Handle("/", withMetrics(admin.NewHandler(admin.Options{Store: st, Token: token, Logger: logger, CancelRunning: cancelRunning}), prom.Handler, token))
		srv, err := httpserver.New(httpserver.Options{
			Handler:  mux,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		})
		if err != nil {
			return err
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				logger.Error("agents server stopped", "err", err)
			}
		}()
		defer func() {
			stopWithin(ctx, logger, "the agents server", srv.Shutdown)
			<-served
		}()
		p.printf("agents: ws://%s/agents/%s/<name>  (the %s example; any name is an instance)", ln.Addr(), agent.Kebab(counter.Name), counter.Name)
		p.printf("agents: curl -X POST -H 'user-id: you' http://%s/agents/%s/<name>  (the flights example; GET <name>/state shows it)", ln.Addr(), agent.Kebab(flights.AgentClass))
		p.printf("agents: ws://%s/agents/%s/<name>  (the %s, a Think agent: useAgentChat of @cloudflare/ai-chat works unchanged, or call \"ask\" and read cf_agent_think frames)", ln.Addr(), agent.Kebab(assistant.Name), assistant.Name)
		chatURL := fmt.Sprintf("http://%s/chat/?name=ada", ln.Addr())
		if token != "" {
			chatURL += "&token=<token>"
		}
		p.printf("chat: %s  (open it in a browser: the %s's chat page, a React app on useAgentChat)", chatURL, assistant.Name)
		p.printf("agents: curl -d 'What time is it in Asia/Tokyo?' http://%s/agents/%s/<name>  (then GET <name>?submission=<id> for the answer)", ln.Addr(), agent.Kebab(assistant.Name))
		p.printf("api: http://%s%s/  (agentflow workflows list --server http://%s)", ln.Addr(), admin.APIPrefix, ln.Addr())
		p.printf("dashboard: http://%s/  (open it in a browser: instances, their step timelines and controls, agents, the outbox)", ln.Addr())
		p.printf("metrics: http://%s/metrics  (Prometheus text format; docs/grafana/agentflow.json is a dashboard for them)", ln.Addr())
		if token != "" {
			p.printf("agents: clients must send the token (--token or %s): -H 'Authorization: Bearer <token>', or ?token=<token> from a browser WebSocket", envToken)
		}
	}

	rep, err := eng.Create(ctx, report.Name, workflow.CreateOptions{Params: []string{"north", "south", "east"}})
	if err != nil {
		return err
	}
	p.printf("%-8s %s  created", report.Name, rep.ID)
	sig, err := eng.Create(ctx, signup.Name, workflow.CreateOptions{Params: signup.Params{Email: "ada@example.com", Grace: *grace}})
	if err != nil {
		return err
	}
	p.printf("%-8s %s  created", signup.Name, sig.ID)

	// The seed's request, as a client would send it; dev waits for the
	// email it ends with. A request that cannot be served is reported,
	// and the server goes on without the flights example.
	since := time.Now()
	flightRequested := true
	if err := requestFlight(ctx, p, handler, devTraveller, "ada@example.com"); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		p.printf("%-8s %s  skipping the flights example: %v", flights.AgentClass, devTraveller, err)
		flightRequested = false
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8) // one per goroutine below, at most
	if *once {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- askAssistant(ctx, p, rt, devAssistant, devQuestion)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- triageIssue(ctx, p, rt, devTriage, devIssue)
		}()
	}
	if flightRequested {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- watchFlight(ctx, p, st, devTraveller, since)
		}()
	}
	for _, w := range []struct {
		name  string
		inst  *workflow.Instance
		event bool // send the confirmation once it waits for it
	}{{report.Name, rep, false}, {signup.Name, sig, true}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- watch(ctx, p, w.name, w.inst, w.event)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if *once || ctx.Err() != nil {
		return nil
	}
	running := "the engine keeps"
	if ln != nil {
		running = "the engine and the agents server keep"
	}
	p.printf("examples finished; %s running on %s (Ctrl-C to stop)", running, where)
	<-ctx.Done()
	return nil
}

// The environment variables that set dev's --postgres and --cluster-secret.
const (
	envPostgres      = "AGENTFLOW_POSTGRES"
	envClusterSecret = "AGENTFLOW_CLUSTER_SECRET"
)

// openDevStore opens the PostgreSQL store dsn names, or else the SQLite
// file at path, and says which.
func openDevStore(ctx context.Context, path, dsn string, mp metric.MeterProvider) (store.Store, string, error) {
	if dsn != "" {
		st, err := postgres.Open(ctx, dsn, postgres.Options{MeterProvider: mp})
		if err != nil {
			return nil, "", fmt.Errorf("--postgres: %w", err)
		}
		where := "PostgreSQL"
		if u, err := url.Parse(dsn); err == nil && u.Host != "" {
			where = "PostgreSQL at " + u.Host + u.Path
		}
		return st, where, nil
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{MeterProvider: mp})
	if err != nil {
		return nil, "", err
	}
	return st, st.Path(), nil
}

// envToken is the environment variable that sets dev's --token.
const envToken = "AGENTFLOW_TOKEN"

// devToken is the bearer token the agents server requires: --token when
// it is given (an empty one requires none), $AGENTFLOW_TOKEN otherwise.
func devToken(fs *flag.FlagSet, flagValue string, getenv func(string) string) (string, error) {
	token, from := getenv(envToken), envToken
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "token" {
			token, from = flagValue, "--token"
		}
	})
	if token == "" {
		return "", nil
	}
	if _, err := bearer.New(token); err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	return token, nil
}

// stopWithin calls stop with ten seconds to finish, even when ctx (the
// command's, cancelled by Ctrl-C) is done, and logs its error.
func stopWithin(ctx context.Context, logger *slog.Logger, what string, stop func(context.Context) error) {
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := stop(stopCtx); err != nil {
		logger.Warn("stopping "+what, "err", err)
	}
}

// watch prints the instance's status changes until it finishes. For the
// signup it sends the confirmation event once the instance waits for it.
func watch(ctx context.Context, p *printer, name string, inst *workflow.Instance, sendEvent bool) error {
	var last workflow.Status
	sent := false
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := inst.Status(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C while asking
			}
			return err
		}
		if st.Status != last {
			p.printf("%-8s %s  status %s", name, inst.ID, st.Status)
			last = st.Status
		}
		if sendEvent && !sent && st.Status == workflow.StatusWaiting && waitingForEvent(ctx, inst) {
			if err := inst.SendEvent(ctx, signup.ConfirmEvent, signup.Confirmation{Code: "123456"}); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			sent = true
			p.printf("%-8s %s  sent event %q", name, inst.ID, signup.ConfirmEvent)
		}
		switch st.Status {
		case workflow.StatusComplete:
			p.printf("%-8s %s  output %s", name, inst.ID, st.Output)
			return nil
		case workflow.StatusErrored, workflow.StatusTerminated:
			return fmt.Errorf("example %s %s ended %s: %+v", name, inst.ID, st.Status, st.Error)
		}
		select {
		case <-ctx.Done():
			return nil // Ctrl-C: the engine stops and the instance resumes on the next run
		case <-tick.C:
		}
	}
}

// devTraveller is the MyAgent instance dev sends the flight request to.
const devTraveller = "traveller"

// flightRetryFor is how long requestFlight retries a request refused with
// 409: the agent is live on another node of the store, which frees it if
// that node is dead once its lease (10 s by default) has run out and a
// heartbeat (every third of it) has noticed.
const flightRetryFor = 15 * time.Second

// requestFlight sends MyAgent name the seed's request, through the agents
// handler, as a client does (curl -X POST -H 'user-id: …' …/agents/my-agent/<name>).
// While the agent is live on another node (409) it retries, for up to
// flightRetryFor.
func requestFlight(ctx context.Context, p *printer, h http.Handler, name, user string) error {
	path := "/agents/" + agent.Kebab(flights.AgentClass) + "/" + name
	deadline := time.Now().Add(flightRetryFor)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, path, http.NoBody) // as a server request, whose body is never nil
		if err != nil {
			return err
		}
		req.Header.Set("user-id", user)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := strings.TrimSpace(rec.Body.String())
		switch {
		case rec.Code == http.StatusOK:
			p.printf("%-8s %s  POST %s (user-id: %s) → %s", flights.AgentClass, name, path, user, body)
			return nil
		case rec.Code != http.StatusConflict || time.Now().After(deadline):
			return fmt.Errorf("flights example: POST %s: %d %s", path, rec.Code, body)
		case delay == 100*time.Millisecond:
			p.printf("%-8s %s  POST %s → %d %s; retrying for up to %s", flights.AgentClass, name, path, rec.Code, body, flightRetryFor)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// watchFlight follows, through the agent's tracking rows in st, the
// workflows MyAgent name started since the request, printing their tracked
// status changes, until the email workflow of the other service is
// complete.
func watchFlight(ctx context.Context, p *printer, st store.AgentWorkflowStore, name string, since time.Time) error {
	seen := map[string]store.Status{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		// The tracking rows are read from the store: in a cluster the agent
		// may be live in another dev process.
		rows, err := st.ListAgentWorkflows(ctx, store.AgentKey{Class: flights.AgentClass, Name: name}, store.WorkflowFilter{Limit: 10})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("flights example: tracked workflows of %s: %w", name, err)
		}
		for _, w := range rows {
			if w.CreatedAt.Before(since) || seen[w.WorkflowID] == w.Status {
				continue
			}
			seen[w.WorkflowID] = w.Status
			where := ""
			if w.Service != "" {
				where = " (service " + w.Service + ")"
			}
			p.printf("%-8s %s  tracks %s %s%s: %s", flights.AgentClass, name, w.Binding, w.WorkflowID, where, w.Status)
			switch {
			case w.Status == store.StatusErrored || w.Status == store.StatusTerminated:
				return fmt.Errorf("flights example: workflow %s ended %s: %s", w.WorkflowID, w.Status, w.ErrorMessage)
			case w.Binding == flights.EmailBinding && w.Status == store.StatusComplete:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// devAssistant is the Assistant instance --once asks devQuestion.
const (
	devAssistant = "dev"
	devQuestion  = "What time is it in Europe/London?"
)

// askAssistant submits question to the Assistant name, waits for the turn
// to end, and prints its tool calls and its answer. A turn that does not
// complete (a provider that fails, say) is an error.
func askAssistant(ctx context.Context, p *printer, rt *agent.Runtime, name, question string) error {
	asked, err := agent.Call(ctx, rt, name, (*assistant.Assistant).Ask, question)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("think: ask %s %s: %w", assistant.Name, name, err)
	}
	p.printf("%-8s %s  asked %q (submission %s)", assistant.Name, name, question, asked.SubmissionID)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		type result struct {
			sub   think.SubmissionInfo
			added []model.Message
		}
		r, err := agent.With(ctx, rt, name, func(ctx context.Context, a *assistant.Assistant) (result, error) {
			s, err := a.InspectSubmission(ctx, asked.SubmissionID)
			if err != nil || !s.Status.Finished() {
				return result{sub: s}, err
			}
			// What the turn added: the messages after the question.
			conv, err := a.Conversation(ctx)
			for i := len(conv) - 1; i >= 0; i-- {
				if conv[i].Role == model.RoleUser {
					return result{sub: s, added: conv[i+1:]}, err
				}
			}
			return result{sub: s}, err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("think: %s %s: submission %s: %w", assistant.Name, name, asked.SubmissionID, err)
		}
		if !r.sub.Status.Finished() {
			continue
		}
		results := map[string]model.Message{}
		for _, m := range r.added {
			if m.Role == model.RoleTool {
				results[m.ToolCallID] = m
			}
		}
		for _, m := range r.added {
			for _, c := range m.ToolCalls {
				p.printf("%-8s %s  called %s %s → %s", assistant.Name, name, c.Name, c.Arguments, results[c.ID].Content)
			}
		}
		if r.sub.Status != store.SubmissionCompleted {
			return fmt.Errorf("think: %s %s: submission %s ended %s: %s", assistant.Name, name, r.sub.ID, r.sub.Status, r.sub.Error)
		}
		var out struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal(r.sub.Output, &out)
		p.printf("%-8s %s  completed (%d tokens in, %d out): %s", assistant.Name, name,
			r.sub.Usage.InputTokens, r.sub.Usage.OutputTokens, out.Text)
		return nil
	}
}

// devTriage is the TriageAgent instance --once asks to triage devIssue.
const (
	devTriage = "dev"
	devIssue  = 42
)

// triageIssue plays seed 001: TriageAgent name triages the issue in a
// workflow; once the draft reaches the agent's state it is printed and
// approved (SendWorkflowEvent, as a human's review would), and the labels
// the workflow then applies through the agent are printed. A workflow that
// fails (a provider that fails, a model that gives no valid draft) is an
// error.
func triageIssue(ctx context.Context, p *printer, rt *agent.Runtime, name string, issue int) error {
	id, err := agent.Call(ctx, rt, name, (*triage.TriageAgent).TriageIssue, issue)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("triage: issue #%d: %w", issue, err)
	}
	p.printf("%-8s %s  triaging issue #%d in %s %s", triage.AgentClass, name, issue, triage.Binding, id)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	approved := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		type view struct {
			state  triage.State
			status workflow.InstanceStatus
		}
		v, err := agent.With(ctx, rt, name, func(ctx context.Context, a *triage.TriageAgent) (view, error) {
			st, err := a.GetWorkflowStatus(ctx, id)
			return view{state: a.State(), status: st}, err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("triage: issue #%d: workflow %s: %w", issue, id, err)
		}
		switch v.status.Status {
		case workflow.StatusErrored, workflow.StatusTerminated:
			msg := ""
			if v.status.Error != nil {
				msg = v.status.Error.Name + ": " + v.status.Error.Message
			}
			return fmt.Errorf("triage: issue #%d: workflow %s ended %s: %s", issue, id, v.status.Status, msg)
		case workflow.StatusComplete:
			p.printf("%-8s %s  labels applied to issue #%d: %s", triage.AgentClass, name, issue, strings.Join(v.state.Labels[issue], ", "))
			return nil
		}
		d, ok := v.state.Drafts[issue]
		if approved || !ok {
			continue
		}
		p.printf("%-8s %s  draft for issue #%d: %q — %s [labels: %s]", triage.AgentClass, name, issue, d.Title, d.Summary, strings.Join(d.Labels, ", "))
		_, err = agent.With(ctx, rt, name, func(ctx context.Context, a *triage.TriageAgent) (struct{}, error) {
			return struct{}{}, a.SendWorkflowEvent(ctx, id, triage.ApprovalEvent, triage.Approval{Approved: true})
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("triage: issue #%d: approve: %w", issue, err)
		}
		approved = true
		p.printf("%-8s %s  sent event %q {approved: true} to %s", triage.AgentClass, name, triage.ApprovalEvent, id)
	}
}

// waitingForEvent reports whether the instance is suspended in a
// WaitForEvent (rather than in its sleep).
func waitingForEvent(ctx context.Context, inst *workflow.Instance) bool {
	steps, err := inst.Steps(ctx)
	if err != nil || len(steps) == 0 {
		return false
	}
	return steps[len(steps)-1].Kind == workflow.KindWait
}

type printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%7.3fs  %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Write prints text (the emails of the email-workflows engine) as lines:
// the first with the time, the others indented under it.
func (p *printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	fmt.Fprintf(p.w, "%7.3fs  %s\n", time.Since(p.start).Seconds(), lines[0])
	for _, l := range lines[1:] {
		if l != "" {
			l = " " + l
		}
		fmt.Fprintf(p.w, "%9s  |%s\n", "", l)
	}
	return len(b), nil
}
