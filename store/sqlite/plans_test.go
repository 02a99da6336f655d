package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"agentflow/internal/sqlstore"
)

// openMigrated returns a database with the store's schema and no
// statistics, as a new store has.
func openMigrated(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plans.db")
	st, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The parallel subtests open connections together; the first one to
	// find the WAL index missing rebuilds it under a lock the others must
	// wait for rather than fail on.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// plan returns the steps of q's query plan, its parameters unbound.
func plan(ctx context.Context, db *sql.DB, q string) ([]string, error) {
	rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, make([]any, strings.Count(q, "?"))...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var steps []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return nil, err
		}
		steps = append(steps, detail)
	}
	return steps, rows.Err()
}

// statementStart tells a statement from a fragment of one.
var statementStart = regexp.MustCompile(`^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b`)

// fullScan matches a plan step that reads a whole table that grows with use.
var fullScan = regexp.MustCompile(`^SCAN (workflow_\w+|agent_\w+|think_\w+)\b`)

// TestStatementsDoNotScanTables checks, on a schema with no statistics, that
// no statement of the store reads the whole of a table that grows with use:
// such a statement costs more with every workflow, schedule or message
// ever kept. (The claim of the Think outbox did, ordered by id instead of
// its index's order.)
func TestStatementsDoNotScanTables(t *testing.T) {
	t.Parallel()
	db := openMigrated(t)
	for name, q := range sqlstore.Statements(dialect) {
		if !statementStart.MatchString(q) {
			continue // a fragment of a statement put together later
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A list filled in later gets one element.
			q := strings.NewReplacer("%s", "?", "%d", "1").Replace(q)
			steps, err := plan(t.Context(), db, q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			for _, s := range steps {
				if fullScan.MatchString(s) {
					t.Errorf("%q reads a whole table:\n%s\nplan:\n  %s", s, q, strings.Join(steps, "\n  "))
				}
			}
		})
	}
}

// TestUnfinishedRowsUseTheirIndex checks that every statement looking for
// an agent's pending or running submissions, or its unfinished fibers,
// reads them through the partial index on those rows, so that its cost does
// not grow with the agent's finished ones: through the index on the agent
// (or its key) it reads every submission or fiber the agent ever had, on
// each look of the Think runner or each activation.
func TestUnfinishedRowsUseTheirIndex(t *testing.T) {
	t.Parallel()
	db := openMigrated(t)
	st := sqlstore.Statements(dialect)
	for _, tt := range []struct{ statement, table, index string }{
		{"ListSubmissions(pending)", "think_submissions", "think_submissions_active"},
		{"ListSubmissions(pending, running)", "think_submissions", "think_submissions_active"},
		{"tq.startSubmission", "think_submissions", "think_submissions_active"},
		{"tq.recoverSubmissions", "think_submissions", "think_submissions_active"},
		{"aq.activateAgent", "agent_fibers", "agent_fibers_unfinished"},
		{"aq.interruptFibers", "agent_fibers", "agent_fibers_unfinished"},
	} {
		t.Run(tt.statement, func(t *testing.T) {
			t.Parallel()
			q := st[tt.statement]
			steps, err := plan(t.Context(), db, q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			reads := 0
			for _, s := range steps {
				// A step names the table, or an index of it (their names
				// start with the table's). An UPDATE's own row is found
				// by its seq: one row.
				if !strings.Contains(s, tt.table) || strings.Contains(s, "seq=?") {
					continue
				}
				reads++
				if !strings.Contains(s, tt.index) {
					t.Errorf("a step reads %s without %s:\n%s\nplan:\n  %s", tt.table, tt.index, q, strings.Join(steps, "\n  "))
				}
			}
			if reads == 0 {
				t.Errorf("no step reads %s:\n%s\nplan:\n  %s", tt.table, q, strings.Join(steps, "\n  "))
			}
		})
	}
}

// TestDueSchedulesUseTheDueIndex checks that the looks for due schedules
// read agent_schedules_due by class up to now, so that their cost grows
// neither with the schedules due later (through agent_schedules_agent they
// read every schedule of the class) nor with other classes' due ones, and a
// runtime looks every poll interval (BENCHMARKS.md, "A look for due
// schedules").
func TestDueSchedulesUseTheDueIndex(t *testing.T) {
	t.Parallel()
	db := openMigrated(t)
	st := sqlstore.Statements(dialect)
	for _, name := range []string{"aq.claimSchedules", "aq.nextSchedules"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			q := strings.NewReplacer("%s", "?").Replace(st[name])
			steps, err := plan(t.Context(), db, q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			due := false
			for _, s := range steps {
				if strings.Contains(s, "agent_schedules_agent") {
					t.Errorf("a step reads agent_schedules_agent:\n%s\nplan:\n  %s", q, strings.Join(steps, "\n  "))
				}
				due = due || strings.Contains(s, "agent_schedules_due (class=? AND next_run_at<?)")
			}
			if !due {
				t.Errorf("no step reads agent_schedules_due by class up to now:\n%s\nplan:\n  %s", q, strings.Join(steps, "\n  "))
			}
		})
	}
}
