package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// StoreMetrics are a store writer's instruments: the size and latency of
// each group commit and the writes that failed. A nil *StoreMetrics is off.
type StoreMetrics struct {
	batch    metric.Int64Histogram
	duration metric.Float64Histogram
	errors   metric.Int64Counter
	attrs    metric.MeasurementOption
}

// NewStoreMetrics returns the instruments of mp for a store of backend
// ("sqlite", "postgres"), nil when mp is nil.
func NewStoreMetrics(mp metric.MeterProvider, backend string) (*StoreMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	m := mp.Meter(ScopeName)
	s := &StoreMetrics{attrs: metric.WithAttributeSet(attribute.NewSet(attribute.String("agentflow.store.backend", backend)))}
	var err error
	if s.batch, err = m.Int64Histogram(MetricCommitBatch, metric.WithUnit("{write}"),
		metric.WithDescription("Writes committed together in one group commit."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if s.duration, err = m.Float64Histogram(MetricCommitDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to run and commit one group of writes."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if s.errors, err = m.Int64Counter(MetricWriteErrors, metric.WithUnit("{write}"),
		metric.WithDescription("Store writes that failed (a failed commit fails its whole group).")); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	s.errors.Add(context.Background(), 0, s.attrs) // exported from the start
	return s, nil
}

// Start returns the time a commit starts, zero when s is off.
func (s *StoreMetrics) Start() time.Time {
	if s == nil {
		return time.Time{}
	}
	return time.Now()
}

// Commit records a group of n writes that began at start.
func (s *StoreMetrics) Commit(start time.Time, n int) {
	if s == nil {
		return
	}
	ctx := context.Background()
	s.batch.Record(ctx, int64(n), s.attrs)
	s.duration.Record(ctx, time.Since(start).Seconds(), s.attrs)
}

// Failed counts a failed write.
func (s *StoreMetrics) Failed() {
	if s != nil {
		s.errors.Add(context.Background(), 1, s.attrs)
	}
}
