package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetricsDashboard runs `agentflow dev`, asks its Think agent a
// question over HTTP, scrapes /metrics over HTTP, and checks that every
// query of the Grafana dashboard (docs/grafana/agentflow.json) names only
// metrics the server exports, and that the work done shows in them.
func TestMetricsDashboard(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, []string{"--db", filepath.Join(t.TempDir(), "dev.db"), "--grace", "200ms", "--addr", "127.0.0.1:0",
			"--flight-delay", "300ms", "--check-in-wait", "200ms"}, noEnv, &stdout, &stderr)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v\n%s", err, stderr.String())
		}
	}()
	base := ""
	for !strings.Contains(stdout.String(), "examples finished") {
		select {
		case err := <-done:
			t.Fatalf("dev ended: %v\n%s\n%s", err, stdout.String(), stderr.String())
		case <-ctx.Done():
			t.Fatalf("dev did not finish its examples:\n%s", stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if m := regexp.MustCompile(`metrics: (http://\S+)/metrics`).FindStringSubmatch(stdout.String()); m != nil {
		base = m[1]
	} else {
		t.Fatalf("dev printed no metrics address:\n%s", stdout.String())
	}

	// A Think turn with the scripted model, through the agents server.
	resp, err := http.Post(base+"/agents/assistant/metrics", "text/plain", strings.NewReader("What time is it in Asia/Tokyo?"))
	if err != nil {
		t.Fatal(err)
	}
	var sub struct{ SubmissionID string }
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ask: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	dash := dashboardQueries(t)
	var samples map[string]float64
	var missing []string
	for {
		samples = scrape(t, base+"/metrics")
		missing = missing[:0]
		for _, q := range dash {
			for _, name := range q.metrics {
				if !exported(samples, name) {
					missing = append(missing, q.panel+": "+name)
				}
			}
		}
		if len(missing) == 0 && samples[`agentflow_think_submissions_total{agentflow_agent_class="Assistant",agentflow_status="completed"}`] >= 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("metrics the dashboard queries are not exported: %v", missing)
		case <-time.After(100 * time.Millisecond):
		}
	}

	for _, q := range dash {
		if len(q.metrics) == 0 {
			t.Errorf("panel %q: query %q names no agentflow or gen_ai metric", q.panel, q.expr)
		}
	}
	tests := []struct {
		series string
		min    float64
	}{
		{`agentflow_workflow_steps_started_total{agentflow_workflow_name="Report"}`, 4},
		{`agentflow_workflow_steps_failed_total{agentflow_outcome="retrying",agentflow_workflow_name="Report"}`, 1},
		{`agentflow_workflow_instances{agentflow_status="complete"}`, 1},
		{`agentflow_agent_live`, 1}, // one series per node (agentflow_node)
		{`gen_ai_client_token_usage_sum{gen_ai_provider_name="scripted",gen_ai_request_model="",gen_ai_token_type="input"}`, 1},
		{`agentflow_store_commit_batch_size_count{agentflow_store_backend="sqlite"}`, 1},
	}
	for _, tt := range tests {
		got, ok := samples[tt.series]
		if !strings.Contains(tt.series, "{") { // a name alone: the sum over its series
			for series, v := range samples {
				if strings.HasPrefix(series, tt.series+"{") {
					got, ok = got+v, true
				}
			}
		}
		if !ok || got < tt.min {
			t.Errorf("%s = %v (exported %v), want at least %v", tt.series, got, ok, tt.min)
		}
	}
}

type dashQuery struct {
	panel, expr string
	metrics     []string
}

// dashboardQueries returns the dashboard's queries and the metric names
// each names: identifiers starting agentflow_ or gen_ai_ outside label
// matchers, grouping clauses and range selectors.
func dashboardQueries(t *testing.T) []dashQuery {
	t.Helper()
	b, err := os.ReadFile("../../docs/grafana/agentflow.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	strip := regexp.MustCompile(`\b(by|without)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]`)
	ident := regexp.MustCompile(`\b(agentflow|gen_ai)_[a-zA-Z0-9_]+`)
	var qs []dashQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, dashQuery{panel: p.Title, expr: tg.Expr, metrics: ident.FindAllString(strip.ReplaceAllString(tg.Expr, ""), -1)})
		}
	}
	if len(qs) < 20 {
		t.Fatalf("the dashboard has %d queries", len(qs))
	}
	return qs
}

// scrape returns the samples of a Prometheus text exposition, keyed by
// series as written (name and labels).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// exported reports whether some series of samples has this metric name.
func exported(samples map[string]float64, name string) bool {
	for s := range samples {
		if s == name || strings.HasPrefix(s, name+"{") {
			return true
		}
	}
	return false
}
