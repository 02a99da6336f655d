package sqlite_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

// TestMigrateInspect opens a database written at schema version 9, before
// steps kept their start and attempts their rows, and reads its steps,
// attempts and events through the migrated schema.
func TestMigrateInspect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentflow.db")
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE agentflow_schema (version INTEGER NOT NULL PRIMARY KEY)`}
	for _, f := range files {
		v, err := strconv.Atoi(strings.SplitN(filepath.Base(f), "_", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		if v > 9 {
			continue
		}
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stmts = append(stmts, string(body), `INSERT INTO agentflow_schema (version) VALUES (`+strconv.Itoa(v)+`)`)
	}
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	us := func(d time.Duration) string { return strconv.FormatInt(t0.Add(d).UnixMicro(), 10) }
	stmts = append(stmts,
		`INSERT INTO workflow_instances (id, workflow, status, created_at, updated_at, owner, fence)
 VALUES ('a', 'wf', 'running', `+us(0)+`, `+us(0)+`, 'node-1', 1)`,
		`INSERT INTO workflow_steps (instance_id, seq, name, occurrence, kind, state, attempt, result, updated_at)
 VALUES ('a', 0, 'one', 0, 'do', 'done', 2, '1', `+us(time.Second)+`)`,
		`INSERT INTO workflow_steps (instance_id, seq, name, occurrence, kind, state, attempt, error_name, error_message, wake_at, updated_at)
 VALUES ('a', 1, 'two', 0, 'do', 'pending', 2, 'Flaky', 'flaky', `+us(time.Minute)+`, `+us(2*time.Second)+`)`,
		`INSERT INTO workflow_events (instance_id, type, payload, created_at, consumed) VALUES ('a', 'go', '1', `+us(0)+`, 1)`,
	)
	rawExec(t, path, stmts...)

	s := open(t, path)
	defer s.Close()
	ctx := t.Context()
	steps, err := s.ListSteps(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || !steps[0].StartedAt.IsZero() || !steps[1].StartedAt.IsZero() {
		t.Fatalf("steps after migrating: %+v, want two without a start", steps)
	}
	as, err := s.ListStepAttempts(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Seq != 0 || as[0].Attempt != 2 || !as[0].StartedAt.IsZero() || !as[0].EndedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("attempts after migrating: %+v, want the done step's last attempt, ended at t0+1s and with no start", as)
	}
	evs, err := s.ListEvents(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || !evs[0].Consumed || !evs[0].ConsumedAt.IsZero() {
		t.Fatalf("events after migrating: %+v, want one consumed at no known time", evs)
	}

	// The pending step's next attempt fails again: its attempt is recorded
	// and the step keeps the start of that attempt, its first known one.
	l := store.Lease{InstanceID: "a", Owner: "node-1", Fence: 1}
	st := steps[1]
	st.Attempt, st.ErrorName, st.ErrorMessage, st.StartedAt = 3, "Flaky", "again", t0.Add(time.Minute)
	if _, err := s.SaveStep(ctx, l, st, t0.Add(time.Minute+time.Second)); err != nil {
		t.Fatal(err)
	}
	as, err = s.ListStepAttempts(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 2 || as[1].Seq != 1 || as[1].Attempt != 2 || !as[1].StartedAt.Equal(t0.Add(time.Minute)) || as[1].ErrorMessage != "again" {
		t.Fatalf("attempts after a new failure: %+v", as)
	}
	if in, err := s.ListInstances(ctx, store.InstanceFilter{Statuses: []store.Status{store.StatusRunning}}); err != nil || len(in) != 1 {
		t.Fatalf("ListInstances after migrating: %d instances, %v", len(in), err)
	}
}
