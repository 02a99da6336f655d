package sqlstore_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"agentflow/internal/sqlstore"
	"agentflow/store/sqlite"
)

// TestActiveSubmissionsUseTheirIndex checks, on SQLite, that every
// statement looking for an agent's pending or running submissions reads
// them through the partial index think_submissions_active, so that its cost
// does not grow with the agent's finished submissions: through
// think_submissions_seq it reads every submission the agent ever had, on
// each turn of the runner.
func TestActiveSubmissionsUseTheirIndex(t *testing.T) {
	t.Parallel()
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
	defer db.Close()
	// The SQLite store's dialect (store/sqlite), as far as these
	// statements depend on it.
	d := &sqlstore.Dialect{Name: "sqlite", Serialized: true, JSON: sqlstore.JSONSQLite}
	for name, q := range sqlstore.ActiveSubmissionStatements(d) {
		t.Run(name, func(t *testing.T) {
			args := make([]any, strings.Count(q, "?"))
			rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			for _, step := range plan {
				// The UPDATE's own row is found by its seq, one row.
				if strings.Contains(step, "think_submissions") && !strings.Contains(step, "think_submissions_active") &&
					!strings.Contains(step, "seq=?") {
					t.Errorf("a step reads think_submissions without think_submissions_active:\n%s\nplan:\n  %s", q, strings.Join(plan, "\n  "))
				}
			}
		})
	}
}
