// Package promexport serves agentflow's OpenTelemetry metrics in the
// Prometheus text format: a MeterProvider whose reader is the OpenTelemetry
// Prometheus exporter, registered in a registry of its own (never the
// prometheus default one), and the /metrics handler over that registry. It
// is a package of its own so that only the commands that serve /metrics
// link the Prometheus client.
package promexport

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Exporter is a MeterProvider and the handler that serves its metrics.
type Exporter struct {
	MeterProvider *sdkmetric.MeterProvider
	// Handler serves /metrics: the provider's instruments, and the Go
	// runtime's and the process's collectors.
	Handler http.Handler
}

// New returns an exporter with a registry of its own.
func New() (*Exporter, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	return &Exporter{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		Handler:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}

// Shutdown stops the provider.
func (e *Exporter) Shutdown(ctx context.Context) error { return e.MeterProvider.Shutdown(ctx) }
