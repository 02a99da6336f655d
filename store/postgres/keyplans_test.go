package postgres

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"agentflow/internal/pgtest"
	"agentflow/internal/sqlstore"
)

// agentIndexes are the secondary indexes that start with an agent's class
// and name, as the primary keys of their tables (or, for agent_schedules,
// the lookups by id and agent) do, and the statements that may use each:
// the ones that page through an agent's rows in the index's order or look
// for any row of the agent. workflow_instances_status_created leads with a
// status that lookups of one instance also test.
var agentIndexes = map[string][]string{
	"agent_workflows_page":              {"ListAgentWorkflows", "ListAgentWorkflows(filtered, after)"},
	"agent_schedules_agent":             {"aq.listSchedules", "aq.dropUnusedAgent"},
	"agent_fibers_agent":                {"aq.listFibers"},
	"think_submissions_seq":             {"ListSubmissions", "tq.insertSubmission", "tq.startSubmission"},
	"workflow_instances_status_created": {},
}

// agentKeys are the primary keys that start with an agent's class and
// name, and the column that ends each. A scan of one whose Index Cond does
// not reach that column reads all of the agent's rows: only the statements
// listed, which ask whether the agent has any row at all, may do that.
var agentKeys = map[string]struct {
	last    string
	allowed []string
}{
	"agent_workflows_pkey":   {"workflow_id", []string{"aq.dropUnusedAgent"}},
	"agent_fibers_pkey":      {"id", []string{"aq.dropUnusedAgent"}},
	"think_submissions_pkey": {"id", []string{"aq.dropUnusedAgent", "tq.deleteFinished"}},
}

var (
	statementStart = regexp.MustCompile(`^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b`)
	indexUse       = regexp.MustCompile(`using (\w+)`)
)

// TestKeyLookupsUseTheirKey checks the plans PostgreSQL makes for the
// store's statements as generic plans (the ones pgx's prepared statements
// keep) on tables never analyzed, where every index estimates one row:
// each index in agentIndexes is used only by the statements listed for it.
// A lookup by key planned through one of them reads all of the agent's rows
// (tracking rows, schedules, fibers, submissions) or every waiting instance,
// so it costs more the longer the agent lives: migration 0013 and
// notIndexed keep them off.
func TestKeyLookupsUseTheirKey(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	st, err := Open(t.Context(), dsn, Options{Schema: schema, MaxConns: 2, GroupConns: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	n := 0
	for name, q := range sqlstore.Statements(dialect) {
		if !statementStart.MatchString(q) {
			continue // a fragment of a statement put together later
		}
		// A list filled in later gets one element.
		q = dialect.Rebind(strings.NewReplacer("%s", "?", "%d", "1").Replace(q))
		params := 0
		for i := 1; strings.Contains(q, fmt.Sprintf("$%d", i)); i++ {
			params = i
		}
		n++
		stmt := fmt.Sprintf("p%d", n)
		if _, err := conn.Exec(t.Context(), "PREPARE "+stmt+" AS "+q); err != nil {
			t.Errorf("%s: PREPARE: %v\n%s", name, err, q)
			continue
		}
		explain := "EXPLAIN EXECUTE " + stmt
		if params > 0 {
			explain += "(" + strings.TrimSuffix(strings.Repeat("NULL, ", params), ", ") + ")"
		}
		rows, err := conn.Query(t.Context(), explain)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for i, l := range lines {
			m := indexUse.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if allowed, ok := agentIndexes[m[1]]; ok && !slices.Contains(allowed, name) {
				t.Errorf("%s is planned through %s:\n%s\nplan:\n%s", name, m[1], q, strings.Join(lines, "\n"))
			}
			if k, ok := agentKeys[m[1]]; ok && !slices.Contains(k.allowed, name) &&
				(i+1 == len(lines) || !strings.Contains(lines[i+1], "Index Cond") || !strings.Contains(lines[i+1], "("+k.last+" = ")) {
				t.Errorf("%s scans %s without its last column %s:\n%s\nplan:\n%s", name, m[1], k.last, q, strings.Join(lines, "\n"))
			}
		}
	}
	if n < 50 {
		t.Errorf("explained %d statements; the store has more", n)
	}
}
