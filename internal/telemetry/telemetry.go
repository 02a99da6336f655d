// Package telemetry holds the OpenTelemetry instruments of agentflow: the
// tracer, the metric instruments with their names, units and attributes, and
// the few methods the engine, the agent runtime, think and the stores call on
// their hot paths.
//
// It is free when off. New with a nil TracerProvider and a nil MeterProvider
// returns a *T whose methods test one bool and return: no span, no context,
// no attribute slice is made. A nil *T is off too. The providers are never
// taken from the OpenTelemetry globals: a program that wants telemetry passes
// its providers in the packages' Options, so two engines in one process (or a
// test) never share instruments by accident.
package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span and instrument.
const ScopeName = "agentflow"

// Attribute keys of agentflow's own spans and metrics. Metric attributes are
// the low-cardinality ones: class names, statuses, outcomes, models.
const (
	KeyWorkflow   = attribute.Key("agentflow.workflow.name")
	KeyInstance   = attribute.Key("agentflow.workflow.instance_id")
	KeySegment    = attribute.Key("agentflow.workflow.segment")
	KeyRestarts   = attribute.Key("agentflow.workflow.restarts")
	KeyStep       = attribute.Key("agentflow.step.name")
	KeyOccurrence = attribute.Key("agentflow.step.occurrence")
	KeyAttempt    = attribute.Key("agentflow.step.attempt")
	KeyOutcome    = attribute.Key("agentflow.outcome")
	KeyStatus     = attribute.Key("agentflow.status")
	KeyTimer      = attribute.Key("agentflow.timer.kind")
	KeyAgentClass = attribute.Key("agentflow.agent.class")
	KeyAgentName  = attribute.Key("agentflow.agent.name")
	KeyMethod     = attribute.Key("agentflow.agent.method")
	KeyTransport  = attribute.Key("agentflow.agent.transport")
	KeySchedule   = attribute.Key("agentflow.schedule.id")
	KeySubmission = attribute.Key("agentflow.think.submission_id")
	KeyErrorType  = attribute.Key("error.type")
	// KeyNode names the node (process) a per-process gauge describes, so
	// that two runtimes sharing a MeterProvider report apart. Nodes are
	// few and long-lived, so it keeps the series few.
	KeyNode = attribute.Key("agentflow.node")
)

// Outcomes of a step attempt, an RPC or a delivery.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeRetrying  = "retrying" // failed; another attempt is scheduled
	OutcomeFailed    = "failed"   // failed for good
)

// T is one pair of providers' tracer and instruments. Its zero value and nil
// are off.
type T struct {
	tracing, metrics bool
	tracer           trace.Tracer
	meter            metric.Meter
	prop             propagation.TraceContext
	attrs            attrCache

	// workflow
	stepsStarted   metric.Int64Counter
	stepsSucceeded metric.Int64Counter
	stepsFailed    metric.Int64Counter
	stepDuration   metric.Float64Histogram
	segments       metric.Int64Counter
	timerLateness  metric.Float64Histogram
	// agents
	wsConns      metric.Int64UpDownCounter
	rpcDuration  metric.Float64Histogram
	activations  metric.Int64Counter
	scheduleRuns metric.Int64Counter
	schedLate    metric.Float64Histogram
	// think
	submissions    metric.Int64Counter
	modelDuration  metric.Float64Histogram
	tokenUsage     metric.Int64Histogram
	outboxDelivery metric.Int64Counter
}

