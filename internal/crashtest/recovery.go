package crashtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// RecoveryOptions configure Recovery.
type RecoveryOptions struct {
	// Target is where to run. An empty SQLitePath runs in a fresh
	// temporary directory; an empty PostgreSQL Schema in a fresh schema.
	// Either is removed afterwards.
	Target Target
	// Instances to have in flight at the kill; default 5,000.
	Instances int
	// KillAfter is how long after the last instance was created the child
	// is killed; default 100 ms.
	KillAfter time.Duration
	// Sleep and RetryDelay are the workflow's (see ChildConfig); default
	// 200 ms and 50 ms.
	Sleep, RetryDelay time.Duration
	// Lease is the engines' lease; zero takes the engine's default. The
	// restarted process takes the dead one's instances over at once anyway,
	// because it sees that process is gone from this host.
	Lease time.Duration
	// Timeout bounds the recovery (restart to all complete); default 10
	// minutes. Instances not complete by then count as lost.
	Timeout time.Duration
	// Logf, if set, receives a line per event.
	Logf func(format string, args ...any)
}

// RecoveryResult is what Recovery measured.
type RecoveryResult struct {
	// RecoveryS is the time from restarting the killed process to every
	// instance being complete, in seconds.
	RecoveryS float64 `json:"recovery_s"`
	// DuplicateSteps counts executions of steps that had already returned.
	DuplicateSteps int `json:"duplicate_steps"`
	// LostInstances counts instances not complete with the expected output.
	LostInstances int `json:"lost_instances"`
	// InFlight counts instances not finished when the process was killed.
	InFlight int `json:"in_flight"`
	// Reexecuted counts steps cut off by the kill and run again.
	Reexecuted int `json:"reexecuted_steps"`
	// Report is the full check.
	Report *Report `json:"-"`
}

// Recovery runs the recovery scenario: a child creates Instances instances
// and is killed with SIGKILL while they are in flight; a new child is
// started, and the time from its start to every instance being complete is
// measured; then the audit log is checked. It must be called from a
// program that calls RunChild when IsChild (see the package comment).
func Recovery(ctx context.Context, o RecoveryOptions) (res *RecoveryResult, err error) {
	if o.Instances <= 0 {
		o.Instances = 5000
	}
	if o.KillAfter <= 0 {
		o.KillAfter = 100 * time.Millisecond
	}
	if o.Sleep <= 0 {
		o.Sleep = 200 * time.Millisecond
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 50 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t := o.Target
	switch t.Backend {
	case SQLite:
		if t.SQLitePath == "" {
			dir, err := os.MkdirTemp("", "agentflow-recovery-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			t.SQLitePath = filepath.Join(dir, "recovery.db")
		}
	case Postgres:
		if t.Schema == "" {
			var b [6]byte
			_, _ = rand.Read(b[:])
			t.Schema = "crashtest_" + hex.EncodeToString(b[:])
			defer func() {
				db, derr := openPG(context.WithoutCancel(ctx), t.DSN, "", 1)
				if derr == nil {
					_, derr = db.ExecContext(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+t.Schema+` CASCADE`)
					db.Close()
				}
				err = errors.Join(err, derr)
			}()
		}
	}
	if err := Prepare(ctx, t); err != nil {
		return nil, err
	}
	m, err := OpenMonitor(ctx, t, "rec")
	if err != nil {
		return nil, err
	}
	defer m.Close()

	cfg := ChildConfig{Target: t, Prefix: "rec", Create: o.Instances, Lease: o.Lease, Sleep: o.Sleep, RetryDelay: o.RetryDelay, NodeID: "rec-first"}
	first, err := StartChild(cfg)
	if err != nil {
		return nil, err
	}
	defer first.Kill()
	created := time.Time{}
	for created.IsZero() || time.Since(created) < o.KillAfter {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-first.Done():
			return nil, fmt.Errorf("crashtest: recovery: first child exited: %v\n%s", first.ExitErr(), first.Output())
		case <-time.After(25 * time.Millisecond):
		}
		if created.IsZero() {
			p, err := m.Progress(ctx)
			if err != nil {
				return nil, err
			}
			if p.Created == o.Instances {
				created = time.Now()
				logf("recovery: %d instances created (%d finished)", p.Created, p.Finished)
			}
		}
	}
	first.Kill()
	p, err := m.Progress(ctx)
	if err != nil {
		return nil, err
	}
	if p.Finished == o.Instances {
		return nil, fmt.Errorf("crashtest: recovery: all %d instances finished before the kill; use more instances or a shorter KillAfter", o.Instances)
	}
	res = &RecoveryResult{InFlight: o.Instances - p.Finished}
	logf("recovery: killed pid %d with %d instances in flight", first.PID(), res.InFlight)

	cfg.Create, cfg.NodeID = 0, "rec-second"
	restart := time.Now()
	second, err := StartChild(cfg)
	if err != nil {
		return nil, err
	}
	defer second.Kill()
	deadline := time.After(o.Timeout)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-second.Done():
			return nil, fmt.Errorf("crashtest: recovery: restarted child exited: %v\n%s", second.ExitErr(), second.Output())
		case <-deadline:
			done = true
			logf("recovery: not complete within %s", o.Timeout)
		case <-time.After(50 * time.Millisecond):
			p, err := m.Progress(ctx)
			if err != nil {
				return nil, err
			}
			done = p.Finished == o.Instances
		}
	}
	res.RecoveryS = time.Since(restart).Seconds()
	logf("recovery: restart to all finished: %.2fs", res.RecoveryS)
	if err := second.Stop(15 * time.Second); err != nil {
		return nil, fmt.Errorf("crashtest: recovery: %w\n%s", err, second.Output())
	}
	if err := errors.Join(first.RaceErr(), second.RaceErr()); err != nil {
		return nil, fmt.Errorf("crashtest: recovery: %w", err)
	}
	r, err := m.Check(ctx, o.Instances)
	if err != nil {
		return nil, err
	}
	res.Report, res.DuplicateSteps, res.LostInstances, res.Reexecuted = r, r.DuplicateSteps, r.Lost, r.Reexecuted
	return res, nil
}
