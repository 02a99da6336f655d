package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child is a running child process.
//
// It is not internal/childproc's Child, which the agent and think crash
// tests share: that one lives inside a test (a testing.TB, the test binary
// run with -test.run, t.Fatal on failure), where this one also runs in the
// agentflow command (bench --scenario recovery), and it follows the child
// as Run needs: status lines beyond "ready" (started, the kill point),
// start without waiting, SIGTERM to stop, the exit status to tell a kill
// from a crash, and a bounded tail of the output.
type Child struct {
	Config ChildConfig

	cmd     *exec.Cmd
	done    chan struct{}
	started chan struct{}
	state   *os.ProcessState
	waitErr error

	mu        sync.Mutex
	out       bytes.Buffer // the last outputLimit bytes of its output
	partial   []byte
	startedAt time.Time
	killing   string // the kill point the child reported, if any
	sawStart  bool
	sawRace   bool // the race detector reported a data race
}

const outputLimit = 64 << 10

// StartChild starts the current executable as a crashtest child with cfg.
// The executable must call RunChild when IsChild reports true. The child
// is killed if this process dies (on Linux).
func StartChild(cfg ChildConfig) (*Child, error) {
	cfg.defaults()
	if err := cfg.Target.validate(); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("crashtest: find own executable: %w", err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	c := &Child{Config: cfg, done: make(chan struct{}), started: make(chan struct{})}
	c.cmd = exec.Command(exe)
	c.cmd.Env = append(os.Environ(), EnvChild+"="+string(b))
	c.cmd.Stdout = (*childOutput)(c)
	c.cmd.Stderr = (*childOutput)(c)
	setParentDeathSignal(c.cmd)
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("crashtest: start child: %w", err)
	}
	go func() {
		// Wait reaps the child at once, so that a dead child is not a
		// zombie that still looks alive to the engines' dead-process check.
		c.waitErr = c.cmd.Wait()
		c.state = c.cmd.ProcessState
		close(c.done)
	}()
	return c, nil
}

// childOutput collects a child's output and watches for its status lines.
type childOutput Child

func (w *childOutput) Write(p []byte) (int, error) {
	c := (*Child)(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.Write(p)
	if c.out.Len() > outputLimit {
		b := c.out.Bytes()[c.out.Len()-outputLimit/2:]
		c.out = *bytes.NewBuffer(append([]byte("…\n"), b...))
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := string(c.partial[:i])
		c.partial = c.partial[i+1:]
		switch {
		case strings.HasPrefix(line, lineStarted) && !c.sawStart:
			c.sawStart, c.startedAt = true, time.Now()
			close(c.started)
		case strings.HasPrefix(line, lineKilling):
			c.killing = strings.TrimSpace(strings.TrimPrefix(line, lineKilling))
		case strings.Contains(line, "WARNING: DATA RACE"):
			c.sawRace = true
		}
	}
	return len(p), nil
}

// PID returns the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Started is closed once the child's engine has started.
func (c *Child) Started() <-chan struct{} { return c.started }

// Output returns the end of the child's combined output.
func (c *Child) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// RaceErr returns an error with the child's output if the race detector
// (in a binary built with -race) reported a data race in it.
func (c *Child) RaceErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sawRace {
		return nil
	}
	return fmt.Errorf("data race in child %d (%s):\n%s", c.cmd.Process.Pid, c.Config.NodeID, c.out.String())
}

// KilledItself returns where the child said it killed itself, if it did.
func (c *Child) KilledItself() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.killing
}

// Killed reports whether the child has exited because of SIGKILL.
func (c *Child) Killed() bool {
	select {
	case <-c.done:
	default:
		return false
	}
	ws, ok := c.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// ExitErr describes how an exited child ended, or is nil if it exited 0.
func (c *Child) ExitErr() error {
	select {
	case <-c.done:
	default:
		return errors.New("still running")
	}
	if c.waitErr == nil {
		return nil
	}
	return fmt.Errorf("child %d (%s): %v", c.PID(), c.Config.NodeID, c.waitErr)
}

// Kill kills the child with SIGKILL and waits until it is reaped.
func (c *Child) Kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// Stop asks the child to stop with SIGTERM, kills it if it has not exited
// within timeout, and waits until it is reaped. It returns the child's exit
// error, if it did not exit cleanly.
func (c *Child) Stop(timeout time.Duration) error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.ExitErr()
	case <-time.After(timeout):
		c.Kill()
		return fmt.Errorf("child %d did not stop within %s after SIGTERM", c.PID(), timeout)
	}
}

// KillMode is how Run kills its children.
type KillMode string

