package telemetry

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Transports of an agent call.
const (
	TransportInProcess = "in_process"
	TransportWebSocket = "websocket"
	TransportHTTP      = "http" // a call another node of the cluster sent
)

// StartActivation starts the span of an agent's activation.
func (t *T) StartActivation(ctx context.Context, class, name string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "activate "+class, trace.WithAttributes(KeyAgentClass.String(class), KeyAgentName.String(name)))
}

// EndActivation counts an activation by outcome and ends its span.
func (t *T) EndActivation(ctx context.Context, span trace.Span, class string, err error) {
	if t.Metrics() {
		t.activations.Add(ctx, 1, t.attrs.get(KeyAgentClass.String(class), KeyOutcome.String(outcomeOf(err))))
	}
	if span != nil {
		End(span, err, "")
	}
}

func outcomeOf(err error) string {
	if err != nil {
		return OutcomeFailed
	}
	return OutcomeSucceeded
}

// Call describes an agent call being served here.
type Call struct {
	Class, Name, Method, Transport string
	// Link, when valid, is the span context the call is linked to rather
	// than a child of: the WebSocket upgrade request's, for a call that
	// arrives on a long-lived connection.
	Link trace.SpanContext
}

// StartCall starts the span of a call served here; the returned time is
// its start, zero when metrics are off.
func (t *T) StartCall(ctx context.Context, c Call) (context.Context, trace.Span, time.Time) {
	var start time.Time
	if t.Metrics() {
		start = time.Now()
	}
	if !t.Tracing() {
		return ctx, nil, start
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("rpc.system", "agentflow"), attribute.String("rpc.method", c.Method),
		KeyAgentClass.String(c.Class), KeyAgentName.String(c.Name), KeyMethod.String(c.Method), KeyTransport.String(c.Transport))}
	if c.Link.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: c.Link}))
	}
	ctx, span := t.tracer.Start(ctx, "call "+c.Class+"."+c.Method, opts...)
	return ctx, span, start
}

// EndCall records a call's latency by class, transport and outcome and ends
// its span.
func (t *T) EndCall(ctx context.Context, span trace.Span, start time.Time, class, transport string, err error) {
	if t.Metrics() && !start.IsZero() {
		t.rpcDuration.Record(ctx, time.Since(start).Seconds(),
			t.attrs.get(KeyAgentClass.String(class), KeyTransport.String(transport), KeyOutcome.String(outcomeOf(err))))
	}
	if span != nil {
		End(span, err, "")
	}
}

// StartClientCall starts the span of a call sent to another node.
func (t *T) StartClientCall(ctx context.Context, class, name, method string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "call "+class+"."+method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("rpc.system", "agentflow"), attribute.String("rpc.method", method),
		KeyAgentClass.String(class), KeyAgentName.String(name), KeyMethod.String(method), KeyTransport.String(TransportHTTP)))
}

// WSConnected adds delta (1 or -1) to the open WebSocket connections of class.
func (t *T) WSConnected(ctx context.Context, class string, delta int64) {
	if t.Metrics() {
		t.wsConns.Add(ctx, delta, t.attrs.get(KeyAgentClass.String(class)))
	}
}

// StartSchedule starts the span of a schedule's run, which was due at due.
func (t *T) StartSchedule(ctx context.Context, class, name, method, id string, late time.Duration) (context.Context, trace.Span) {
	if t.Metrics() {
		t.schedLate.Record(ctx, max(late, 0).Seconds(), t.attrs.get(KeyAgentClass.String(class)))
	}
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "schedule "+class+"."+method, trace.WithAttributes(
		KeyAgentClass.String(class), KeyAgentName.String(name), KeyMethod.String(method), KeySchedule.String(id),
		attribute.Float64("agentflow.schedule.lateness_s", late.Seconds())))
}

// EndSchedule counts a schedule run by outcome and ends its span.
func (t *T) EndSchedule(ctx context.Context, span trace.Span, class string, attempts int, err error) {
	if t.Metrics() {
		t.scheduleRuns.Add(ctx, 1, t.attrs.get(KeyAgentClass.String(class), KeyOutcome.String(outcomeOf(err))))
	}
	if span != nil {
		span.SetAttributes(attribute.Int("agentflow.schedule.attempts", attempts))
		End(span, err, "")
	}
}

// EndHTTP ends an HTTP request's server span with the response's status
// code (101 for a WebSocket upgrade; 0 when nothing was written, which is
// not recorded). As the HTTP semantic conventions say for a server, only a
// 5xx marks the span as an error.
func (t *T) EndHTTP(span trace.Span, status int) {
	if span == nil {
		return
	}
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// StartHTTP starts the server span of an HTTP request for an agent, a child
// of the request's traceparent, which ctx carries (Extract).
func (t *T) StartHTTP(ctx context.Context, method, route string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", method), attribute.String("http.route", route)))
}
