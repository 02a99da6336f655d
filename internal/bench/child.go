package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"agentflow/agent"
	"agentflow/workflow"
)

// EnvChild makes a process a bench child, the server a scenario measures
// from outside (agent-conns), configured by the JSON in its value. A
// program that runs bench.Main must call RunChild when IsChild reports true,
// before anything else, as cmd/agentflow does.
const EnvChild = "AGENTFLOW_BENCH_CHILD"

// childConfig is what a child runs with.
type childConfig struct {
	Backend     string `json:"backend"`
	DSN         string `json:"dsn"`
	Dir         string `json:"dir"`
	Synchronous string `json:"synchronous"`
	// Agents is how many sink agents to activate before serving.
	Agents int `json:"agents"`
	// Node, when set, makes the child a node of the cluster scenario
	// instead (see runClusterNode).
	Node *nodeChildConfig `json:"node,omitempty"`
}

// The line a child prints on its standard output once it serves.
const lineListening = "bench-child: listening"

// IsChild reports whether this process was started as a bench child.
func IsChild() bool {
	_, ok := os.LookupEnv(EnvChild)
	return ok
}

// RunChild runs this process as a bench child and ends it: it serves until
// its standard input is closed (the parent is done, or gone) or it gets
// SIGTERM or SIGINT, then stops and removes its store. It exits with status
// 2 for a bad configuration and 3 for a failure.
func RunChild() {
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(EnvChild)), &cc); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: decode %s: %v\n", EnvChild, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	run := runConnsServer
	if cc.Node != nil {
		run = func(ctx context.Context, cc childConfig, stdout, stderr io.Writer) error {
			return runClusterNode(ctx, *cc.Node, stdout, stderr)
		}
	}
	if err := run(ctx, cc, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %d: %v\n", os.Getpid(), err)
		os.Exit(3)
	}
	os.Exit(0)
}

// sink is agent-conns' class: OnMessage counts the messages it gets, so
// that the parent knows when every connection's message was handled.
type sink struct {
	agent.Agent[struct{}]
	messages *atomic.Int64 // the child's count, shared by its sinks
}

const sinkClass = "BenchSink" // URL form bench-sink

// OnMessage counts msg.
func (s *sink) OnMessage(_ context.Context, _ *agent.Conn, _ []byte) {
	s.messages.Add(1)
}

// Ready activates the agent.
func (s *sink) Ready(context.Context) (bool, error) { return true, nil }

func sinkName(i int) string { return "s" + strconv.Itoa(i) }

// childStats is what a child's /bench/stats reports.
type childStats struct {
	Messages   int64  `json:"messages"`    // messages sinks got
	Goroutines int    `json:"goroutines"`  // the steady count (see steadyGoroutines)
	HeapBytes  uint64 `json:"heap_bytes"`  // runtime.MemStats.HeapAlloc
	StackBytes uint64 `json:"stack_bytes"` // runtime.MemStats.StackInuse
	Live       int    `json:"live"`        // live agents
}

// runConnsServer serves sink agents over HTTP on a loopback port, after
// activating cc.Agents of them; /bench/stats reports its figures, after a
// GC with ?gc and after returning freed memory to the OS with ?release.
func runConnsServer(ctx context.Context, cc childConfig, stdout, stderr io.Writer) (err error) {
	cfg := DefaultConfig()
	cfg.Scenario, cfg.Backend, cfg.DSN, cfg.Dir, cfg.Synchronous = "agent-conns", cc.Backend, cc.DSN, cc.Dir, cc.Synchronous
	cfg.Log = stderr
	r := &runner{cfg: cfg, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	// The agents stay live for the whole run, connected or not, so that
	// their activation is in the baseline. The bench's clients never read,
	// so they would not answer pings: the runtime does not ping within the
	// run, and an idle connection is measured as a client's that answers
	// (a ping then holds a goroutine for a round trip every PingInterval).
	opts := agent.Options{IdleTimeout: time.Hour, PingInterval: time.Hour}
	var messages atomic.Int64 // messages sinks got
	rig, closeRig, err := r.openAgents(ctx, opts, func(rt *agent.Runtime, _ *workflow.Engine) error {
		return agent.Register[sink](rt, sinkClass, agent.ClassOptions{}, func(s *sink) { s.messages = &messages })
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeRig()) }()
	rt := rig.rt
	if err := activateSinks(ctx, rt, cc.Agents); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/agents/", rt.Handler(agent.HandlerOptions{}))
	mux.HandleFunc("GET /bench/stats", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		s := childStats{Messages: messages.Load(), Live: rt.Live()}
		if q.Has("gc") {
			runtime.GC()
			runtime.GC()
		}
		if q.Has("release") {
			debug.FreeOSMemory()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s.HeapBytes, s.StackBytes, s.Goroutines = m.HeapAlloc, m.StackInuse, steadyGoroutines()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("GET /bench/messages", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, messages.Load())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "%s %s\n", lineListening, ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	// Hijacked connections are the runtime's: closeRig's Stop closes them.
	return srv.Close()
}

// activateSinks makes one call on each of n sink agents, 16 at a time.
func activateSinks(ctx context.Context, rt *agent.Runtime, n int) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				if _, err := agent.Call0(ctx, rt, sinkName(i), (*sink).Ready); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("activate %s: %w", sinkName(i), err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(append(errs, ctx.Err())...)
}

// waitListening reads a child's standard output up to the line saying
// where it listens, and copies the rest to log.
func waitListening(out io.Reader, log io.Writer) (string, error) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if addr, ok := strings.CutPrefix(line, lineListening+" "); ok {
			go func() {
				for sc.Scan() {
					fmt.Fprintln(log, sc.Text())
				}
			}()
			return addr, nil
		}
		fmt.Fprintln(log, line)
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("the child ended before it listened")
}
