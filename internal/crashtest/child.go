package crashtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"agentflow/workflow"
)

// Lines the child prints on its standard output for the parent.
const (
	lineStarted = "crashtest-child: started"
	lineCreated = "crashtest-child: created"
	lineKilling = "crashtest-child: killing myself"
)

// RunChild runs this process as a crashtest child, configured by the
// environment variable EnvChild: it opens the store and the audit log,
// starts an engine running the crashtest workflow, creates the instances
// it was asked to, and runs until it is killed, kills itself at its kill
// point, or gets SIGTERM or SIGINT (then it stops the engine and exits 0).
// It never returns: it ends the process, with status 2 for a bad
// configuration and 3 for a failure.
func RunChild() {
	cfg, err := childConfigFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashtest child: %v\n", err)
		os.Exit(2)
	}
	if err := runChild(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "crashtest child %d: %v\n", os.Getpid(), err)
		os.Exit(3)
	}
	os.Exit(0)
}

// Params are an instance's params.
type Params struct {
	Index int `json:"index"`
}

type child struct {
	cfg   ChildConfig
	audit *auditDB
	pid   int
	log   *slog.Logger
	hits  atomic.Int64
	// returned holds the keys whose "returned" marker this process has
	// already recorded, so a replay does not write it again.
	returned sync.Map
}

func runChild(cfg ChildConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	level := slog.LevelWarn
	switch strings.ToLower(cfg.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "error":
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pid", os.Getpid())

	// Stopped before it started (SIGTERM while it waited, say, for another
	// process's migration): it did nothing, and exits cleanly.
	st, err := cfg.Target.openStore(ctx, cfg.MaxConns)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	audit, err := openAudit(ctx, cfg.Target, 4)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("open audit log: %w", err)
	}
	audit.startWriter()
	defer audit.close()

	c := &child{cfg: cfg, audit: audit, pid: os.Getpid(), log: log}
	e, err := workflow.NewEngine(workflow.Options{
		Store:         st,
		Logger:        log,
		NodeID:        cfg.NodeID,
		Lease:         cfg.Lease,
		PollInterval:  cfg.PollInterval,
		MaxConcurrent: cfg.MaxConcurrent,
		Hooks:         workflow.Hooks{BeforeStep: c.beforeStep, AfterStep: c.afterStep},
	})
	if err != nil {
		return err
	}
	if err := workflow.Register(e, Workflow, workflow.Func[Params, string](c.run)); err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("%s pid=%d node=%s\n", lineStarted, c.pid, e.NodeID())
	created, err := c.create(ctx, e)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("create instances: %w", err)
	}
	fmt.Printf("%s %d\n", lineCreated, created)

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.Stop(sctx)
}

// create makes sure instances 0 … Create-1 exist, in batches of 100; a
// batch whose first instance exists was created whole (batches are atomic)
// by an earlier life or by another child. It returns how many this call
// created.
func (c *child) create(ctx context.Context, e *workflow.Engine) (int, error) {
	const batchSize = 100
	created := 0
	for start := 0; start < c.cfg.Create; start += batchSize {
		if ctx.Err() != nil {
			return created, ctx.Err()
		}
		end := min(start+batchSize, c.cfg.Create)
		if _, err := e.Get(ctx, InstanceID(c.cfg.Prefix, start)); err == nil {
			continue
		} else if !errors.Is(err, workflow.ErrNotFound) {
			return created, err
		}
		batch := make([]workflow.CreateOptions, 0, end-start)
		for i := start; i < end; i++ {
			batch = append(batch, workflow.CreateOptions{ID: InstanceID(c.cfg.Prefix, i), Params: Params{Index: i}})
		}
		if _, err := e.CreateBatch(ctx, Workflow, batch); err != nil {
			if errors.Is(err, workflow.ErrDuplicateID) {
				continue
			}
			return created, err
		}
		created += len(batch)
	}
	return created, nil
}

var errFlaky = errors.New("flaky step: the first attempt always fails")

// run is the workflow.
func (c *child) run(ctx context.Context, ev workflow.Event[Params], step *workflow.Step) (string, error) {
	id := ev.InstanceID
	once := func(v string) func(workflow.Attempt) (string, bool) {
		return func(workflow.Attempt) (string, bool) { return v, true }
	}
	a, err := c.do(ctx, step, id, "a", 0, workflow.StepConfig{}, once("A:"+id))
	if err != nil {
		return "", err
	}
	var loops [2]string
	for i := range loops {
		if loops[i], err = c.do(ctx, step, id, "loop", i, workflow.StepConfig{}, once(fmt.Sprintf("L%d", i))); err != nil {
			return "", err
		}
	}
	if err := step.Sleep("nap", c.cfg.Sleep); err != nil {
		return "", err
	}
	flaky := workflow.StepConfig{Retries: &workflow.Retries{Limit: 3, Delay: c.cfg.RetryDelay, Backoff: workflow.BackoffConstant}}
	f, err := c.do(ctx, step, id, "flaky", 0, flaky, func(at workflow.Attempt) (string, bool) {
		return fmt.Sprintf("F%d", at.Number), at.Number > 1
	})
	if err != nil {
		return "", err
	}
	return c.do(ctx, step, id, "final", 0, workflow.StepConfig{}, once(strings.Join([]string{a, loops[0], loops[1], f}, ",")))
}

