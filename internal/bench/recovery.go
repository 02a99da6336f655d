package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"agentflow/internal/crashtest"
)

// recovery runs package crashtest's recovery scenario: a child process (this
// binary run again, see crashtest.IsChild) creates the instances and is
// killed with SIGKILL while they are in flight; a second child is started
// and the time from its start to every instance being complete is measured;
// then the audit log kept outside the engine's transactions is checked for
// steps that ran again after returning and for instances that were lost.
func (r *runner) recovery(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	t := crashtest.Target{SQLiteSynchronous: cfg.Synchronous, DSN: cfg.DSN}
	switch cfg.Backend {
	case "sqlite":
		t.Backend = crashtest.SQLite
		if cfg.Dir != "" {
			if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
				return nil, err
			}
			t.SQLitePath = filepath.Join(cfg.Dir, "bench-recovery-"+randomSuffix()+".db")
			defer func() { err = errors.Join(err, removeSQLiteFiles(t.SQLitePath)) }()
		}
	case "postgres":
		t.Backend = crashtest.Postgres // an empty Schema: a fresh one, dropped after
	}
	r.progress("%d instances in flight at the kill", cfg.RecoveryInstances)
	res, err := crashtest.Recovery(ctx, crashtest.RecoveryOptions{
		Target:    t,
		Instances: cfg.RecoveryInstances,
		Timeout:   cfg.Timeout,
		Logf:      func(format string, args ...any) { r.progress(format, args...) },
	})
	if err != nil {
		return nil, err
	}
	rs := []Result{
		metric("recovery_s", res.RecoveryS, "s"),
		metric("duplicate_steps", float64(res.DuplicateSteps), "steps"),
		metric("lost_instances", float64(res.LostInstances), "instances"),
		metric("in_flight_at_kill", float64(res.InFlight), "instances"),
		metric("reexecuted_steps", float64(res.Reexecuted), "steps"),
	}
	if res.Report != nil {
		if err := res.Report.Err(); err != nil {
			return rs, fmt.Errorf("the durability check failed: %w", err)
		}
	}
	return rs, nil
}

// removeSQLiteFiles removes a database file with its WAL, shared-memory and
// audit companions.
func removeSQLiteFiles(path string) error {
	var errs []error
	for _, p := range []string{path, path + ".audit"} {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if err := os.Remove(p + suffix); err != nil && !errors.Is(err, os.ErrNotExist) && !strings.HasSuffix(suffix, "journal") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
