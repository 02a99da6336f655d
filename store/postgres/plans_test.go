package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"

	"github.com/jackc/pgx/v5"
)

// TestHotStatementsUsePrimaryKeys checks that the fenced writes of an
// instance (a step's checkpoint, the finish) find its row through the
// primary key, never through workflow_instances_owner, and that the read
// of the steps of a claim's instances (ListStepsOf) looks each up in
// workflow_steps' primary key, never scanning the table, even in the plans
// PostgreSQL makes for them on tables never analyzed (autovacuum off), as
// generic plans of the statements pgx prepares, made while the tables are
// empty and kept as they grow: the owner index's plan reads the entries of
// every instance the node owns, and of every version no vacuum has removed,
// for each write, and a sequential scan reads every step of every instance.
func TestHotStatementsUsePrimaryKeys(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	if !strings.Contains(dsn, "://") {
		sep = " "
	}
	// The generic plan at once, not after five custom ones: the plan a
	// connection keeps for the rest of its life.
	generic := dsn + sep + "plan_cache_mode=force_generic_plan"
	s, err := postgres.Open(t.Context(), generic, postgres.Options{Schema: schema, MaxConns: 2, GroupConns: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := t.Context()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("i%02d", i)
	}
	listSteps := func() {
		for range 4 {
			if _, err := s.ListStepsOf(ctx, ids); err != nil {
				t.Fatalf("ListStepsOf: %v", err)
			}
		}
	}
	listSteps() // planned on the empty table
	for i := range n {
		id := fmt.Sprintf("i%02d", i)
		if err := s.CreateInstances(ctx, []*store.Instance{{ID: id, Workflow: "w", Status: store.StatusRunning, CreatedAt: now, Owner: "node-1"}}); err != nil {
			t.Fatal(err)
		}
		l := store.Lease{InstanceID: id, Owner: "node-1", Fence: 1}
		st := store.Step{Seq: 0, Name: "a", Occurrence: 1, Kind: store.KindDo, State: store.StepDone, Attempt: 1, Result: []byte(`1`)}
		if _, err := s.SaveStep(ctx, l, st, now); err != nil {
			t.Fatalf("SaveStep: %v", err)
		}
		if err := s.Finish(ctx, l, store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, now); err != nil {
			t.Fatalf("Finish: %v", err)
		}
	}
	listSteps()
	// A backend's statistics reach the shared counters by the time it has exited.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pkey, owner int64
	for deadline := time.Now().Add(15 * time.Second); ; {
		err := conn.QueryRow(ctx, `SELECT
   COALESCE(SUM(idx_scan) FILTER (WHERE indexrelname = 'workflow_instances_pkey'), 0),
   COALESCE(SUM(idx_scan) FILTER (WHERE indexrelname = 'workflow_instances_owner'), 0)
 FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = 'workflow_instances'`, schema).Scan(&pkey, &owner)
		if err != nil {
			t.Fatal(err)
		}
		if pkey+owner >= 2*n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pkey+owner < 2*n {
		t.Fatalf("workflow_instances' indexes were scanned %d times, want at least %d (a checkpoint and a finish per instance): the statistics did not arrive", pkey+owner, 2*n)
	}
	if owner != 0 {
		t.Errorf("workflow_instances_owner was scanned %d times by %d checkpoints and %d finishes, want 0", owner, n, n)
	}
	// Rows read by sequential scans: the migrations' scans of the empty
	// table read none.
	var seqRows, idx int64
	if err := conn.QueryRow(ctx, `SELECT COALESCE(seq_tup_read, 0), COALESCE(idx_scan, 0) FROM pg_stat_user_tables
 WHERE schemaname = $1 AND relname = 'workflow_steps'`, schema).Scan(&seqRows, &idx); err != nil {
		t.Fatal(err)
	}
	if seqRows != 0 || idx < 8*n {
		t.Errorf("workflow_steps: %d rows read by sequential scans and %d index scans, want none and at least %d (8 ListStepsOf of %d instances)", seqRows, idx, 8*n, n)
	}
}
