// Package bench implements `agentflow bench`: scenarios that measure the
// workflow engine and the agent runtime on a real store and print one
// figure per metric, as a table or as JSON lines. BENCHMARKS.md at the
// repository root describes each scenario, what exactly each metric
// measures, and this machine's figures.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	otelmetric "go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Result is one measured figure. With --json each is printed as one line.
type Result struct {
	Scenario string  `json:"scenario"`
	Backend  string  `json:"backend"`
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
}

// Backends and scenarios, in the order `all` runs them.
var (
	backends  = []string{"sqlite", "postgres"}
	scenarios = []string{"steps", "sleepers", "timers", "timer-burst", "recovery", "agent-rpc", "agent-activate", "schedules", "agent-workflows", "think-turn", "prompt-step", "chat-turn", "agent-conns", "cross-service", "cluster", "list"}
)

// maxMessageBytes is the agent runtime's default MaxMessageBytes, which
// agent-conns' messages stay under so that each is handled.
const maxMessageBytes = 1 << 20

// DefaultPostgresDSN is used when neither --dsn nor the environment names one.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Config is everything a run needs; Main fills it from the flags.
type Config struct {
	Backend     string
	Scenario    string
	JSON        bool
	DSN         string
	Dir         string // SQLite directory; "" makes a temporary one, removed after
	Synchronous string // SQLite synchronous: FULL or NORMAL

	// MaxConcurrent is the engine's Options.MaxConcurrent; 0 keeps the engine default.
	MaxConcurrent int
	// ClaimAhead is the engine's Options.ClaimAhead; 0 keeps the engine
	// default, negative turns it off.
	ClaimAhead time.Duration

	// steps
	Workflows   int
	Callers     int
	Writers     int
	RawDuration time.Duration

	// sleepers
	Instances int
	Creators  int

	// timers
	Timers int
	Spread time.Duration
	Lead   time.Duration

	// timer-burst: instances started together, each Do → Sleep(1 s) → Do.
	Burst int

	// recovery
	RecoveryInstances int

	// agent-rpc: calls measured in process and over WebSocket (Calls
	// each), and calls that write the state (WriteCalls each).
	Calls      int
	WriteCalls int

	// agent-activate: distinct agents activated and evicted, and the
	// runtime's IdleTimeout. Callers is the number of activating goroutines.
	Agents      int
	IdleTimeout time.Duration

	// schedules: one-shot schedules spread over Spread starting Lead after
	// creation starts (as for timers), across ScheduleAgents agents, created
	// by Callers goroutines.
	Schedules      int
	ScheduleAgents int

	// agent-workflows: WorkflowAgents agents each start WorkflowsPerAgent
	// workflows through a binding, and hear of each one's completion.
	WorkflowAgents    int
	WorkflowsPerAgent int

	// think-turn: ThinkSubmissions turns of one tool round on ThinkAgents
	// Think agents, one turn at a time per agent.
	ThinkSubmissions int
	ThinkAgents      int

	// prompt-step: PromptWorkflows workflows of one think.Prompt each,
	// started by PromptAgents Think agents, one at a time per agent.
	PromptWorkflows int
	PromptAgents    int

	// chat-turn: ChatTurns turns over the chat protocol and as many over
	// cf_agent_think, alternately, from one WebSocket client.
	ChatTurns int

	// agent-conns: Conns idle WebSocket connections to a server in a child
	// process, spread over ConnAgents agents, each after sending one
	// message of MessageBytes.
	Conns        int
	ConnAgents   int
	MessageBytes int

	// cross-service: rounds of an agent starting a workflow of a service
	// run by another store handle and hearing of its completion.
	CrossServiceRounds int

	// NoWakes opens the stores with their wakes (store.Waker) off, so that
	// work made by another handle waits for a poll, as before wakes.
	NoWakes bool
	// Telemetry runs with OpenTelemetry SDK tracer and meter providers
	// (every span sampled and batched to an exporter that discards it,
	// metrics aggregated by a reader), to measure what telemetry costs.
	Telemetry bool

	// cluster: ClusterCalls round trips measured on each path (directly
	// and forwarded), for WebSocket RPC, HTTP and calls by name; Lease is
	// the nodes' workflow.Options.Lease (0: the engine's default, 10 s).
	ClusterCalls int
	Lease        time.Duration

	// list: instances in the table the operators' queries page through.
	ListInstances int

	// Timeout bounds each scenario.
	Timeout time.Duration

	// Log receives progress lines and the engine's warnings; nil discards them.
	Log io.Writer
}

