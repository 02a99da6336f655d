package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"agentflow/store"
)

// attrCache keeps the measurement options of attribute combinations seen
// before, so that recording a metric on the hot path allocates nothing.
type attrCache struct{ m sync.Map }

type attrKey struct{ k1, v1, k2, v2, k3, v3 string }

// get returns the option for up to three attributes.
func (c *attrCache) get(kvs ...attribute.KeyValue) metric.MeasurementOption {
	var k attrKey
	for i, kv := range kvs {
		switch i {
		case 0:
			k.k1, k.v1 = string(kv.Key), kv.Value.Emit()
		case 1:
			k.k2, k.v2 = string(kv.Key), kv.Value.Emit()
		case 2:
			k.k3, k.v3 = string(kv.Key), kv.Value.Emit()
		default:
			return metric.WithAttributes(kvs...)
		}
	}
	if o, ok := c.m.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	c.m.Store(k, o)
	return o
}

// Segment describes the execution segment that starts: an instance run from
// its claim to its suspension or finish.
type Segment struct {
	Workflow, InstanceID string
	Fence                int64
	Restarts             int
	// Traceparent is the creating span's context stored with the instance.
	Traceparent string
}

// StartSegment starts the span of an execution segment and counts it. The
// span is a child of the span that created the instance (stored with it),
// so one trace holds every segment of a run, across suspensions, crashes
// and processes, and each segment links to it; without one it is a root.
func (t *T) StartSegment(ctx context.Context, s Segment) (context.Context, trace.Span) {
	if t.Metrics() {
		t.segments.Add(ctx, 1, t.attrs.get(KeyWorkflow.String(s.Workflow)))
	}
	if !t.Tracing() {
		return ctx, nil
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(KeyWorkflow.String(s.Workflow), KeyInstance.String(s.InstanceID),
			KeySegment.Int64(s.Fence), KeyRestarts.Int(s.Restarts)),
	}
	ctx, opts = childOfCreator(ctx, s.Traceparent, opts)
	return t.tracer.Start(ctx, "run_workflow "+s.Workflow, opts...)
}

// StepAttempt describes one attempt of a Do.
type StepAttempt struct {
	Workflow, InstanceID, Step string
	Occurrence, Attempt        int
}

// StartStep counts a step attempt and starts its span, a child of the
// segment's.
func (t *T) StartStep(ctx context.Context, a StepAttempt) (context.Context, trace.Span) {
	if t.Metrics() {
		t.stepsStarted.Add(ctx, 1, t.attrs.get(KeyWorkflow.String(a.Workflow)))
	}
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "step "+a.Step, trace.WithAttributes(
		KeyWorkflow.String(a.Workflow), KeyInstance.String(a.InstanceID), KeyStep.String(a.Step),
		KeyOccurrence.Int(a.Occurrence), KeyAttempt.Int(a.Attempt)))
}

// EndStep records a step attempt's outcome (OutcomeSucceeded,
// OutcomeRetrying or OutcomeFailed) and duration, and ends its span (nil
// when tracing is off).
func (t *T) EndStep(ctx context.Context, span trace.Span, workflow, outcome string, err error, errName string, d time.Duration) {
	if t.Metrics() {
		wf := KeyWorkflow.String(workflow)
		if outcome == OutcomeSucceeded {
			t.stepsSucceeded.Add(ctx, 1, t.attrs.get(wf))
		} else {
			t.stepsFailed.Add(ctx, 1, t.attrs.get(wf, KeyOutcome.String(outcome)))
		}
		t.stepDuration.Record(ctx, d.Seconds(), t.attrs.get(wf, KeyOutcome.String(outcome)))
	}
	if span != nil {
		span.SetAttributes(KeyOutcome.String(outcome))
		End(span, err, errName)
	}
}

// EndSegment ends a segment's span (nil when tracing is off) with how it
// ended: "suspended", "abandoned", or the instance's final status.
func EndSegment(span trace.Span, outcome string, err error, errName string) {
	if span == nil {
		return
	}
	span.SetAttributes(KeyOutcome.String(outcome))
	End(span, err, errName)
}

// TimerFired records how late a timer of kind ("sleep", "retry") was acted
// on, and adds an event to the segment's span.
func (t *T) TimerFired(ctx context.Context, kind string, late time.Duration) {
	if t.Metrics() {
		t.timerLateness.Record(ctx, late.Seconds(), t.attrs.get(KeyTimer.String(kind)))
	}
	if t.Tracing() {
		trace.SpanFromContext(ctx).AddEvent("timer fired", trace.WithAttributes(
			KeyTimer.String(kind), attribute.Float64("agentflow.timer.lateness_s", late.Seconds())))
	}
}

// Event adds an event to ctx's span when tracing is on.
func (t *T) Event(ctx context.Context, name string, kvs ...attribute.KeyValue) {
	if t.Tracing() {
		trace.SpanFromContext(ctx).AddEvent(name, trace.WithAttributes(kvs...))
	}
}

// Gauge is one observation of an observable gauge.
type Gauge struct {
	Attrs []attribute.KeyValue
	Value int64
}

// ObserveGauge registers an observable gauge whose values come from fn,
// called at most once every interval (cached in between, so a scrape every
// few seconds costs one store query per interval). The returned function
// unregisters it. With metrics off it does nothing.
func (t *T) ObserveGauge(name, unit, desc string, interval time.Duration, now func() time.Time,
	fn func(ctx context.Context) ([]Gauge, error)) (unregister func(), err error) {
	if !t.Metrics() {
		return func() {}, nil
	}
	g, err := t.meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	if err != nil {
		return nil, err
	}
	var (
		mu     sync.Mutex
		at     time.Time
		cached []Gauge
	)
	reg, err := t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		mu.Lock()
		defer mu.Unlock()
		if n := now(); at.IsZero() || n.Sub(at) >= interval {
			vs, err := fn(ctx)
			if err != nil {
				return err
			}
			cached, at = vs, n
		}
		for _, v := range cached {
			o.ObserveInt64(g, v.Value, metric.WithAttributes(v.Attrs...))
		}
		return nil
	}, g)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// ObserveInstances registers the gauge of workflow instances by status
// (agentflow.workflow.instances), from count (a store's CountInstances over
// every instance) called at most every interval.
func (t *T) ObserveInstances(interval time.Duration, now func() time.Time,
	count func(ctx context.Context) (map[string]int, error)) (unregister func(), err error) {
	return t.ObserveGauge(MetricInstances, "{instance}", "Workflow instances in the store, by status (all services).",
		interval, now, func(ctx context.Context) ([]Gauge, error) {
			counts, err := count(ctx)
			if err != nil {
				return nil, err
			}
			gs := make([]Gauge, 0, len(counts))
			for st, n := range counts {
				gs = append(gs, Gauge{Attrs: []attribute.KeyValue{KeyStatus.String(st)}, Value: int64(n)})
			}
			return gs, nil
		})
}

// CountByStatus counts every instance in st by status, for
// ObserveInstances; CountInstances reads the whole table (about 100-400 ms
// per million rows), hence the interval.
func CountByStatus(ctx context.Context, st store.InspectStore) (map[string]int, error) {
	counts, err := st.CountInstances(ctx, store.InstanceFilter{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(counts))
	for s, n := range counts {
		out[string(s)] = n
	}
	return out, nil
}
