// Package telemetrytest reads what the OpenTelemetry SDK recorded, for the
// telemetry tests of the packages that record it.
package telemetrytest

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Attrs returns a span's attributes by key.
func Attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// Point is one data point of a metric.
type Point struct {
	Metric string
	Attrs  attribute.Set
	// Value is a counter's or a gauge's value, or a histogram's count.
	Value int64
	// Sum is a histogram's sum; zero for the others.
	Sum float64
}

// Collect returns every data point r holds now, of counters, gauges and
// histograms of int64 or float64.
func Collect(t testing.TB, r sdkmetric.Reader) []Point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatalf("collecting metrics: %v", err)
	}
	var ps []Point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					ps = append(ps, Point{Metric: m.Name, Attrs: p.Attributes, Value: p.Value})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					ps = append(ps, Point{Metric: m.Name, Attrs: p.Attributes, Value: p.Value})
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					ps = append(ps, Point{Metric: m.Name, Attrs: p.Attributes, Value: int64(p.Count), Sum: float64(p.Sum)})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					ps = append(ps, Point{Metric: m.Name, Attrs: p.Attributes, Value: int64(p.Count), Sum: p.Sum})
				}
			default:
				t.Fatalf("metric %s: data of type %T, which Collect does not read", m.Name, m.Data)
			}
		}
	}
	return ps
}

// Match returns the points of metric whose attributes include every one of
// attrs.
func Match(ps []Point, metric string, attrs ...attribute.KeyValue) []Point {
	var out []Point
next:
	for _, p := range ps {
		if p.Metric != metric {
			continue
		}
		for _, kv := range attrs {
			if v, ok := p.Attrs.Value(kv.Key); !ok || v != kv.Value {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// Total is the sum of the Values of Match(ps, metric, attrs...).
func Total(ps []Point, metric string, attrs ...attribute.KeyValue) int64 {
	var n int64
	for _, p := range Match(ps, metric, attrs...) {
		n += p.Value
	}
	return n
}

// Find returns the point of metric whose attributes are exactly attrs.
func Find(ps []Point, metric string, attrs ...attribute.KeyValue) (Point, bool) {
	set := attribute.NewSet(attrs...)
	for _, p := range ps {
		if p.Metric == metric && p.Attrs.Equals(&set) {
			return p, true
		}
	}
	return Point{}, false
}