// Kill modes: the child kills itself at a kill point (see KillPoint), the
// parent kills it at a random time, or each life picks one of those four.
const (
	ModeNone   KillMode = "none"
	ModeBefore KillMode = KillMode(KillBeforeStep)
	ModeIn     KillMode = KillMode(KillInStep)
	ModeAfter  KillMode = KillMode(KillAfterStep)
	ModeSignal KillMode = "signal"
	ModeMixed  KillMode = "mixed"
)

// Scenario is a run of Run.
type Scenario struct {
	Target Target
	// Prefix of the instance ids; default "ct".
	Prefix string
	// Instances to create and finish.
	Instances int
	// Processes is how many children run at once; default 1.
	Processes int
	// Kill is how children are killed; Kills how many times in all. A
	// killed child is restarted at once, with the next kill armed until
	// Kills kills happened, then without.
	Kill  KillMode
	Kills int
	// KillAtMin and KillAtMax bound the pass through its kill point at
	// which a child kills itself; default Instances/8 to 3×Instances (an
	// instance passes each kill point 6 to 8 times).
	KillAtMin, KillAtMax int
	// SignalMin and SignalMax bound how long after its engine started the
	// parent kills a child in ModeSignal; default 20 ms to 300 ms.
	SignalMin, SignalMax time.Duration
	// Seed makes the kill points reproducible; 0 picks one (see Report.Seed).
	Seed int64

	// Child options (see ChildConfig).
	Lease, PollInterval time.Duration
	Sleep, RetryDelay   time.Duration
	MaxConcurrent       int
	LogLevel            string

	// Timeout bounds the whole run; default 2 minutes.
	Timeout time.Duration
	// Logf, if set, receives a line per event.
	Logf func(format string, args ...any)
}

func (s *Scenario) defaults() {
	if s.Prefix == "" {
		s.Prefix = "ct"
	}
	if s.Processes <= 0 {
		s.Processes = 1
	}
	if s.Kill == "" {
		s.Kill = ModeNone
	}
	if s.KillAtMin <= 0 {
		s.KillAtMin = max(1, s.Instances/8)
	}
	if s.KillAtMax < s.KillAtMin {
		s.KillAtMax = max(s.KillAtMin, 3*s.Instances)
	}
	if s.SignalMin <= 0 {
		s.SignalMin = 20 * time.Millisecond
	}
	if s.SignalMax < s.SignalMin {
		s.SignalMax = max(s.SignalMin, 300*time.Millisecond)
	}
	if s.Seed == 0 {
		s.Seed = time.Now().UnixNano() % 1_000_000_000
	}
	if s.Timeout <= 0 {
		s.Timeout = 2 * time.Minute
	}
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
}

// slot is one of the children running at once, across its lives.
type slot struct {
	idx    int
	life   int
	ch     *Child
	armed  bool      // this life is to be killed
	mode   KillMode  // how
	killAt time.Time // ModeSignal: when the parent kills it
}

