package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"agentflow/store"
)

// This file answers operators' queries (store.InspectStore). They run on
// the read pool, never in a write.
//
// The instance list pages newest first by (created_at, id) with a keyset
// cursor, so a page deep in the table costs what the first one does. Three
// indexes serve it (migration 0010): (created_at, id) for no filter or a
// time range, (status, created_at, id) and (workflow, created_at, id) for
// the two filters operators use most. A filter on several statuses (or, with
// no status filter, on several classes) is one ordered, limited branch per
// value under UNION ALL, each an index range scan, merged by the outer
// ORDER BY. The other filters (service, origin, updated time) narrow the
// scan of whichever index the query uses: they are cheap when they match
// often and cost a longer scan when they match rarely.

// ListInstances implements store.InspectStore.
func (s *Store) ListInstances(ctx context.Context, f store.InstanceFilter) ([]store.Instance, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	limit := f.Limit
	if limit == 0 {
		limit = store.MaxPage
	}
	const order = ` ORDER BY created_at DESC, id DESC LIMIT ?`
	where, args := s.instanceWhere(f, true)
	var (
		q    string
		qa   []any
		dims = f.Statuses // the column a UNION ALL splits on
		col  = "status"
	)
	vals := make([]string, 0, len(f.Statuses))
	for _, st := range f.Statuses {
		vals = append(vals, string(st))
	}
	if len(dims) == 0 {
		vals, col = f.Workflows, "workflow"
	}
	switch {
	case len(vals) <= 1:
		conds := where
		qa = args
		if len(vals) == 1 {
			conds = append([]string{col + ` = ?`}, where...)
			qa = append([]any{vals[0]}, args...)
		}
		q = `SELECT ` + instanceCols + ` FROM workflow_instances` + whereClause(conds) + order
		qa = append(qa, limit)
	default:
		// Each branch is one index range; the outer query merges them.
		branches := make([]string, len(vals))
		for i, v := range vals {
			branches[i] = `SELECT * FROM (SELECT ` + instanceCols + ` FROM workflow_instances` +
				whereClause(append([]string{col + ` = ?`}, where...)) + order + `) b` + fmt.Sprint(i)
			qa = append(qa, v)
			qa = append(qa, args...)
			qa = append(qa, limit)
		}
		q = strings.Join(branches, "\nUNION ALL\n") + order
		qa = append(qa, limit)
	}
	insts, err := readAllOnce(ctx, s, s.d.Rebind(q), qa, scanInstance)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return insts, nil
}