// DefaultConfig returns the sizes.
func DefaultConfig() Config {
	return Config{
		Backend:           "sqlite",
		DSN:               defaultDSN(),
		Synchronous:       "FULL",
		Workflows:         10_000,
		Callers:           64,
		Writers:           64,
		RawDuration:       3 * time.Second,
		Instances:         100_000,
		Creators:          4,
		Timers:            10_000,
		Spread:            5 * time.Second,
		Lead:              3 * time.Second,
		Burst:             1_000,
		RecoveryInstances: 5_000,
		Calls:             20_000,
		WriteCalls:        1_000,
		Agents:            100_000,
		IdleTimeout:       time.Second,
		Schedules:         10_000,
		ScheduleAgents:    1_000,
		WorkflowAgents:    100,
		WorkflowsPerAgent: 100,
		ThinkSubmissions:  200,
		ThinkAgents:       20,
		PromptWorkflows:   200,
		PromptAgents:      20,
		ChatTurns:         200,
		Conns:             10_000,
		ConnAgents:        1_000,
		MessageBytes:      256 << 10,
		ClusterCalls:      2_000,
		ListInstances:     1_000_000,
		Timeout:           10 * time.Minute,

		CrossServiceRounds: 200,
	}
}

func defaultDSN() string {
	for _, k := range []string{"AGENTFLOW_BENCH_POSTGRES", "AGENTFLOW_TEST_POSTGRES"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return DefaultPostgresDSN
}

// Main runs `agentflow bench` with args (the flags after "bench").
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("agentflow bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: agentflow bench --backend %s --scenario %s|all [--json] [flags]\n\nflags:\n",
			strings.Join(backends, "|"), strings.Join(scenarios, "|"))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Backend, "backend", cfg.Backend, "store: "+strings.Join(backends, " or "))
	fs.StringVar(&cfg.Scenario, "scenario", "", "scenario to run: "+strings.Join(scenarios, ", ")+", or all (required)")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per line instead of a table")
	fs.StringVar(&cfg.DSN, "dsn", cfg.DSN, "PostgreSQL DSN (default from AGENTFLOW_BENCH_POSTGRES or AGENTFLOW_TEST_POSTGRES); each scenario uses a fresh schema, dropped after")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the SQLite file (default a temporary directory, removed after)")
	fs.StringVar(&cfg.Synchronous, "synchronous", cfg.Synchronous, "SQLite synchronous setting: FULL or NORMAL")
	fs.IntVar(&cfg.MaxConcurrent, "max-concurrent", 0, "engine Options.MaxConcurrent (0: the engine default)")
	fs.DurationVar(&cfg.ClaimAhead, "claim-ahead", 0, "engine Options.ClaimAhead (0: the engine default, 250ms; negative: off)")
	fs.IntVar(&cfg.Workflows, "workflows", cfg.Workflows, "steps: workflows to run")
	fs.IntVar(&cfg.Callers, "callers", cfg.Callers, "steps: concurrent callers of Create; agent-activate, schedules: concurrent callers of agents")
	fs.IntVar(&cfg.Writers, "writers", cfg.Writers, "steps: concurrent writers measuring the raw limit")
	fs.DurationVar(&cfg.RawDuration, "raw-duration", cfg.RawDuration, "steps: length of each raw-limit measurement")
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "sleepers: instances put to sleep")
	fs.IntVar(&cfg.Creators, "creators", cfg.Creators, "sleepers, timers: goroutines calling CreateBatch")
	fs.IntVar(&cfg.Timers, "timers", cfg.Timers, "timers: sleeping instances")
	fs.DurationVar(&cfg.Spread, "spread", cfg.Spread, "timers, schedules: the wake-up times are spread uniformly over this long")
	fs.DurationVar(&cfg.Lead, "lead", cfg.Lead, "timers, schedules: time from the start of creation to the first wake-up")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "timer-burst: instances started together, each Do → Sleep(1s) → Do")
	fs.IntVar(&cfg.RecoveryInstances, "recovery-instances", cfg.RecoveryInstances, "recovery: instances in flight at the kill")
	fs.IntVar(&cfg.Calls, "calls", cfg.Calls, "agent-rpc: calls measured in process and over WebSocket (each)")
	fs.IntVar(&cfg.WriteCalls, "write-calls", cfg.WriteCalls, "agent-rpc: state-writing calls measured in process and over WebSocket (each)")
	fs.IntVar(&cfg.Agents, "agents", cfg.Agents, "agent-activate: distinct agents activated, then evicted")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "agent-activate: the runtime's IdleTimeout")
	fs.IntVar(&cfg.Schedules, "schedules", cfg.Schedules, "schedules: one-shot schedules")
	fs.IntVar(&cfg.ScheduleAgents, "schedule-agents", cfg.ScheduleAgents, "schedules: agents the schedules are spread across")
	fs.IntVar(&cfg.WorkflowAgents, "workflow-agents", cfg.WorkflowAgents, "agent-workflows: agents starting workflows, concurrently")
	fs.IntVar(&cfg.WorkflowsPerAgent, "workflows-per-agent", cfg.WorkflowsPerAgent, "agent-workflows: workflows each agent starts, one after another")
	fs.IntVar(&cfg.ThinkSubmissions, "think-submissions", cfg.ThinkSubmissions, "think-turn: turns submitted (one tool round each)")
	fs.IntVar(&cfg.ThinkAgents, "think-agents", cfg.ThinkAgents, "think-turn: Think agents the turns are spread across, running concurrently")
	fs.IntVar(&cfg.PromptWorkflows, "prompt-workflows", cfg.PromptWorkflows, "prompt-step: workflows run, each doing one think.Prompt")
	fs.IntVar(&cfg.PromptAgents, "prompt-agents", cfg.PromptAgents, "prompt-step: Think agents starting the workflows, running concurrently")
	fs.IntVar(&cfg.ChatTurns, "chat-turns", cfg.ChatTurns, "chat-turn: turns over the chat protocol, and as many over cf_agent_think, alternately (after a warm-up)")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "agent-conns: idle WebSocket connections held open")
	fs.IntVar(&cfg.ConnAgents, "conn-agents", cfg.ConnAgents, "agent-conns: agents the connections are spread across")
	fs.IntVar(&cfg.MessageBytes, "message-bytes", cfg.MessageBytes, "agent-conns: size of the one message each connection sends (at most the runtime's MaxMessageBytes, 1 MiB)")
	fs.IntVar(&cfg.CrossServiceRounds, "cross-service-rounds", cfg.CrossServiceRounds, "cross-service: rounds, one at a time")
	fs.BoolVar(&cfg.NoWakes, "no-wakes", false, "open the stores with wakes off: other processes' work waits for a poll")
	fs.BoolVar(&cfg.Telemetry, "telemetry", false, "run with OpenTelemetry SDK tracer and meter providers (spans discarded, metrics aggregated) to measure their cost")
	fs.IntVar(&cfg.ClusterCalls, "cluster-calls", cfg.ClusterCalls, "cluster: round trips measured on each path, directly and through the other node")
	fs.DurationVar(&cfg.Lease, "lease", cfg.Lease, "cluster: the nodes' lease (workflow.Options.Lease; 0: the engine's default, 10s)")
	fs.IntVar(&cfg.ListInstances, "list-instances", cfg.ListInstances, "list: instances in the table the queries page through")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on a scenario after this long")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	quiet := fs.Bool("quiet", false, "do not print progress on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !*quiet {
		cfg.Log = stderr
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	run := []string{cfg.Scenario}
	if cfg.Scenario == "all" {
		run = scenarios
	}
	var (
		all  []Result
		errs []error
	)
	for _, sc := range run {
		c := cfg
		c.Scenario = sc
		rs, err := Run(ctx, c)
		if cfg.JSON {
			if werr := WriteJSON(stdout, rs); werr != nil {
				return werr
			}
		}
		all = append(all, rs...)
		if err != nil {
			err = fmt.Errorf("scenario %s on %s: %w", sc, cfg.Backend, err)
			if len(run) > 1 {
				fmt.Fprintf(stderr, "%v\n", err)
			}
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if !cfg.JSON && len(all) > 0 {
		if err := WriteTable(stdout, all); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validate() error {
	if !slices.Contains(backends, c.Backend) {
		return fmt.Errorf("unknown backend %q: must be one of %s", c.Backend, strings.Join(backends, ", "))
	}
	if c.Scenario == "" {
		return fmt.Errorf("--scenario is required: one of %s, or all", strings.Join(scenarios, ", "))
	}
	if c.Scenario != "all" && !slices.Contains(scenarios, c.Scenario) {
		return fmt.Errorf("unknown scenario %q: must be one of %s, or all", c.Scenario, strings.Join(scenarios, ", "))
	}
	switch strings.ToUpper(c.Synchronous) {
	case "FULL", "NORMAL":
		c.Synchronous = strings.ToUpper(c.Synchronous)
	default:
		return fmt.Errorf("unknown --synchronous %q: must be FULL or NORMAL", c.Synchronous)
	}
	for _, p := range []struct {
		name string
		v    int
	}{
		{"--workflows", c.Workflows}, {"--callers", c.Callers}, {"--writers", c.Writers},
		{"--instances", c.Instances}, {"--creators", c.Creators}, {"--timers", c.Timers}, {"--burst", c.Burst},
		{"--recovery-instances", c.RecoveryInstances}, {"--calls", c.Calls}, {"--write-calls", c.WriteCalls},
		{"--agents", c.Agents}, {"--schedules", c.Schedules}, {"--schedule-agents", c.ScheduleAgents},
		{"--workflow-agents", c.WorkflowAgents}, {"--workflows-per-agent", c.WorkflowsPerAgent},
		{"--think-submissions", c.ThinkSubmissions}, {"--think-agents", c.ThinkAgents},
		{"--prompt-workflows", c.PromptWorkflows}, {"--prompt-agents", c.PromptAgents},
		{"--chat-turns", c.ChatTurns},
		{"--cross-service-rounds", c.CrossServiceRounds},
		{"--conns", c.Conns}, {"--conn-agents", c.ConnAgents}, {"--message-bytes", c.MessageBytes},
		{"--cluster-calls", c.ClusterCalls}, {"--list-instances", c.ListInstances},
	} {
		if p.v <= 0 {
			return fmt.Errorf("%s must be positive, not %d", p.name, p.v)
		}
	}
	if c.MessageBytes > maxMessageBytes {
		return fmt.Errorf("--message-bytes must be at most the runtime's MaxMessageBytes, %d, not %d", maxMessageBytes, c.MessageBytes)
	}
	if c.Lease < 0 {
		return fmt.Errorf("--lease must not be negative, not %s", c.Lease)
	}
	if c.MaxConcurrent < 0 {
		return fmt.Errorf("--max-concurrent must not be negative, not %d", c.MaxConcurrent)
	}
	if c.RawDuration <= 0 || c.Spread <= 0 || c.Lead <= 0 || c.Timeout <= 0 || c.IdleTimeout <= 0 {
		return errors.New("--raw-duration, --spread, --lead, --idle-timeout and --timeout must be positive")
	}
	return nil
}

// Run runs one scenario (not "all") and returns its figures.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &runner{cfg: cfg, log: slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if cfg.Telemetry {
		stop := r.startTelemetry()
		defer stop()
	}
	var (
		rs  []Result
		err error
	)
	switch cfg.Scenario {
	case "steps":
		rs, err = r.steps(ctx)
	case "sleepers":
		rs, err = r.sleepers(ctx)
	case "timers":
		rs, err = r.timers(ctx)
	case "timer-burst":
		rs, err = r.timerBurst(ctx)
	case "recovery":
		rs, err = r.recovery(ctx)
	case "agent-rpc":
		rs, err = r.agentRPC(ctx)
	case "agent-activate":
		rs, err = r.agentActivate(ctx)
	case "schedules":
		rs, err = r.schedules(ctx)
	case "agent-workflows":
		rs, err = r.agentWorkflows(ctx)
	case "think-turn":
		rs, err = r.thinkTurn(ctx)
	case "prompt-step":
		rs, err = r.promptStep(ctx)
	case "chat-turn":
		rs, err = r.chatTurn(ctx)
	case "cross-service":
		rs, err = r.crossService(ctx)
	case "agent-conns":
		rs, err = r.agentConns(ctx)
	case "cluster":
		rs, err = r.cluster(ctx)
	case "list":
		rs, err = r.list(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q: must be one of %s", cfg.Scenario, strings.Join(scenarios, ", "))
	}
	for i := range rs {
		rs[i].Scenario, rs[i].Backend = cfg.Scenario, cfg.Backend
	}
	return rs, err
}

type runner struct {
	cfg Config
	log *slog.Logger // for the engine: warnings and worse
	// tp and mp are the providers with --telemetry, else nil.
	tp trace.TracerProvider
	mp otelmetric.MeterProvider
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "bench %s/%s: %s\n", r.cfg.Scenario, r.cfg.Backend, fmt.Sprintf(format, args...))
}

// metric builds a Result with the value rounded for printing.
func metric(name string, v float64, unit string) Result {
	return Result{Name: name, Value: round(v), Unit: unit}
}

// round keeps three decimals, or four significant digits below 1, which is
// more precision than any of these measurements has.
func round(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	if math.Abs(v) >= 1 {
		return math.Round(v*1000) / 1000
	}
	scale := math.Pow(10, 3-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*scale) / scale
}

// WriteJSON prints each result as one JSON object on its own line.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable prints the results as an aligned table.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tBACKEND\tMETRIC\tVALUE\tUNIT")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Backend, r.Name, formatValue(r.Value), r.Unit)
	}
	return tw.Flush()
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of xs by the
// nearest-rank method: the smallest value such that at least p% of the
// values are at or below it. It returns 0 for no values. xs is not changed.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// us converts a duration to fractional microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
