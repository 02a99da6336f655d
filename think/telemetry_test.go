package think_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"agentflow/agent"
	"agentflow/internal/telemetry"
	"agentflow/internal/telemetrytest"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// TestTurnSpans runs a turn of one tool round with the scripted model and
// checks its spans (the GenAI semantic conventions: an invoke_agent span
// with the turn's tokens, a chat span per model call and an execute_tool
// span per tool call under it) and its metrics.
func TestTurnSpans(t *testing.T) {
	t.Parallel()
	m := scripted.New(scripted.Call("get_weather", `{"city":"Oslo"}`), scripted.Say("It is sunny in Oslo."))
	e, rec, reader := newTracedEnv(t, m, nil)
	res := with(t, e, "h1", func(ctx context.Context, h *Helper) (think.SubmitResult, error) {
		return h.SubmitMessages(ctx, user("Weather in Oslo?"), think.SubmitOptions{})
	})
	waitStatus(t, e, "h1", res.Submission.ID, store.SubmissionCompleted)

	var turn sdktrace.ReadOnlySpan
	eventually(t, 5*time.Second, "the turn's span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "invoke_agent Helper" {
				turn = s
				return true
			}
		}
		return false
	})
	if a := telemetrytest.Attrs(turn); a[telemetry.KeyGenAIInputTokens].AsInt64() != 20 || a[telemetry.KeyGenAIOutputTokens].AsInt64() != 10 ||
		a[telemetry.KeySubmission].AsString() != res.Submission.ID || a[telemetry.KeyStatus].AsString() != "completed" {
		t.Errorf("turn span attributes %v", turn.Attributes())
	}
	var children []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Parent().SpanID() == turn.SpanContext().SpanID() {
			children = append(children, s)
		}
	}
	tests := []struct {
		name   string
		attrs  map[attribute.Key]attribute.Value
		finish string
	}{
		{"chat tiny-1", map[attribute.Key]attribute.Value{
			telemetry.KeyGenAIOperation: attribute.StringValue("chat"), telemetry.KeyGenAIRequestModel: attribute.StringValue("tiny-1"),
			telemetry.KeyGenAIProvider: attribute.StringValue("scripted"), telemetry.KeyGenAIInputTokens: attribute.IntValue(10),
			telemetry.KeyGenAIOutputTokens: attribute.IntValue(5)}, "tool_calls"},
		{"execute_tool get_weather", map[attribute.Key]attribute.Value{
			telemetry.KeyGenAIOperation: attribute.StringValue("execute_tool"), telemetry.KeyGenAIToolName: attribute.StringValue("get_weather")}, ""},
		{"chat tiny-1", map[attribute.Key]attribute.Value{
			telemetry.KeyGenAIInputTokens: attribute.IntValue(10), telemetry.KeyGenAIOutputTokens: attribute.IntValue(5)}, "stop"},
	}
	if len(children) != len(tests) {
		t.Fatalf("the turn has %d child spans, want %d", len(children), len(tests))
	}
	for i, tt := range tests {
		s := children[i]
		if s.Name() != tt.name {
			t.Errorf("child %d is %q, want %q", i, s.Name(), tt.name)
			continue
		}
		a := telemetrytest.Attrs(s)
		for k, v := range tt.attrs {
			if a[k] != v {
				t.Errorf("%s: %s = %v, want %v", tt.name, k, a[k].Emit(), v.Emit())
			}
		}
		if fr := a[telemetry.KeyGenAIFinishReasons].AsStringSlice(); tt.finish != "" && (len(fr) != 1 || fr[0] != tt.finish) {
			t.Errorf("%s: finish reasons %v, want %s", tt.name, fr, tt.finish)
		}
	}

	ps := telemetrytest.Collect(t, reader)
	found := map[string]bool{
		telemetry.MetricSubmissions: telemetrytest.Total(ps, telemetry.MetricSubmissions, telemetry.KeyStatus.String("completed")) == 1,
	}
	for _, p := range telemetrytest.Match(ps, telemetry.MetricGenAITokens, telemetry.KeyGenAITokenType.String("input")) {
		found[p.Metric] = found[p.Metric] || p.Sum == 20 && p.Value == 2
	}
	for _, p := range telemetrytest.Match(ps, telemetry.MetricGenAIDuration, telemetry.KeyGenAIRequestModel.String("tiny-1")) {
		found[p.Metric] = found[p.Metric] || p.Value == 2
	}
	for _, name := range []string{telemetry.MetricSubmissions, telemetry.MetricGenAITokens, telemetry.MetricGenAIDuration} {
		if !found[name] {
			t.Errorf("metric %s not recorded as expected", name)
		}
	}
}

