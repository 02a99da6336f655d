package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"agentflow/internal/crashtest"
)

// TestMain hands the process to the crashtest child when the recovery
// scenario starts this test binary as one, and to the bench child when
// agent-conns does.
func TestMain(m *testing.M) {
	if crashtest.IsChild() {
		crashtest.RunChild()
		return
	}
	if IsChild() {
		RunChild()
		return
	}
	os.Exit(m.Run())
}

func TestPercentile(t *testing.T) {
	ten := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	for _, tc := range []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"empty", nil, 50, 0},
		{"one value", []float64{7}, 99, 7},
		{"p50 of ten", ten, 50, 5},
		{"p90 of ten", ten, 90, 9},
		{"p99 of ten", ten, 99, 10},
		{"p100 of ten", ten, 100, 10},
		{"tiny p is the minimum", ten, 0.1, 1},
		{"p50 of two", []float64{2, 1}, 50, 1},
		{"p51 of two", []float64{2, 1}, 51, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]float64(nil), tc.xs...)
			if got := Percentile(tc.xs, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.xs, tc.p, got, tc.want)
			}
			for i := range before {
				if before[i] != tc.xs[i] {
					t.Fatalf("Percentile reordered its input: %v", tc.xs)
				}
			}
		})
	}
}

func TestRound(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 0}, {1234.56789, 1234.568}, {0.123456, 0.1235}, {0.000123456, 0.0001235}, {-2.00049, -2},
	} {
		if got := round(tc.in); got != tc.want {
			t.Errorf("round(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	rs := []Result{
		{Scenario: "steps", Backend: "sqlite", Name: "workflows_per_s", Value: 1234.5, Unit: "workflows/s"},
		{Scenario: "sleepers", Backend: "postgres", Name: "goroutines_per_instance", Value: 0, Unit: "goroutines"},
	}
	if err := WriteJSON(&buf, rs); err != nil {
		t.Fatal(err)
	}
	want := `{"scenario":"steps","backend":"sqlite","name":"workflows_per_s","value":1234.5,"unit":"workflows/s"}
{"scenario":"sleepers","backend":"postgres","name":"goroutines_per_instance","value":0,"unit":"goroutines"}
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, []Result{{Scenario: "timers", Backend: "sqlite", Name: "lateness_p99_ms", Value: 12.5, Unit: "ms"}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "SCENARIO") || strings.Join(strings.Fields(lines[1]), " ") != "timers sqlite lateness_p99_ms 12.5 ms" {
		t.Errorf("table:\n%s", buf.String())
	}
}

func TestMainRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // substrings of the error
	}{
		{[]string{"--backend", "mysql", "--scenario", "steps"}, []string{`"mysql"`, "sqlite", "postgres"}},
		{[]string{"--scenario", "nope"}, []string{`"nope"`, "steps", "sleepers", "timers", "recovery", "agent-rpc", "agent-activate", "schedules", "agent-workflows", "all"}},
		{[]string{"--scenario", "agent-workflows", "--workflows-per-agent", "0"}, []string{"--workflows-per-agent"}},
		{[]string{"--scenario", "agent-workflows", "--workflow-agents", "-1"}, []string{"--workflow-agents"}},
		{[]string{"--scenario", "agent-activate", "--agents", "0"}, []string{"--agents"}},
		{[]string{"--scenario", "think-turn", "--think-submissions", "0"}, []string{"--think-submissions"}},
		{[]string{"--scenario", "prompt-step", "--prompt-agents", "0"}, []string{"--prompt-agents"}},
		{[]string{"--scenario", "chat-turn", "--chat-turns", "0"}, []string{"--chat-turns"}},
		{[]string{"--scenario", "agent-activate", "--idle-timeout", "0s"}, []string{"--idle-timeout"}},
		{[]string{"--scenario", "agent-conns", "--conns", "0"}, []string{"--conns"}},
		{[]string{"--scenario", "agent-conns", "--message-bytes", "2000000"}, []string{"--message-bytes", "MaxMessageBytes"}},
		{[]string{}, []string{"--scenario is required"}},
		{[]string{"--scenario", "steps", "--synchronous", "OFF"}, []string{`"OFF"`, "FULL", "NORMAL"}},
		{[]string{"--scenario", "steps", "--workflows", "0"}, []string{"--workflows"}},
		{[]string{"--scenario", "steps", "extra"}, []string{`"extra"`}},
	} {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), tc.args, &out, &errOut)
		if err == nil {
			t.Errorf("Main(%q) succeeded", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Main(%q) = %q, want it to mention %s", tc.args, err, w)
			}
		}
		if out.Len() != 0 {
			t.Errorf("Main(%q) printed %q", tc.args, out.String())
		}
	}
}

// tiny returns a configuration small enough for unit tests.
func tiny(t *testing.T, backend, scenario string) Config {
	c := DefaultConfig()
	c.Backend, c.Scenario = backend, scenario
	c.Dir = t.TempDir()
	c.Workflows, c.Callers, c.Writers, c.RawDuration = 200, 8, 8, 100*time.Millisecond
	c.Instances, c.Creators = 500, 2
	c.Timers, c.Spread, c.Lead = 200, 300*time.Millisecond, 3*time.Second
	c.Burst = 200
	c.RecoveryInstances = 300
	c.Calls, c.WriteCalls = 200, 20
	c.Agents, c.IdleTimeout = 300, 50*time.Millisecond
	c.Schedules, c.ScheduleAgents = 200, 20
	c.WorkflowAgents, c.WorkflowsPerAgent = 5, 20
	c.ThinkSubmissions, c.ThinkAgents = 40, 4
	c.PromptWorkflows, c.PromptAgents = 20, 4
	c.ChatTurns = 20
	c.Conns, c.ConnAgents, c.MessageBytes = 200, 20, 64<<10
	c.ListInstances = 25_000
	c.Timeout = 2 * time.Minute
	return c
}

func values(t *testing.T, rs []Result) map[string]float64 {
	t.Helper()
	m := make(map[string]float64)
	for _, r := range rs {
		if r.Unit == "" {
			t.Errorf("metric %s has no unit", r.Name)
		}
		m[r.Name] = r.Value
	}
	return m
}

func TestScenariosSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine")
	}
	ctx := context.Background()
	t.Run("steps", func(t *testing.T) {
		rs, err := Run(ctx, tiny(t, "sqlite", "steps"))
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, rs)
		for _, name := range []string{"workflows_per_s", "step_p50_ms", "step_p99_ms", "raw_rows_per_s", "ratio_to_limit"} {
			if v[name] <= 0 {
				t.Errorf("%s = %v, want > 0", name, v[name])
			}
		}
		if v["step_p99_ms"] < v["step_p50_ms"] {
			t.Errorf("p99 %v < p50 %v", v["step_p99_ms"], v["step_p50_ms"])
		}
		for _, r := range rs {
			if r.Scenario != "steps" || r.Backend != "sqlite" {
				t.Errorf("result %+v is not labelled steps/sqlite", r)
			}
		}
	})
	t.Run("sleepers", func(t *testing.T) {
		rs, err := Run(ctx, tiny(t, "sqlite", "sleepers"))
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, rs)
		if g := v["goroutines_per_instance"]; g != 0 {
			t.Errorf("goroutines_per_instance = %v, want 0", g)
		}
		if _, ok := v["heap_bytes_per_instance"]; !ok {
			t.Error("no heap_bytes_per_instance")
		}
	})
	t.Run("timers", func(t *testing.T) {
		rs, err := Run(ctx, tiny(t, "sqlite", "timers"))
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, rs)
		if v["lateness_p50_ms"] < 0 || v["lateness_p99_ms"] < v["lateness_p50_ms"] {
			t.Errorf("lateness p50 %v p99 %v", v["lateness_p50_ms"], v["lateness_p99_ms"])
		}
	})
	t.Run("timer-burst", func(t *testing.T) {
		rs, err := Run(ctx, tiny(t, "sqlite", "timer-burst"))
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, rs)
		if v["lateness_p50_ms"] < 0 || v["lateness_p99_ms"] < v["lateness_p50_ms"] || v["lateness_max_ms"] < v["lateness_p99_ms"] {
			t.Errorf("lateness p50 %v p99 %v max %v", v["lateness_p50_ms"], v["lateness_p99_ms"], v["lateness_max_ms"])
		}
	})
	t.Run("recovery", func(t *testing.T) {
		rs, err := Run(ctx, tiny(t, "sqlite", "recovery"))
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, rs)
		if v["duplicate_steps"] != 0 || v["lost_instances"] != 0 || v["recovery_s"] <= 0 {
			t.Errorf("recovery figures %v", v)
		}
	})
}

func TestTimersLeadTooShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine")
	}
	c := tiny(t, "sqlite", "timers")
	c.Lead = time.Nanosecond
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "--lead") {
		t.Fatalf("err = %v, want one that says to raise --lead", err)
	}
}

func TestMainJSONPostgres(t *testing.T) {
	dsn := os.Getenv("AGENTFLOW_TEST_POSTGRES")
	if dsn == "" || testing.Short() {
		t.Skip("AGENTFLOW_TEST_POSTGRES is not set")
	}
	var out, errOut bytes.Buffer
	args := []string{"--backend", "postgres", "--dsn", dsn, "--scenario", "steps", "--json", "--quiet",
		"--workflows", "100", "--callers", "4", "--writers", "4", "--raw-duration", "100ms"}
	if err := Main(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("output:\n%s", out.String())
	}
	for _, l := range lines {
		var r Result
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r.Scenario != "steps" || r.Backend != "postgres" || r.Name == "" || r.Unit == "" {
			t.Errorf("line %q", l)
		}
	}
}

// checkAgentScenarios runs the agent scenarios at tiny sizes and checks
// that every figure is there and sane.
func checkAgentScenarios(t *testing.T, backend string, tweak func(*Config)) {
	ctx := context.Background()
	run := func(t *testing.T, scenario string) map[string]float64 {
		t.Helper()
		c := tiny(t, backend, scenario)
		if tweak != nil {
			tweak(&c)
		}
		rs, err := Run(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Scenario != scenario || r.Backend != backend {
				t.Errorf("result %+v is not labelled %s/%s", r, scenario, backend)
			}
		}
		return values(t, rs)
	}
	t.Run("agent-rpc", func(t *testing.T) {
		v := run(t, "agent-rpc")
		for _, kind := range []string{"inproc", "inproc_byname", "inproc_write", "ws", "ws_write"} {
			p50, p99 := v[kind+"_p50_us"], v[kind+"_p99_us"]
			if p50 <= 0 || p99 < p50 {
				t.Errorf("%s: p50 %v µs, p99 %v µs", kind, p50, p99)
			}
		}
	})
	t.Run("agent-activate", func(t *testing.T) {
		v := run(t, "agent-activate")
		if v["activate_p50_us"] <= 0 || v["activations_per_s"] <= 0 {
			t.Errorf("activation figures %v", v)
		}
		if g := v["goroutines_per_idle_agent"]; g != 0 {
			t.Errorf("goroutines_per_idle_agent = %v, want 0", g)
		}
		if _, ok := v["heap_bytes_per_idle_agent"]; !ok {
			t.Error("no heap_bytes_per_idle_agent")
		}
	})
	t.Run("schedules", func(t *testing.T) {
		v := run(t, "schedules")
		if v["fired"] != 200 || v["duplicate_runs"] != 0 || v["lost"] != 0 {
			t.Errorf("fired %v, duplicate_runs %v, lost %v; want 200, 0, 0", v["fired"], v["duplicate_runs"], v["lost"])
		}
		if v["lateness_p50_ms"] < 0 || v["lateness_p99_ms"] < v["lateness_p50_ms"] {
			t.Errorf("lateness p50 %v p99 %v", v["lateness_p50_ms"], v["lateness_p99_ms"])
		}
	})
	t.Run("agent-workflows", func(t *testing.T) {
		v := run(t, "agent-workflows")
		if v["lost"] != 0 || v["duplicate_callbacks"] != 0 {
			t.Errorf("lost %v, duplicate_callbacks %v; want 0, 0", v["lost"], v["duplicate_callbacks"])
		}
		if v["workflows_per_s"] <= 0 || v["callback_p50_ms"] <= 0 || v["callback_p99_ms"] < v["callback_p50_ms"] {
			t.Errorf("workflows_per_s %v, callback p50 %v p99 %v", v["workflows_per_s"], v["callback_p50_ms"], v["callback_p99_ms"])
		}
		if v["run_workflow_p50_ms"] <= 0 || v["start_s"] <= 0 {
			t.Errorf("run_workflow_p50_ms %v, start_s %v", v["run_workflow_p50_ms"], v["start_s"])
		}
	})
	t.Run("think-turn", func(t *testing.T) {
		v := run(t, "think-turn")
		if v["submit_to_done_p50_ms"] <= 0 || v["submit_to_done_p99_ms"] < v["submit_to_done_p50_ms"] || v["turns_per_s"] <= 0 {
			t.Errorf("think-turn figures %v", v)
		}
	})
	t.Run("prompt-step", func(t *testing.T) {
		v := run(t, "prompt-step")
		if v["prompt_p50_ms"] <= 0 || v["prompt_p99_ms"] < v["prompt_p50_ms"] || v["prompts_per_s"] <= 0 {
			t.Errorf("prompt-step figures %v", v)
		}
	})
	t.Run("chat-turn", func(t *testing.T) {
		v := run(t, "chat-turn")
		for _, path := range []string{"chat", "think"} {
			first, text, p50, p99 := v[path+"_first_part_p50_ms"], v[path+"_first_text_p50_ms"], v[path+"_turn_p50_ms"], v[path+"_turn_p99_ms"]
			if first <= 0 || text < first || p50 < text || p99 < p50 || v[path+"_first_part_p99_ms"] < first {
				t.Errorf("%s: first part %v ms, first text %v ms, turn p50 %v ms p99 %v ms", path, first, text, p50, p99)
			}
		}
	})
	t.Run("agent-conns", func(t *testing.T) {
		v := run(t, "agent-conns")
		// Each connection sent 64 KiB: a server that kept a buffer of
		// it would show that much per connection.
		if g := v["goroutines_per_conn"]; g < 0.95 || g > 1.05 {
			t.Errorf("goroutines_per_conn = %v, want 1", g)
		}
		if h := v["heap_bytes_per_conn"]; h <= 0 || h > 32<<10 {
			t.Errorf("heap_bytes_per_conn = %v, want some, under 32 KiB", h)
		}
		if g := v["goroutines_after_close"]; g > 2 {
			t.Errorf("goroutines_after_close = %v, want none but the store's", g)
		}
		if runtime.GOOS == "linux" && v["rss_bytes_baseline"] <= 0 {
			t.Errorf("no resident set figures: %v", v)
		}
	})
}

func TestAgentScenariosSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the engine and the agent runtime")
	}
	checkAgentScenarios(t, "sqlite", nil)
}

func TestAgentScenariosPostgres(t *testing.T) {
	dsn := os.Getenv("AGENTFLOW_TEST_POSTGRES")
	if dsn == "" || testing.Short() {
		t.Skip("AGENTFLOW_TEST_POSTGRES is not set")
	}
	checkAgentScenarios(t, "postgres", func(c *Config) { c.DSN = dsn })
}

func TestSchedulesLeadTooShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent runtime")
	}
	c := tiny(t, "sqlite", "schedules")
	c.Lead = time.Nanosecond
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "--lead") {
		t.Fatalf("err = %v, want one that says to raise --lead", err)
	}
}

func TestListScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store")
	}
	backends := []string{"sqlite"}
	dsn := os.Getenv("AGENTFLOW_TEST_POSTGRES")
	if dsn != "" {
		backends = append(backends, "postgres")
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			c := tiny(t, b, "list")
			if dsn != "" {
				c.DSN = dsn
			}
			rs, err := Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			v := values(t, rs)
			for _, name := range []string{"list_page_p50_ms", "list_filtered_page_p50_ms", "describe_p50_ms", "count_all_p50_ms", "fill_s"} {
				if v[name] <= 0 {
					t.Errorf("%s = %v, want > 0", name, v[name])
				}
			}
		})
	}
}
