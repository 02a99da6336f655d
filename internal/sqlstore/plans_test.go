package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"agentflow/internal/sqlstore"
	"agentflow/store/sqlite"
)

// sqliteDialect is the SQLite store's dialect (store/sqlite), as far as the
// statements' text depends on it.
var sqliteDialect = &sqlstore.Dialect{Name: "sqlite", Serialized: true, JSON: sqlstore.JSONSQLite}

// openMigrated returns a database with the SQLite store's schema.
func openMigrated(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plans.db")
	st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
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

// fullScan matches a plan step that reads a whole table; the tables listed
// are the ones that grow with use.
var fullScan = regexp.MustCompile(`^SCAN (workflow_\w+|agent_\w+|think_\w+)\b`)

// TestStatementsDoNotScanTables checks, on SQLite with no statistics (as a
// new database has), that no statement of the store reads the whole of a
// table that grows with use: such a statement costs more with every
// workflow, schedule or message ever kept. (The claim of the Think outbox
// did, ordered by id instead of its index's order.)
func TestStatementsDoNotScanTables(t *testing.T) {
	t.Parallel()
	db := openMigrated(t)
	for name, q := range sqlstore.Statements(sqliteDialect) {
		if !statementStart.MatchString(q) {
			continue // a fragment of a statement put together later
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Lists filled in later get one element.
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

// TestActiveSubmissionsUseTheirIndex checks, on SQLite, that every
// statement looking for an agent's pending or running submissions reads
// them through the partial index think_submissions_active, so that its cost
// does not grow with the agent's finished submissions: through
// think_submissions_seq it reads every submission the agent ever had, on
// each look of the Think runner.
func TestActiveSubmissionsUseTheirIndex(t *testing.T) {
	t.Parallel()
	db := openMigrated(t)
	for name, q := range sqlstore.ActiveSubmissionStatements(sqliteDialect) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			steps, err := plan(t.Context(), db, q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			for _, s := range steps {
				// An UPDATE's own row is found by its seq: one row.
				if strings.Contains(s, "think_submissions") && !strings.Contains(s, "think_submissions_active") &&
					!strings.Contains(s, "seq=?") {
					t.Errorf("a step reads think_submissions without think_submissions_active:\n%s\nplan:\n  %s", q, strings.Join(steps, "\n  "))
				}
			}
		})
	}
}
