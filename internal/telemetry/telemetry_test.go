package telemetry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/telemetry"
)

func TestOffMakesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		tel  *telemetry.T
	}{
		{"nil", nil},
		{"zero", &telemetry.T{}},
		{"no providers", mustNew(t, nil, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.tel.Tracing() || tc.tel.Metrics() {
				t.Fatal("on without providers")
			}
			if c, span := tc.tel.StartSegment(ctx, telemetry.Segment{Workflow: "w"}); c != ctx || span != nil {
				t.Error("StartSegment made a span or a context")
			}
			if c, span := tc.tel.StartStep(ctx, telemetry.StepAttempt{Workflow: "w"}); c != ctx || span != nil {
				t.Error("StartStep made a span or a context")
			}
			tc.tel.EndStep(ctx, nil, "w", telemetry.OutcomeFailed, errors.New("x"), "Error", time.Second)
			tc.tel.TimerFired(ctx, "sleep", time.Second)
			unreg, err := tc.tel.ObserveGauge("g", "1", "", time.Second, time.Now, func(context.Context) ([]telemetry.Gauge, error) {
				t.Error("gauge computed while off")
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			unreg()
			if allocs := testing.AllocsPerRun(100, func() { hotPath(tc.tel) }); allocs != 0 {
				t.Errorf("the hot path allocates %v times per step while off", allocs)
			}
		})
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		want  string
		valid bool
	}{
		{"no span", context.Background(), "", false},
		{"span", ctx, "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := telemetry.Traceparent(tc.ctx)
			if got != tc.want {
				t.Fatalf("Traceparent = %q, want %q", got, tc.want)
			}
			sc := telemetry.ParseTraceparent(got)
			if sc.IsValid() != tc.valid || (tc.valid && !sc.Equal(trace.SpanContextFromContext(tc.ctx).WithRemote(true))) {
				t.Errorf("ParseTraceparent(%q) = %v", got, sc)
			}
		})
	}
	if sc := telemetry.ParseTraceparent("garbage"); sc.IsValid() {
		t.Errorf("a malformed traceparent parsed: %v", sc)
	}
}

// hotPath is what the engine calls for one step attempt of an execution.
func hotPath(tel *telemetry.T) {
	ctx := context.Background()
	ctx, seg := tel.StartSegment(ctx, telemetry.Segment{Workflow: "three-steps", InstanceID: "wf_1", Fence: 2})
	actx, span := tel.StartStep(ctx, telemetry.StepAttempt{Workflow: "three-steps", InstanceID: "wf_1", Step: "a", Attempt: 1})
	tel.EndStep(actx, span, "three-steps", telemetry.OutcomeSucceeded, nil, "", time.Millisecond)
	telemetry.EndSegment(seg, "complete", nil, "")
}

func mustNew(t testing.TB, tp trace.TracerProvider, mp *sdkmetric.MeterProvider) *telemetry.T {
	t.Helper()
	var tel *telemetry.T
	var err error
	if mp == nil {
		tel, err = telemetry.New(tp, nil)
	} else {
		tel, err = telemetry.New(tp, mp)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

// BenchmarkStepTelemetry measures what telemetry adds to one step attempt
// (a segment, a step span, the step metrics): off, and with the SDK's
// providers (every span sampled and batched to an exporter that drops it,
// metrics aggregated).
func BenchmarkStepTelemetry(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer tp.Shutdown(context.Background())
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	for _, bc := range []struct {
		name string
		tel  *telemetry.T
	}{
		{"off", mustNew(b, nil, nil)},
		{"metrics", mustNew(b, nil, mp)},
		{"traces+metrics", mustNew(b, tp, mp)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				hotPath(bc.tel)
			}
		})
	}
}