// New returns the instruments of tp and mp; a nil provider turns its half off.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*T, error) {
	t := &T{}
	if tp != nil {
		t.tracing = true
		t.tracer = tp.Tracer(ScopeName)
	}
	if mp == nil {
		return t, nil
	}
	t.metrics = true
	m := mp.Meter(ScopeName)
	t.meter = m
	var err error
	c := func(name, unit, desc string) metric.Int64Counter {
		var v metric.Int64Counter
		if err == nil {
			v, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
		return v
	}
	u := func(name, unit, desc string) metric.Int64UpDownCounter {
		var v metric.Int64UpDownCounter
		if err == nil {
			v, err = m.Int64UpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
		return v
	}
	h := func(name, desc string, bounds ...float64) metric.Float64Histogram {
		var v metric.Float64Histogram
		if err == nil {
			v, err = m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		}
		return v
	}
	fast := []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	t.stepsStarted = c(MetricStepsStarted, "{attempt}", "Step attempts started (Do), by workflow class.")
	t.stepsSucceeded = c(MetricStepsSucceeded, "{attempt}", "Step attempts that succeeded, by workflow class.")
	t.stepsFailed = c(MetricStepsFailed, "{attempt}", "Step attempts that failed, by workflow class and whether a retry follows (agentflow.outcome retrying or failed).")
	t.stepDuration = h(MetricStepDuration, "Duration of step attempts, by workflow class and outcome.", fast...)
	t.segments = c(MetricSegments, "{segment}", "Execution segments started (an instance run from its claim to its suspension or finish), by workflow class.")
	t.timerLateness = h(MetricTimerLateness, "How late a sleep's or a retry's timer was acted on, by timer kind.", fast...)
	t.wsConns = u(MetricWSConnections, "{connection}", "Open WebSocket connections to agents, by class.")
	t.rpcDuration = h(MetricRPCDuration, "Duration of agent calls, by class, transport and outcome.", fast...)
	t.activations = c(MetricActivations, "{activation}", "Agent activations, by class and outcome.")
	t.scheduleRuns = c(MetricScheduleRuns, "{run}", "Schedule callbacks run, by agent class and outcome.")
	t.schedLate = h(MetricScheduleLateness, "How late a schedule ran after its time, by agent class.", fast...)
	t.submissions = c(MetricSubmissions, "{submission}", "Think submissions finished, by agent class and status.")
	t.modelDuration = h(MetricGenAIDuration, "GenAI operation duration (semantic conventions).", 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
	if err == nil {
		t.tokenUsage, err = m.Int64Histogram(MetricGenAITokens, metric.WithUnit("{token}"),
			metric.WithDescription("Tokens used per model call (semantic conventions), by model and gen_ai.token.type."),
			metric.WithExplicitBucketBoundaries(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304))
	}
	t.outboxDelivery = c(MetricOutboxDeliveries, "{delivery}", "Think outbox delivery attempts, by outcome (succeeded, retrying, failed).")
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	// Series that only events add to are exported from the start, at 0, so
	// that dashboards and alerts find them before the first event.
	ctx := context.Background()
	t.wsConns.Add(ctx, 0)
	t.outboxDelivery.Add(ctx, 0)
	return t, nil
}

// Metric names, as the OpenTelemetry instruments name them. The Prometheus
// exporter turns dots into underscores and appends "_seconds" to those in
// seconds and "_total" to counters.
const (
	MetricStepsStarted     = "agentflow.workflow.steps.started"
	MetricStepsSucceeded   = "agentflow.workflow.steps.succeeded"
	MetricStepsFailed      = "agentflow.workflow.steps.failed"
	MetricStepDuration     = "agentflow.workflow.step.duration"
	MetricSegments         = "agentflow.workflow.segments"
	MetricTimerLateness    = "agentflow.workflow.timer.lateness"
	MetricInstances        = "agentflow.workflow.instances"
	MetricBacklog          = "agentflow.workflow.backlog"
	MetricAgentsLive       = "agentflow.agent.live"
	MetricWSConnections    = "agentflow.agent.websocket.connections"
	MetricRPCDuration      = "agentflow.agent.call.duration"
	MetricActivations      = "agentflow.agent.activations"
	MetricScheduleRuns     = "agentflow.agent.schedule.runs"
	MetricScheduleLateness = "agentflow.agent.schedule.lateness"
	MetricSubmissions      = "agentflow.think.submissions"
	MetricGenAIDuration    = "gen_ai.client.operation.duration"
	MetricGenAITokens      = "gen_ai.client.token.usage"
	MetricOutboxDeliveries = "agentflow.think.outbox.deliveries"
	MetricOutboxBacklog    = "agentflow.think.outbox.backlog"
	MetricCommitBatch      = "agentflow.store.commit.batch_size"
	MetricCommitDuration   = "agentflow.store.commit.duration"
	MetricWriteErrors      = "agentflow.store.write.errors"
)

// Tracing reports whether spans are recorded.
func (t *T) Tracing() bool { return t != nil && t.tracing }

// Metrics reports whether metrics are recorded.
func (t *T) Metrics() bool { return t != nil && t.metrics }

// Meter returns the meter, nil when metrics are off.
func (t *T) Meter() metric.Meter {
	if !t.Metrics() {
		return nil
	}
	return t.meter
}

// Start starts a span when tracing is on; otherwise it returns ctx and a
// span that does nothing (the one already in ctx, never ended by callers
// that test Tracing, harmless to end otherwise).
func (t *T) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return t.tracer.Start(ctx, name, opts...)
}

// End ends span with err's status and error.type (KeyErrorType set to
// errName, or to err's type when errName is empty).
func End(span trace.Span, err error, errName string) {
	if err != nil {
		if errName == "" {
			errName = fmt.Sprintf("%T", err)
		}
		span.SetAttributes(KeyErrorType.String(errName))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Traceparent returns the W3C traceparent of ctx's span, "" when ctx has no
// valid span context.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// childOfCreator makes a span started later with opts, in ctx, a child of
// the span a stored traceparent names (whatever ctx carries) and links it
// to that span as its creator ("agentflow.link": "created_by"). With no
// valid traceparent it changes nothing.
func childOfCreator(ctx context.Context, traceparent string, opts []trace.SpanStartOption) (context.Context, []trace.SpanStartOption) {
	sc := ParseTraceparent(traceparent)
	if !sc.IsValid() {
		return ctx, opts
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc), append(opts, trace.WithLinks(trace.Link{SpanContext: sc,
		Attributes: []attribute.KeyValue{attribute.String("agentflow.link", "created_by")}}))
}

// ParseTraceparent returns the remote span context a Traceparent names,
// invalid when s is empty or malformed.
func ParseTraceparent(s string) trace.SpanContext {
	if s == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": s})
	return trace.SpanContextFromContext(ctx)
}

// Extract returns ctx with the remote span context of the request's
// traceparent and tracestate headers (the W3C propagator), when tracing is on.
func (t *T) Extract(ctx context.Context, h propagation.TextMapCarrier) context.Context {
	if !t.Tracing() {
		return ctx
	}
	return t.prop.Extract(ctx, h)
}

// Inject writes ctx's span context into h as traceparent, when tracing is on.
func (t *T) Inject(ctx context.Context, h propagation.TextMapCarrier) {
	if t.Tracing() {
		t.prop.Inject(ctx, h)
	}
}
