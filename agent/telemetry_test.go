package agent_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/internal/telemetry"
	"agentflow/internal/telemetrytest"
)

// TestTelemetry: every request to the agents has a server span with its
// status code (101 for the upgrade); a WebSocket upgrade carrying a
// traceparent is served in that trace (the agent's activation under it), a call on the connection is
// a span linked to the upgrade, and an in-process call is a child of its
// caller's span; the connection and the calls are measured.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	e := newEnv(t, envOptions{rt: agent.Options{TracerProvider: tp, MeterProvider: mp}, setup: func(rt *agent.Runtime) { counter.Register(rt) }})
	base := serve(t, e, agent.HandlerOptions{})

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	h := http.Header{"Traceparent": []string{"00-" + traceID + "-" + parentID + "-01"}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL(base, "/agents/counter/c1"), &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	c := &wsClient{t: t, ws: ws}
	c.next() // identity
	c.next() // state
	c.send(`{"type":"rpc","id":"r1","method":"increment","args":[2]}`)
	for m := c.next(); m["type"] != "rpc"; m = c.next() {
	}
	resp, err := http.Get(base + "/agents/no-such-class/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cctx, caller := tp.Tracer("test").Start(t.Context(), "caller")
	if _, err := e.rt.Ref("Counter", "c1").Call(cctx, "increment", 1); err != nil {
		t.Fatal(err)
	}
	caller.End()

	var upgrade, refused, activation, wsCall, localCall sdktrace.ReadOnlySpan
	eventually(t, 5*time.Second, "the spans", func() bool {
		for _, s := range rec.Ended() {
			switch a := telemetrytest.Attrs(s); {
			case s.Name() == "GET /agents/{class}/{name}" && a["http.response.status_code"].AsInt64() == http.StatusSwitchingProtocols:
				upgrade = s
			case s.Name() == "GET /agents/{class}/{name}" && a["http.response.status_code"].AsInt64() == http.StatusBadRequest:
				refused = s
			case s.Name() == "activate Counter":
				activation = s
			case s.Name() == "call Counter.increment" && a[telemetry.KeyTransport].AsString() == telemetry.TransportWebSocket:
				wsCall = s
			case s.Name() == "call Counter.increment" && a[telemetry.KeyTransport].AsString() == telemetry.TransportInProcess:
				localCall = s
			}
		}
		return upgrade != nil && refused != nil && activation != nil && wsCall != nil && localCall != nil
	})
	tests := []struct {
		name        string
		span        sdktrace.ReadOnlySpan
		trace       string
		parent      trace.SpanID
		link        trace.SpanID
		remoteTrace bool
	}{
		{"upgrade is in the request's trace", upgrade, traceID, mustSpanID(t, parentID), trace.SpanID{}, true},
		{"activation is under the upgrade", activation, traceID, upgrade.SpanContext().SpanID(), trace.SpanID{}, false},
		{"a WebSocket call links to the upgrade", wsCall, "", trace.SpanID{}, upgrade.SpanContext().SpanID(), false},
		{"an in-process call is under its caller", localCall, caller.SpanContext().TraceID().String(), caller.SpanContext().SpanID(), trace.SpanID{}, false},
	}
	if st := refused.Status(); st.Code == codes.Error {
		t.Errorf("a 400's span is marked as an error (%v); only a 5xx is, for a server", st)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.trace != "" && tt.span.SpanContext().TraceID().String() != tt.trace {
				t.Errorf("trace %s, want %s", tt.span.SpanContext().TraceID(), tt.trace)
			}
			if tt.parent.IsValid() && tt.span.Parent().SpanID() != tt.parent {
				t.Errorf("parent %s, want %s", tt.span.Parent().SpanID(), tt.parent)
			}
			if tt.remoteTrace != tt.span.Parent().IsRemote() {
				t.Errorf("parent remote = %v", tt.span.Parent().IsRemote())
			}
			if tt.link.IsValid() && (len(tt.span.Links()) != 1 || tt.span.Links()[0].SpanContext.SpanID() != tt.link) {
				t.Errorf("links %v, want %s", tt.span.Links(), tt.link)
			}
		})
	}

	ps := telemetrytest.Collect(t, reader)
	counter := telemetry.KeyAgentClass.String("Counter")
	for _, m := range []struct {
		name string
		got  int64
	}{
		{telemetry.MetricWSConnections, telemetrytest.Total(ps, telemetry.MetricWSConnections, counter)},
		{telemetry.MetricActivations, telemetrytest.Total(ps, telemetry.MetricActivations, counter)},
		{telemetry.MetricAgentsLive, telemetrytest.Total(ps, telemetry.MetricAgentsLive)},
		{telemetry.MetricRPCDuration + " " + telemetry.TransportWebSocket,
			telemetrytest.Total(ps, telemetry.MetricRPCDuration, telemetry.KeyTransport.String(telemetry.TransportWebSocket))},
		{telemetry.MetricRPCDuration + " " + telemetry.TransportInProcess,
			telemetrytest.Total(ps, telemetry.MetricRPCDuration, telemetry.KeyTransport.String(telemetry.TransportInProcess))},
	} {
		if m.got != 1 {
			t.Errorf("%s = %d, want 1", m.name, m.got)
		}
	}
}

func mustSpanID(t *testing.T, s string) trace.SpanID {
	id, err := trace.SpanIDFromHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
