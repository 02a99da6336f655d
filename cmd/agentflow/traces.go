package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// The standard OpenTelemetry variables dev reads to export its traces.
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTelServiceName    = "OTEL_SERVICE_NAME"
)

// traceExport is where dev sends its spans: OTLP over HTTP to the
// collector OTEL_EXPORTER_OTLP_TRACES_ENDPOINT names as is, or
// OTEL_EXPORTER_OTLP_ENDPOINT names with /v1/traces added, as the
// OpenTelemetry specification says. With neither set, tracing is off (a
// nil provider). The exporter reads the other OTEL_EXPORTER_OTLP_*
// variables (headers, timeout, compression) from the environment itself.
type traceExport struct {
	Provider *sdktrace.TracerProvider // nil: off
	Endpoint string
}

func newTraceExport(ctx context.Context, getenv func(string) string) (*traceExport, error) {
	endpoint, from := getenv(envOTLPTracesEndpoint), envOTLPTracesEndpoint
	if endpoint == "" {
		if base := getenv(envOTLPEndpoint); base != "" {
			endpoint, from = strings.TrimSuffix(base, "/")+"/v1/traces", envOTLPEndpoint
		}
	}
	if endpoint == "" {
		return &traceExport{}, nil
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s=%q: want an http:// or https:// URL of an OTLP collector", from, getenv(from))
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("the OTLP trace exporter for %s: %w", endpoint, err)
	}
	service := getenv(envOTelServiceName)
	if service == "" {
		service = "agentflow-dev"
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	return &traceExport{Provider: tp, Endpoint: endpoint}, nil
}

// tracerProvider is the provider to hand to the engine and runtime: nil
// when tracing is off, which they read as off.
func (t *traceExport) tracerProvider() trace.TracerProvider {
	if t.Provider == nil {
		return nil
	}
	return t.Provider
}

// Shutdown flushes the spans not yet exported.
func (t *traceExport) Shutdown(ctx context.Context) error {
	if t.Provider == nil {
		return nil
	}
	return t.Provider.Shutdown(ctx)
}
