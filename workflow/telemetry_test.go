package workflow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/telemetry"
	"agentflow/internal/telemetrytest"
	"agentflow/workflow"
	"agentflow/workflowtest"
)

// TestTelemetrySpanTree runs a workflow with a retried step, a sleep and a
// crash (the engine stopped before a step, a new one taking over) and
// checks the span tree: every segment is a child of the creating span, in
// the caller's trace, with the step attempts under the segment that ran them.
func TestTelemetrySpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	env := workflowtest.New(t, workflowtest.Options{TracerProvider: tp, MeterProvider: mp})
	calls := 0
	workflowtest.Register(env, "w", workflow.Func[int, string](func(ctx context.Context, ev workflow.Event[int], step *workflow.Step) (string, error) {
		if _, err := workflow.DoWith(step, "flaky", workflow.StepConfig{Retries: &workflow.Retries{Limit: 3, Delay: time.Second}},
			func(ctx context.Context, a workflow.Attempt) (int, error) {
				calls++
				if a.Number == 1 {
					return 0, errors.New("boom")
				}
				return 1, nil
			}); err != nil {
			return "", err
		}
		if err := step.Sleep("nap", time.Hour); err != nil {
			return "", err
		}
		return workflow.Do(step, "final", func(ctx context.Context, a workflow.Attempt) (string, error) { return "ok", nil })
	}))

	ctx, caller := tp.Tracer("test").Start(context.Background(), "caller")
	env.StopBefore("final")
	run := env.CreateContext(ctx, "w", workflow.CreateOptions{Params: 1})
	caller.End()
	if st := run.Wait(); st.Status.Finished() {
		t.Fatalf("finished before the crash: %s", st.Status)
	}
	env.Restart()
	wantOutput(t, run.Wait(), "ok")

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
		if s.SpanContext().TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %q is in trace %s, not the caller's", s.Name(), s.SpanContext().TraceID())
		}
	}
	if n := len(byName["create_workflow w"]); n != 1 {
		t.Fatalf("%d create spans", n)
	}
	create := byName["create_workflow w"][0]
	if create.Parent().SpanID() != caller.SpanContext().SpanID() {
		t.Errorf("create span's parent is not the caller")
	}
	segs := byName["run_workflow w"]
	// claim → flaky fails; retry → flaky ok, nap; nap over → stopped before
	// final; after the restart → final, complete.
	wantSegs := []string{"suspended", "suspended", "abandoned", "complete"}
	if len(segs) != len(wantSegs) {
		t.Fatalf("%d segments, want %d", len(segs), len(wantSegs))
	}
	lastFence := int64(0)
	segIDs := map[trace.SpanID]int{}
	for i, s := range segs {
		a := telemetrytest.Attrs(s)
		if got := a[telemetry.KeyOutcome].AsString(); got != wantSegs[i] {
			t.Errorf("segment %d outcome %q, want %q", i, got, wantSegs[i])
		}
		if f := a[telemetry.KeySegment].AsInt64(); f <= lastFence {
			t.Errorf("segment %d fence %d after %d", i, f, lastFence)
		} else {
			lastFence = f
		}
		if s.Parent().SpanID() != create.SpanContext().SpanID() {
			t.Errorf("segment %d is not a child of the create span", i)
		}
		if len(s.Links()) != 1 || s.Links()[0].SpanContext.SpanID() != create.SpanContext().SpanID() {
			t.Errorf("segment %d links %v, want the create span", i, s.Links())
		}
		segIDs[s.SpanContext().SpanID()] = i
	}
	if !hasEvent(segs[1], "timer fired", "retry") || !hasEvent(segs[2], "timer fired", "sleep") {
		t.Errorf("timer events missing: %v / %v", segs[1].Events(), segs[2].Events())
	}

	tests := []struct {
		span    string
		segment int
		attempt int64
		outcome string
		errType string
	}{
		{"step flaky", 0, 1, telemetry.OutcomeRetrying, "Error"},
		{"step flaky", 1, 2, telemetry.OutcomeSucceeded, ""},
		{"step final", 3, 1, telemetry.OutcomeSucceeded, ""},
	}
	seen := map[string]int{}
	for _, tt := range tests {
		i := seen[tt.span]
		seen[tt.span]++
		if i >= len(byName[tt.span]) {
			t.Errorf("no span %q #%d", tt.span, i)
			continue
		}
		s := byName[tt.span][i]
		a := telemetrytest.Attrs(s)
		if got := segIDs[s.Parent().SpanID()]; got != tt.segment {
			t.Errorf("%s #%d ran in segment %d, want %d", tt.span, i, got, tt.segment)
		}
		if a[telemetry.KeyAttempt].AsInt64() != tt.attempt || a[telemetry.KeyOutcome].AsString() != tt.outcome ||
			a[telemetry.KeyErrorType].AsString() != tt.errType || a[telemetry.KeyWorkflow].AsString() != "w" ||
			a[telemetry.KeyInstance].AsString() != run.ID {
			t.Errorf("%s #%d attributes %v", tt.span, i, s.Attributes())
		}
	}
	for name, n := range seen {
		if len(byName[name]) != n {
			t.Errorf("%d spans %q, want %d", len(byName[name]), name, n)
		}
	}

	ps := telemetrytest.Collect(t, reader)
	metrics := []struct {
		name  string
		attrs []attribute.KeyValue
		want  int64
	}{
		{telemetry.MetricStepsStarted, []attribute.KeyValue{telemetry.KeyWorkflow.String("w")}, 3},
		{telemetry.MetricStepsSucceeded, []attribute.KeyValue{telemetry.KeyWorkflow.String("w")}, 2},
		{telemetry.MetricStepsFailed, []attribute.KeyValue{telemetry.KeyWorkflow.String("w"), telemetry.KeyOutcome.String("retrying")}, 1},
		{telemetry.MetricSegments, []attribute.KeyValue{telemetry.KeyWorkflow.String("w")}, 4},
		{telemetry.MetricStepDuration, []attribute.KeyValue{telemetry.KeyWorkflow.String("w"), telemetry.KeyOutcome.String("succeeded")}, 2},
		{telemetry.MetricTimerLateness, []attribute.KeyValue{telemetry.KeyTimer.String("sleep")}, 1},
		{telemetry.MetricInstances, []attribute.KeyValue{telemetry.KeyStatus.String("complete")}, 1},
		{telemetry.MetricCommitBatch, []attribute.KeyValue{attribute.String("agentflow.store.backend", "sqlite")}, -1},
	}
	for _, m := range metrics {
		p, ok := telemetrytest.Find(ps, m.name, m.attrs...)
		got := p.Value
		switch {
		case !ok:
			t.Errorf("metric %s%v not recorded", m.name, m.attrs)
		case m.want >= 0 && got != m.want:
			t.Errorf("metric %s%v = %d, want %d", m.name, m.attrs, got, m.want)
		}
	}
}

func hasEvent(s sdktrace.ReadOnlySpan, name, kind string) bool {
	for _, e := range s.Events() {
		for _, kv := range e.Attributes {
			if e.Name == name && kv.Key == telemetry.KeyTimer && kv.Value.AsString() == kind {
				return true
			}
		}
	}
	return false
}