// instanceWhere renders f's conditions but its status filter. For a list
// (not a count) it leaves out the class filter when there is no status
// filter, since ListInstances then splits on the class, and adds the cursor.
func (s *Store) instanceWhere(f store.InstanceFilter, list bool) ([]string, []any) {
	var (
		conds []string
		args  []any
	)
	in := func(col string, vs []string) {
		conds = append(conds, col+` IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(vs)), ", ")+`)`)
		for _, v := range vs {
			args = append(args, v)
		}
	}
	if len(f.Workflows) > 0 && (!list || len(f.Statuses) > 0) {
		in("workflow", f.Workflows)
	}
	if len(f.Services) > 0 {
		in("service", f.Services)
	}
	if f.Origin.Class != "" {
		conds, args = append(conds, `origin_class = ?`), append(args, f.Origin.Class)
		if f.Origin.Name != "" {
			conds, args = append(conds, `origin_name = ?`), append(args, f.Origin.Name)
		}
	}
	bound := func(col, op string, t time.Time) {
		if !t.IsZero() {
			conds, args = append(conds, col+` `+op+` ?`), append(args, t.UnixMicro())
		}
	}
	bound("created_at", ">=", f.CreatedFrom)
	bound("created_at", "<", f.CreatedTo)
	bound("updated_at", ">=", f.UpdatedFrom)
	bound("updated_at", "<", f.UpdatedTo)
	if list && f.After != nil {
		// A row value: both engines turn it into one index range.
		conds = append(conds, `(created_at, id) < (?, ?)`)
		args = append(args, f.After.CreatedAt.UnixMicro(), f.After.ID)
	}
	return conds, args
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return ` WHERE ` + strings.Join(conds, ` AND `)
}

// CountInstances implements store.InspectStore.
func (s *Store) CountInstances(ctx context.Context, f store.InstanceFilter) (map[store.Status]int, error) {
	if err := f.ValidateCount(); err != nil {
		return nil, fmt.Errorf("count instances: %w", err)
	}
	conds, args := s.instanceWhere(f, false)
	q := s.d.Rebind(`SELECT status, COUNT(*) FROM workflow_instances` + whereClause(conds) + ` GROUP BY status`)
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("count instances: %w", err)
	}
	defer rows.Close()
	counts := make(map[store.Status]int)
	for rows.Next() {
		var (
			st string
			n  int64
		)
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count instances: %w", err)
		}
		counts[store.Status(st)] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count instances: %w", err)
	}
	return counts, nil
}

// listAttemptsSQL reads the failed attempts from their table and each
// succeeded one from its step row, which times it (attempt_started_at to
// updated_at): a Do that succeeds has no attempts row.
const listAttemptsSQL = `SELECT seq, attempt, started_at, ended_at, error_name, error_message
 FROM workflow_step_attempts WHERE instance_id = ?
UNION ALL
SELECT seq, attempt, attempt_started_at, updated_at, NULL, NULL
 FROM workflow_steps WHERE instance_id = ? AND kind = 'do' AND state = 'done'
ORDER BY seq, attempt`

// ListStepAttempts implements store.InspectStore.
func (s *Store) ListStepAttempts(ctx context.Context, instanceID string) ([]store.StepAttempt, error) {
	as, err := readAll(ctx, s, s.d.Rebind(listAttemptsSQL), []any{instanceID, instanceID}, func(r rowScanner) (*store.StepAttempt, error) {
		var (
			a               store.StepAttempt
			started         sql.NullInt64
			ended           int64
			errName, errMsg sql.NullString
		)
		if err := r.Scan(&a.Seq, &a.Attempt, &started, &ended, &errName, &errMsg); err != nil {
			return nil, err
		}
		a.StartedAt, a.EndedAt = fromMicros(started), time.UnixMicro(ended).UTC()
		a.ErrorName, a.ErrorMessage = errName.String, errMsg.String
		return &a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list step attempts of %q: %w", instanceID, err)
	}
	return as, nil
}

// ListAgents implements store.InspectStore. The primary key (class, name)
// serves it; an owner whose node has no row is reported as none.
func (s *Store) ListAgents(ctx context.Context, f store.AgentFilter) ([]store.AgentSummary, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	limit := f.Limit
	if limit == 0 {
		limit = store.MaxPage
	}
	var (
		conds []string
		args  []any
	)
	switch {
	case f.Class != "" && f.After.Name != "":
		conds, args = append(conds, `a.class = ?`, `a.name > ?`), append(args, f.Class, f.After.Name)
	case f.Class != "":
		conds, args = append(conds, `a.class = ?`), append(args, f.Class)
	case f.After.Name != "":
		conds, args = append(conds, `(a.class, a.name) > (?, ?)`), append(args, f.After.Class, f.After.Name)
	}
	q := `SELECT a.class, a.name, CASE WHEN n.id IS NULL THEN NULL ELSE a.owner END, a.created_at, a.updated_at,
   COALESCE(LENGTH(a.state), 0)
 FROM agent_instances a LEFT JOIN agentflow_nodes n ON n.id = a.owner` + whereClause(conds) + `
 ORDER BY a.class, a.name LIMIT ?`
	args = append(args, limit)
	agents, err := readAllOnce(ctx, s, s.d.Rebind(q), args, func(r rowScanner) (*store.AgentSummary, error) {
		var (
			a                store.AgentSummary
			owner            sql.NullString
			created, updated int64
			size             int64
		)
		if err := r.Scan(&a.Class, &a.Name, &owner, &created, &updated, &size); err != nil {
			return nil, err
		}
		a.Owner, a.StateBytes = owner.String, int(size)
		a.CreatedAt, a.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
		return &a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// ListOutboxes implements store.InspectStore. The primary key serves the
// pages; an agent's rows come from think_outbox_submission and the
// undelivered ones from think_outbox_due, each sorted by id: the outbox is
// pruned as it is delivered, so neither is large.
func (s *Store) ListOutboxes(ctx context.Context, f store.OutboxFilter) ([]store.OutboxMessage, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("list outboxes: %w", err)
	}
	limit := f.Limit
	if limit == 0 {
		limit = store.MaxPage
	}
	var (
		conds []string
		args  []any
	)
	if f.Agent.Class != "" {
		conds, args = append(conds, `class = ?`), append(args, f.Agent.Class)
		if f.Agent.Name != "" {
			conds, args = append(conds, `name = ?`), append(args, f.Agent.Name)
		}
	}
	if f.Undelivered {
		conds = append(conds, `delivered_at IS NULL`)
	}
	if f.AfterID != 0 {
		conds, args = append(conds, `id < ?`), append(args, f.AfterID)
	}
	args = append(args, limit)
	q := `SELECT ` + outboxCols + ` FROM think_outbox` + whereClause(conds) + ` ORDER BY id DESC LIMIT ?`
	msgs, err := readAllOnce(ctx, s, s.d.Rebind(q), args, scanOutbox)
	if err != nil {
		return nil, fmt.Errorf("list outboxes: %w", err)
	}
	return msgs, nil
}