// do runs one audited Do step. body gives the step's value and whether the
// attempt succeeds.
func (c *child) do(ctx context.Context, step *workflow.Step, id, name string, occ int, cfg workflow.StepConfig,
	body func(workflow.Attempt) (string, bool)) (string, error) {
	v, err := workflow.DoWith(step, name, cfg, func(ctx context.Context, at workflow.Attempt) (string, error) {
		val, ok := body(at)
		c.mustRecord(ctx, logRow{Kind: kindExec, Instance: id, Step: name, Occurrence: occ, Key: at.IdempotencyKey, Attempt: at.Number, OK: ok})
		killAfterEffect := false
		if c.hit(KillInStep) {
			if !ok || c.cfg.Seed%2 == 0 {
				c.die(fmt.Sprintf("in step %s after recording its execution (attempt %d)", at.IdempotencyKey, at.Number))
			}
			killAfterEffect = true
		}
		if !ok {
			return "", errFlaky
		}
		applied, err := c.audit.applyEffect(ctx, at.IdempotencyKey, id, name, c.pid)
		if err != nil {
			c.fatal(err)
		}
		if !applied {
			c.mustRecord(ctx, logRow{Kind: kindDedup, Instance: id, Step: name, Occurrence: occ, Key: at.IdempotencyKey, Attempt: at.Number, OK: true})
		}
		if killAfterEffect {
			c.die(fmt.Sprintf("in step %s after applying its effect (attempt %d)", at.IdempotencyKey, at.Number))
		}
		return val, nil
	})
	if err != nil {
		return "", err
	}
	// Outside any step: recorded again on replay, so once per process
	// here and once overall in the table (the first one stays).
	key := idemKey(id, name, occ)
	if _, done := c.returned.Load(key); !done {
		c.mustRecord(ctx, logRow{Kind: kindReturned, Instance: id, Step: name, Occurrence: occ, Key: key, OK: true})
		c.returned.Store(key, true)
	}
	return v, nil
}

func (c *child) beforeStep(_ context.Context, ref workflow.StepRef) error {
	if c.hit(KillBeforeStep) {
		c.die(fmt.Sprintf("before step %s (%s, attempt %d)", idemKey(ref.InstanceID, ref.Name, ref.Occurrence), ref.Kind, ref.Attempt))
	}
	return nil
}

func (c *child) afterStep(ctx context.Context, ref workflow.StepRef) error {
	if c.hit(KillAfterStep) {
		key := idemKey(ref.InstanceID, ref.Name, ref.Occurrence)
		if ref.Kind == workflow.KindDo {
			c.mustRecord(ctx, logRow{Kind: kindCommitted, Instance: ref.InstanceID, Step: ref.Name, Occurrence: ref.Occurrence, Key: key, Attempt: ref.Attempt, OK: true})
		}
		c.die(fmt.Sprintf("after step %s (%s) committed, before it returned", key, ref.Kind))
	}
	return nil
}

// hit counts a pass through kill point p and reports whether this is the
// pass to die at.
func (c *child) hit(p KillPoint) bool {
	if c.cfg.Kill != p || c.cfg.KillAt <= 0 {
		return false
	}
	return c.hits.Add(1) == int64(c.cfg.KillAt)
}

// die kills the process with SIGKILL: no deferred function, no flush, no
// graceful anything.
func (c *child) die(where string) {
	fmt.Printf("%s %s\n", lineKilling, where)
	if p, err := os.FindProcess(c.pid); err == nil {
		_ = p.Kill() // SIGKILL on Unix
	}
	select {} // the signal is on its way
}

func (c *child) mustRecord(ctx context.Context, r logRow) {
	r.PID = c.pid
	if err := c.audit.record(ctx, r); err != nil {
		c.fatal(err)
	}
}

// fatal ends the process when the audit log cannot be written: a test that
// cannot record what happened must not go on.
func (c *child) fatal(err error) {
	fmt.Fprintf(os.Stderr, "crashtest child %d: audit log: %v\n", c.pid, err)
	os.Exit(3)
}