// newTracedEnv is newEnv with SDK providers recording into rec and reader,
// and ModelName "tiny-1".
func newTracedEnv(t *testing.T, m *scripted.Model, setup func(*workflow.Engine, *agent.Runtime)) (*env, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "think.db"), sqlite.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := workflow.NewEngine(workflow.Options{Store: st, Logger: logger, Lease: time.Hour, TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: logger, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	think.MustRegister[Helper](rt, "Helper", think.Options{Model: m, ModelName: "tiny-1", System: "You help.",
		Tools: []think.Tool{weatherTool(t)}, MaxSteps: 4})
	if setup != nil {
		setup(eng, rt)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Stop(sctx)
		eng.Stop(sctx)
	})
	return &env{rt: rt, st: st, model: m, eng: eng}, rec, reader
}

// TestPromptSpans: a workflow an agent started with RunWorkflow is traced
// under the agent's create_workflow span, and the prompt's answer reaches it
// through a traced, counted delivery (made by the write that ends the
// submission).
func TestPromptSpans(t *testing.T) {
	t.Parallel()
	m := scripted.New(scripted.Call("think_final_answer", goodDraft))
	e, rec, reader := newTracedEnv(t, m, promptSetup)
	if r := runPrompt(t, e, "p1", ""); r.Draft == nil {
		t.Fatalf("result = %+v", r)
	}
	var create sdktrace.ReadOnlySpan
	segments, orphans, delivered := 0, 0, false
	eventually(t, 5*time.Second, "the spans", func() bool {
		create, segments, delivered = nil, 0, false
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "create_workflow Triage":
				create = s
			case "outbox deliver":
				delivered = delivered || telemetrytest.Attrs(s)[telemetry.KeyOutcome].AsString() == telemetry.OutcomeSucceeded
			}
		}
		if create == nil {
			return false
		}
		orphans = 0
		for _, s := range rec.Ended() {
			if s.Name() == "run_workflow Triage" {
				if s.Parent().SpanID() == create.SpanContext().SpanID() {
					segments++
				} else {
					orphans++
				}
			}
		}
		// Usually two segments, submit and then woken by the delivered
		// answer (claimed in the write that delivers it); one when the
		// answer was in before the wait looked.
		return segments >= 1 && delivered
	})
	if orphans > 0 {
		t.Errorf("%d run_workflow segments not under create_workflow", orphans)
	}
	// The agent's turn is in the workflow's trace, under the span that
	// created its submission (the prompt's named call from the submit step).
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var turn sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		byID[s.SpanContext().SpanID()] = s
		if s.Name() == "invoke_agent Helper" {
			turn = s
		}
	}
	switch {
	case turn == nil:
		t.Error("no invoke_agent span")
	case turn.SpanContext().TraceID() != create.SpanContext().TraceID():
		t.Errorf("the turn is in trace %s, the workflow in %s", turn.SpanContext().TraceID(), create.SpanContext().TraceID())
	case len(turn.Links()) != 1 || turn.Links()[0].SpanContext.SpanID() != turn.Parent().SpanID():
		t.Errorf("the turn's links %v do not name its parent %s", turn.Links(), turn.Parent().SpanID())
	default:
		var chain []string
		for p := byID[turn.Parent().SpanID()]; p != nil; p = byID[p.Parent().SpanID()] {
			chain = append(chain, p.Name())
		}
		if len(chain) == 0 || chain[len(chain)-1] != "create_workflow Triage" || !slices.Contains(chain, "step draft:submit") {
			t.Errorf("the turn's ancestors are %v; want the submit step's, up to create_workflow", chain)
		}
	}
	if a := telemetrytest.Attrs(create); a[telemetry.KeyAgentClass].AsString() != "Helper" || a[telemetry.KeyAgentName].AsString() != "p1" {
		t.Errorf("create_workflow attributes %v", create.Attributes())
	}
	deliveries := telemetrytest.Total(telemetrytest.Collect(t, reader), telemetry.MetricOutboxDeliveries,
		telemetry.KeyOutcome.String(telemetry.OutcomeSucceeded))
	if deliveries != 1 {
		t.Errorf("%d successful deliveries counted, want 1", deliveries)
	}
}