// Run runs the scenario: it prepares the target, starts the children
// (each creating the instances that do not exist yet), kills and restarts
// them as the scenario says until every instance has finished, stops them,
// and checks the audit log. The report's Err says whether the durability
// contract held; Run's error is for the harness failing (a child exiting
// on its own, the timeout passing).
func Run(ctx context.Context, s Scenario) (*Report, error) {
	s.defaults()
	if err := Prepare(ctx, s.Target); err != nil {
		return nil, err
	}
	m, err := OpenMonitor(ctx, s.Target, s.Prefix)
	if err != nil {
		return nil, err
	}
	defer m.Close()

	rng := rand.New(rand.NewPCG(uint64(s.Seed), 0x5eed))
	s.Logf("crashtest: seed %d, %d instances, %d process(es), kill mode %s, %d kill(s)", s.Seed, s.Instances, s.Processes, s.Kill, s.Kills)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()

	kills, armed, lives := 0, 0, 0
	slots := make([]*slot, s.Processes)
	defer func() {
		for _, sl := range slots {
			if sl != nil && sl.ch != nil {
				sl.ch.Kill()
			}
		}
	}()
	start := func(sl *slot) error {
		sl.life++
		lives++
		cfg := ChildConfig{
			Target: s.Target, NodeID: fmt.Sprintf("%s-node%d-life%d", s.Prefix, sl.idx, sl.life), Prefix: s.Prefix,
			Create: s.Instances, Lease: s.Lease, PollInterval: s.PollInterval, MaxConcurrent: s.MaxConcurrent,
			Sleep: s.Sleep, RetryDelay: s.RetryDelay, LogLevel: s.LogLevel, Seed: rng.Int64(),
		}
		sl.armed, sl.mode, sl.killAt = false, ModeNone, time.Time{}
		if s.Kill != ModeNone && kills+armed < s.Kills {
			sl.armed, sl.mode = true, s.Kill
			armed++
			if sl.mode == ModeMixed {
				sl.mode = []KillMode{ModeBefore, ModeIn, ModeAfter, ModeSignal}[rng.IntN(4)]
			}
			if sl.mode != ModeSignal {
				cfg.Kill = KillPoint(sl.mode)
				cfg.KillAt = s.KillAtMin + rng.IntN(s.KillAtMax-s.KillAtMin+1)
			}
		}
		ch, err := StartChild(cfg)
		if err != nil {
			return err
		}
		sl.ch = ch
		what := "unarmed"
		if sl.armed {
			what = "to be killed: " + string(sl.mode)
			if cfg.KillAt > 0 {
				what += fmt.Sprintf(" at pass %d", cfg.KillAt)
			}
		}
		s.Logf("crashtest: +%.2fs started %s pid %d (%s)", time.Since(begin).Seconds(), cfg.NodeID, ch.PID(), what)
		return nil
	}
	for i := range slots {
		slots[i] = &slot{idx: i}
		if err := start(slots[i]); err != nil {
			return nil, err
		}
	}

	fail := func(err error) (*Report, error) {
		for _, sl := range slots {
			if sl.ch != nil {
				sl.ch.Kill()
			}
		}
		r, cerr := m.Check(context.WithoutCancel(ctx), s.Instances)
		if r != nil {
			r.Seed, r.Kills, r.Lives, r.Duration = s.Seed, kills, lives, time.Since(begin).Seconds()
		}
		return r, errors.Join(err, cerr)
	}

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p, _ := m.Progress(context.WithoutCancel(ctx))
			var outs strings.Builder
			for _, sl := range slots {
				fmt.Fprintf(&outs, "\n--- output of %s (pid %d):\n%s", sl.ch.Config.NodeID, sl.ch.PID(), tail(sl.ch.Output(), 4096))
			}
			return fail(fmt.Errorf("crashtest: seed %d: %d of %d instances finished within %s (%d kills): %w%s%s", s.Seed, p.Finished, s.Instances, s.Timeout, kills, ctx.Err(),
				m.Stuck(context.WithoutCancel(ctx)), outs.String()))
		case <-tick.C:
		}
		for _, sl := range slots {
			ch := sl.ch
			select {
			case <-ch.Done():
				if err := ch.RaceErr(); err != nil {
					return fail(fmt.Errorf("crashtest: seed %d: %w", s.Seed, err))
				}
				if !ch.Killed() {
					return fail(fmt.Errorf("crashtest: seed %d: child %s exited on its own: %v\n%s", s.Seed, ch.Config.NodeID, ch.ExitErr(), ch.Output()))
				}
				kills++
				if sl.armed {
					armed--
				}
				where := ch.KilledItself()
				if where == "" {
					where = "by the parent"
				}
				s.Logf("crashtest: +%.2fs %s killed %s", time.Since(begin).Seconds(), ch.Config.NodeID, where)
				if err := start(sl); err != nil {
					return fail(err)
				}
				continue
			default:
			}
			if sl.armed && sl.mode == ModeSignal {
				select {
				case <-ch.Started():
					if sl.killAt.IsZero() {
						ch.mu.Lock()
						at := ch.startedAt
						ch.mu.Unlock()
						sl.killAt = at.Add(s.SignalMin + time.Duration(rng.Int64N(int64(s.SignalMax-s.SignalMin)+1)))
					}
					if !time.Now().Before(sl.killAt) {
						ch.Kill()
					}
				default:
				}
			}
		}
		p, err := m.Progress(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return fail(fmt.Errorf("crashtest: progress: %w", err))
		}
		if p.Created < s.Instances || p.Finished < s.Instances {
			continue
		}
		s.Logf("crashtest: +%.2fs all %d instances finished after %d kill(s); stopping", time.Since(begin).Seconds(), s.Instances, kills)
		var stopErrs []error
		for _, sl := range slots {
			if err := sl.ch.Stop(15 * time.Second); err != nil && !sl.ch.Killed() {
				stopErrs = append(stopErrs, fmt.Errorf("%w\n%s", err, sl.ch.Output()))
			}
			if err := sl.ch.RaceErr(); err != nil {
				stopErrs = append(stopErrs, err)
			}
		}
		r, err := m.Check(ctx, s.Instances)
		if err != nil {
			return nil, err
		}
		r.Seed, r.Kills, r.Lives, r.Duration = s.Seed, kills, lives, time.Since(begin).Seconds()
		return r, errors.Join(stopErrs...)
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
