package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpCollector receives OTLP/HTTP trace exports (protobuf, as the
// exporter sends them) and keeps the spans' names and services.
type otlpCollector struct {
	mu       sync.Mutex
	spans    map[string]int
	services map[string]bool
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces, application/x-protobuf", http.StatusBadRequest)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				c.services[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans[s.Name]++
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// TestDevExportsTraces runs dev with OTEL_EXPORTER_OTLP_ENDPOINT naming a
// collector on loopback and checks that the examples' spans reach it,
// flushed before dev exits.
func TestDevExportsTraces(t *testing.T) {
	t.Parallel()
	col := &otlpCollector{spans: map[string]int{}, services: map[string]bool{}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	env := map[string]string{envOTLPEndpoint: srv.URL, envOTelServiceName: "dev-under-test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := runDev(ctx, []string{"--once", "--db", filepath.Join(t.TempDir(), "dev.db"), "--grace", "200ms", "--addr", "127.0.0.1:0",
		"--flight-delay", "300ms", "--check-in-wait", "200ms"}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("dev: %v\nstderr:\n%s", err, &stderr)
	}
	if want := "traces: sent to " + srv.URL + "/v1/traces"; !strings.Contains(stdout.String(), want) {
		t.Errorf("dev did not say %q:\n%s", want, &stdout)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	// The workflows', the agents' and the Think turns' spans, from both
	// engines (the email service's too) and the runtime.
	for _, name := range []string{"create_workflow Signup", "run_workflow Signup", "step fetch", "step send",
		"POST /agents/{class}/{name}", "call MyAgent.startWorkflow", "invoke_agent Assistant", "chat", "execute_tool get_time", "outbox deliver"} {
		if col.spans[name] == 0 {
			t.Errorf("no %q span reached the collector; got %v", name, col.spans)
		}
	}
	if !col.services["dev-under-test"] {
		t.Errorf("the spans' service.name is not OTEL_SERVICE_NAME's: %v", col.services)
	}
}

func TestDevRefusesABadOTLPEndpoint(t *testing.T) {
	t.Parallel()
	env := map[string]string{envOTLPTracesEndpoint: "localhost:4318"}
	var stdout, stderr bytes.Buffer
	err := runDev(context.Background(), []string{"--once", "--db", filepath.Join(t.TempDir(), "dev.db"), "--addr", ""},
		func(k string) string { return env[k] }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), envOTLPTracesEndpoint) || !strings.Contains(err.Error(), "http://") {
		t.Errorf("dev with %s=localhost:4318: %v; want an error naming the variable and the rule", envOTLPTracesEndpoint, err)
	}
}
