package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"agentflow/store"
)

// This file implements store.AgentStore: the agent rows (agent_instances),
// their schedules (agent_schedules) and their fibers (agent_fibers).
//
// Every claim here (an agent's, a schedule's, a fiber's owner) is free once
// its node has no row in agentflow_nodes, so the queries test liveness with
// live() rather than relying on RemoveNode to release anything.
//
// The writes are one statement each, run through WriteOne (on PostgreSQL
// they join the pipelined groups), except AbortFiber, which decides on a
// locked row. When a one-statement write changes nothing, a read through the
// read pool says why (the row is gone, finished, owned by a live node); it
// runs after the write committed, so if the row changed meanwhile the write
// is tried again.

// live is a condition that holds when the node id in col has a row (and is
// NULL, so not true, when col is NULL: callers test for an unowned row
// first). It is an IN over the node table rather than an EXISTS on its key:
// PostgreSQL then hashes the few nodes once per statement instead of
// probing their index for each row, and a claim reads past every row that
// live nodes hold (2,000 claimed schedules: 3.6 ms and 5,117 buffers a
// claim with EXISTS, 1.0 ms and 1,112 with IN).
func live(col string) string {
	return col + ` IN (SELECT id FROM agentflow_nodes)`
}

const agentCols = `class, name, state, owner, fence, created_at, updated_at`

const scheduleCols = `id, class, name, method, payload, kind, cron, interval_us, idempotency_key, next_run_at, created_at, owner`

const fiberCols = `class, name, id, fiber_name, idempotency_key, metadata, status, stash, error, owner, created_at, updated_at, finished_at`

// inList fills a query template's "IN (%s)" with n placeholders and binds
// it for the dialect. A runtime asks with the same classes every time, so
// the text is stable and the statement cache keeps serving it.
func (s *Store) inList(tmpl string, n int) string {
	ph := strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
	return s.d.Rebind(strings.Replace(tmpl, "%s", ph, 1))
}

func strArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, v := range ss {
		out[i] = v
	}
	return out
}

// sqlList renders strings as an SQL list of literals; they must not contain quotes.
func sqlList[S ~string](vs ...S) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = "'" + string(v) + "'"
	}
	return "(" + strings.Join(q, ", ") + ")"
}

var (
	finishedFibers = sqlList(store.FiberCompleted, store.FiberAborted, store.FiberError)
	activeFibers   = sqlList(store.FiberPending, store.FiberRunning)
	// unfinishedFibers is the predicate of the partial index
	// agent_fibers_unfinished, named as written there by the statements
	// about an agent's unfinished fibers, beside their own status test, so
	// that SQLite uses it (see activeSubmissions).
	unfinishedFibers = sqlList(store.FiberPending, store.FiberRunning, store.FiberInterrupted)
)

type agentQueries struct {
	activateAgent, ownerNode, getAgent, saveAgentState, releaseAgent, dropUnusedAgent string

	insertSchedule, scheduleByID, scheduleByKey, getSchedule, listSchedules, deleteSchedule string
	claimSchedules, nextSchedules, reschedule                                               string

	insertFiber, getFiber, fiberByKey, listFibers, claimFiber, updateFiber, stashFiber string
	lockFiber, abortFiber, deleteFiber, interruptFibers, orphanedFiberAgents           string
}

func newAgentQueries(d *Dialect) agentQueries {
	r := d.Rebind
	return agentQueries{
		// Creates the row, or takes it when it is live nowhere, on owner
		// already, or on a node without a row; otherwise returns nothing.
		// The last column is Agent.UnfinishedFibers: pending or running
		// fibers that owner does not run (those InterruptFibers takes).
		activateAgent: r(`INSERT INTO agent_instances (class, name, owner, fence, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?)
 ON CONFLICT (class, name) DO UPDATE SET owner = excluded.owner, fence = agent_instances.fence + 1, updated_at = excluded.updated_at
 WHERE agent_instances.owner IS NULL OR agent_instances.owner = excluded.owner OR NOT ` + live("agent_instances.owner") + `
 RETURNING ` + agentCols + `, CASE WHEN EXISTS (SELECT 1 FROM agent_fibers f
   WHERE f.class = agent_instances.class AND f.name = agent_instances.name
     AND f.status IN ` + unfinishedFibers + `
     AND (f.status = '` + string(store.FiberInterrupted) + `' OR f.owner IS NULL OR f.owner <> agent_instances.owner)) THEN 1 ELSE 0 END`),
		ownerNode: r(`SELECT n.id, n.service, n.host, n.pid, n.process, n.started_at, n.expires_at, n.address, n.agent_classes
 FROM agent_instances a JOIN agentflow_nodes n ON n.id = a.owner WHERE a.class = ? AND a.name = ?`),
		getAgent:       r(`SELECT ` + agentCols + ` FROM agent_instances WHERE class = ? AND name = ?`),
		saveAgentState: r(`UPDATE agent_instances SET state = ?, updated_at = ? WHERE class = ? AND name = ? AND owner = ? AND fence = ?`),
		releaseAgent:   r(`UPDATE agent_instances SET owner = NULL, updated_at = ? WHERE class = ? AND name = ? AND owner = ? AND fence = ?`),
		// Deletes the row of an agent released by its first activation
		// (fence 1) that has stored nothing: no state, and no row in any
		// table keyed by the agent. (A workflow instance the agent
		// started has a tracking row, which retention never deletes.)
		dropUnusedAgent: r(`DELETE FROM agent_instances
 WHERE class = ? AND name = ? AND owner = ? AND fence = ? AND fence = 1 AND state IS NULL` +
			noAgentRows("agent_schedules", "agent_fibers", "agent_workflows", "think_submissions", "think_conversation", "think_outbox")),

		insertSchedule: r(`INSERT INTO agent_schedules (` + scheduleCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
 ON CONFLICT DO NOTHING RETURNING ` + scheduleCols),
		scheduleByID:  r(`SELECT ` + scheduleCols + ` FROM agent_schedules WHERE id = ?`),
		scheduleByKey: r(`SELECT ` + scheduleCols + ` FROM agent_schedules WHERE class = ? AND name = ? AND idempotency_key = ?`),
		getSchedule:   r(`SELECT ` + scheduleCols + ` FROM agent_schedules WHERE id = ? AND class = ? AND name = ?`),
		listSchedules: r(`SELECT ` + scheduleCols + ` FROM agent_schedules
 WHERE class = ? AND name = ? AND (CAST(? AS TEXT) = '' OR kind = ?) AND next_run_at >= ? AND next_run_at <= ?
 ORDER BY next_run_at, id`),
		deleteSchedule: r(`DELETE FROM agent_schedules WHERE id = ? AND class = ? AND name = ?`),
		// The inner SELECT locks the rows it picks (on PostgreSQL, skipping
		// those another claim holds); a row another claim committed after
		// this statement's snapshot is checked again in its new version,
		// whose owner then has a row, so it is not taken twice.
		// The ids are picked once, in a materialized CTE: as an IN
		// subquery PostgreSQL may run the pick again for each row it
		// updates, and with SKIP LOCKED each run skips the rows already
		// taken and picks more, past the limit.
		//
		// The claim and nextSchedules read agent_schedules_due (class,
		// next_run_at): each class's due schedules, up to now. Through
		// agent_schedules_agent (class, name, next_run_at) they read every
		// schedule of the class, due or not, and a runtime looks every
		// poll interval (migration 0015).
		claimSchedules: (`WITH picked AS MATERIALIZED (SELECT s.id FROM agent_schedules s
              WHERE s.next_run_at <= ? AND s.class IN (%s)
                AND (s.owner IS NULL OR NOT ` + live("s.owner") + `)
                AND NOT EXISTS (SELECT 1 FROM agent_instances a
                                WHERE a.class = s.class AND a.name = s.name AND a.owner <> ? AND ` + live("a.owner") + `)
              ORDER BY s.next_run_at, s.id LIMIT ?` + d.SkipLocked + `)
UPDATE agent_schedules SET owner = ?
 WHERE id IN (SELECT id FROM picked) AND next_run_at <= ?
 RETURNING ` + scheduleCols),
		nextSchedules: (`SELECT next_run_at FROM agent_schedules
 WHERE next_run_at <= ? AND class IN (%s) AND (owner IS NULL OR NOT ` + live("owner") + `)
 ORDER BY next_run_at LIMIT ?`),
		reschedule: r(`UPDATE agent_schedules SET next_run_at = ?, owner = NULL WHERE id = ? AND owner = ?`),

		insertFiber: r(`INSERT INTO agent_fibers (` + fiberCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
 ON CONFLICT DO NOTHING RETURNING ` + fiberCols),
		getFiber:   r(`SELECT ` + fiberCols + ` FROM agent_fibers WHERE class = ? AND name = ? AND id = ?`),
		fiberByKey: r(`SELECT ` + fiberCols + ` FROM agent_fibers WHERE class = ? AND name = ? AND idempotency_key = ?`),
		// created_at IS NOT NULL (every row) makes agent_fibers_agent,
		// partial on it, usable (migration 0013 says why).
		listFibers: r(`SELECT ` + fiberCols + ` FROM agent_fibers
 WHERE class = ? AND name = ? AND created_at IS NOT NULL AND (CAST(? AS TEXT) = '' OR status = ?) AND (CAST(? AS TEXT) = '' OR fiber_name = ?)
 ORDER BY created_at, id`),
		claimFiber: r(`UPDATE agent_fibers SET owner = ?, status = '` + string(store.FiberRunning) + `', updated_at = ?
 WHERE class = ? AND name = ? AND id = ? AND status NOT IN ` + finishedFibers + `
 RETURNING ` + fiberCols),
		updateFiber: r(`UPDATE agent_fibers SET status = ?, error = ?, owner = ?, finished_at = ?, updated_at = ?
 WHERE class = ? AND name = ? AND id = ? AND owner = ?`),
		stashFiber: r(`UPDATE agent_fibers SET stash = ?, updated_at = ? WHERE class = ? AND name = ? AND id = ? AND owner = ?`),
		lockFiber: r(`SELECT status, owner, CASE WHEN ` + live("agent_fibers.owner") + ` THEN 1 ELSE 0 END
 FROM agent_fibers WHERE class = ? AND name = ? AND id = ?` + d.ForUpdate),
		abortFiber: r(`UPDATE agent_fibers SET status = '` + string(store.FiberAborted) + `', owner = NULL, finished_at = ?, updated_at = ?
 WHERE class = ? AND name = ? AND id = ?`),
		deleteFiber: r(`DELETE FROM agent_fibers WHERE class = ? AND name = ? AND id = ?`),
		interruptFibers: r(`UPDATE agent_fibers SET status = '` + string(store.FiberInterrupted) + `', owner = NULL, updated_at = ?
 WHERE class = ? AND name = ? AND status IN ` + unfinishedFibers + ` AND status IN ` + activeFibers + `
   AND (owner IS NULL OR owner <> ?)
 RETURNING ` + fiberCols),
		// An agent live on a node with a row is being looked after: that
		// node interrupted its fibers when it activated it.
		orphanedFiberAgents: (`SELECT DISTINCT f.class, f.name FROM agent_fibers f
 WHERE f.class IN (%s) AND f.status IN ` + unfinishedFibers + ` AND f.status IN ` + activeFibers + `
   AND (f.owner IS NULL OR NOT ` + live("f.owner") + `)
   AND NOT EXISTS (SELECT 1 FROM agent_instances a WHERE a.class = f.class AND a.name = f.name AND ` + live("a.owner") + `)
 ORDER BY f.class, f.name LIMIT ?`),
	}
}

// noAgentRows is a condition, for a statement on agent_instances, that the
// agent has no row in any of tables.
func noAgentRows(tables ...string) string {
	var b strings.Builder
	for _, t := range tables {
		b.WriteString("\n   AND NOT EXISTS (SELECT 1 FROM " + t + " t WHERE t.class = agent_instances.class AND t.name = agent_instances.name" +
			agentIndexed(t) + ")")
	}
	return b.String()
}

// agentIndexed is, for a table whose primary key does not start with the
// agent, the condition on its rows t (true of every row) that makes its
// index on the agent, partial on it, usable: see migration 0013.
func agentIndexed(table string) string {
	if table == "agent_schedules" {
		return " AND t.next_run_at IS NOT NULL"
	}
	return ""
}

// maxConflictRetries bounds how often a write that changed nothing is tried
// again because the row that stopped it changed before it could be read.
const maxConflictRetries = 8

func scanAgent(r rowScanner) (*store.Agent, error) {
	var (
		a                store.Agent
		owner            sql.NullString
		created, updated int64
	)
	if err := r.Scan(&a.Class, &a.Name, &a.State, &owner, &a.Fence, &created, &updated); err != nil {
		return nil, err
	}
	a.Owner = owner.String
	a.CreatedAt, a.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return &a, nil
}

// scanActivated scans an agent row followed by its UnfinishedFibers flag.
func scanActivated(r rowScanner) (*store.Agent, error) {
	var (
		a                store.Agent
		owner            sql.NullString
		created, updated int64
		unfinished       int
	)
	if err := r.Scan(&a.Class, &a.Name, &a.State, &owner, &a.Fence, &created, &updated, &unfinished); err != nil {
		return nil, err
	}
	a.Owner = owner.String
	a.CreatedAt, a.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	a.UnfinishedFibers = unfinished == 1
	return &a, nil
}

func scanSchedule(r rowScanner) (*store.Schedule, error) {
	var (
		s                store.Schedule
		kind             string
		cron, key, owner sql.NullString
		interval         sql.NullInt64
		nextRun, created int64
	)
	if err := r.Scan(&s.ID, &s.Class, &s.Name, &s.Method, &s.Payload, &kind, &cron, &interval, &key,
		&nextRun, &created, &owner); err != nil {
		return nil, err
	}
	s.Kind = store.ScheduleKind(kind)
	s.Cron, s.IdempotencyKey, s.Owner = cron.String, key.String, owner.String
	s.Interval = time.Duration(interval.Int64) * time.Microsecond
	s.NextRunAt, s.CreatedAt = time.UnixMicro(nextRun).UTC(), time.UnixMicro(created).UTC()
	return &s, nil
}

func scanFiber(r rowScanner) (*store.Fiber, error) {
	var (
		f                  store.Fiber
		status             string
		key, errMsg, owner sql.NullString
		created, updated   int64
		finished           sql.NullInt64
	)
	if err := r.Scan(&f.AgentKey.Class, &f.AgentKey.Name, &f.ID, &f.Name, &key, &f.Metadata, &status, &f.Stash, &errMsg, &owner,
		&created, &updated, &finished); err != nil {
		return nil, err
	}
	f.Status = store.FiberStatus(status)
	f.IdempotencyKey, f.Error, f.Owner = key.String, errMsg.String, owner.String
	f.CreatedAt, f.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	f.FinishedAt = fromMicros(finished)
	return &f, nil
}

// scanNode reads the columns nodeCols names.
func scanNode(r rowScanner) (store.Node, error) {
	var (
		n                store.Node
		started, expires int64
		classes          string
	)
	if err := r.Scan(&n.ID, &n.Service, &n.Host, &n.PID, &n.Process, &started, &expires, &n.Address, &classes); err != nil {
		return n, err
	}
	n.StartedAt, n.ExpiresAt = time.UnixMicro(started).UTC(), time.UnixMicro(expires).UTC()
	if err := json.Unmarshal([]byte(classes), &n.AgentClasses); err != nil {
		return n, fmt.Errorf("agent classes of node %q: %w", n.ID, err)
	}
	return n, nil
}

// writeRows runs q, a one-statement write with RETURNING, and returns the
// rows it returned.
func writeRows[T any](ctx context.Context, s *Store, q string, args []any, scan func(rowScanner) (*T, error)) ([]*T, error) {
	var out []*T
	err := s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
		out = nil
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return rows.Close()
	})
	return out, err
}

// exec runs q, a one-statement write, and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, q string, args ...any) (int64, error) {
	var changed int64
	err := s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
		var err error
		changed, err = c.Exec(ctx, q, args...)
		return err
	})
	return changed, err
}

// collect scans every row of rows and closes them.
func collect[T any](rows *sql.Rows, scan func(rowScanner) (*T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, rows.Err()
}

// ActivateAgent implements store.AgentStore.
func (s *Store) ActivateAgent(ctx context.Context, key store.AgentKey, owner string, now time.Time) (*store.Agent, error) {
	if owner == "" {
		return nil, fmt.Errorf("activate agent %s: no owner given", key)
	}
	n := now.UnixMicro()
	for range maxConflictRetries {
		got, err := writeRows(ctx, s, s.aq.activateAgent, []any{key.Class, key.Name, owner, n, n}, scanActivated)
		if err != nil {
			return nil, fmt.Errorf("activate agent %s: %w", key, err)
		}
		if len(got) == 1 {
			return got[0], nil
		}
		node, err := scanNode(s.readRow(ctx, s.aq.ownerNode, key.Class, key.Name))
		if err == nil {
			return nil, &store.AgentOwnedError{Key: key, Node: node}
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("activate agent %s: read its owner: %w", key, err)
		}
		// Its owner released it or lost its node row since: try again.
	}
	return nil, fmt.Errorf("activate agent %s: its owner kept changing", key)
}

// GetAgent implements store.AgentStore.
func (s *Store) GetAgent(ctx context.Context, key store.AgentKey) (*store.Agent, error) {
	a, err := readOne(ctx, s, s.aq.getAgent, []any{key.Class, key.Name}, scanAgent)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get agent %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get agent %s: %w", key, err)
	}
	return a, nil
}

// SaveAgentState implements store.AgentStore.
func (s *Store) SaveAgentState(ctx context.Context, l store.AgentLease, state []byte, now time.Time) error {
	changed, err := s.exec(ctx, s.aq.saveAgentState, blob(state), now.UnixMicro(), l.Class, l.Name, l.Owner, l.Fence)
	if err != nil {
		return fmt.Errorf("save state of agent %s: %w", l.AgentKey, err)
	}
	if changed == 0 {
		return fmt.Errorf("save state of agent %s (owner %s, fence %d): %w", l.AgentKey, l.Owner, l.Fence, store.ErrLeaseLost)
	}
	return nil
}

// ReleaseAgent implements store.AgentStore. Only a first activation's row
// may be deleted (see store.AgentStore.ReleaseAgent for why), so the
// release of any other is the UPDATE alone.
func (s *Store) ReleaseAgent(ctx context.Context, l store.AgentLease, now time.Time) error {
	if l.Fence == 1 {
		dropped, err := s.exec(ctx, s.aq.dropUnusedAgent, l.Class, l.Name, l.Owner, l.Fence)
		if err != nil {
			return fmt.Errorf("release agent %s: %w", l.AgentKey, err)
		}
		if dropped > 0 {
			return nil
		}
	}
	if _, err := s.exec(ctx, s.aq.releaseAgent, now.UnixMicro(), l.Class, l.Name, l.Owner, l.Fence); err != nil {
		return fmt.Errorf("release agent %s: %w", l.AgentKey, err)
	}
	return nil
}

// CreateSchedule implements store.AgentStore.
func (s *Store) CreateSchedule(ctx context.Context, sc *store.Schedule) (*store.Schedule, bool, error) {
	op := fmt.Sprintf("create schedule %s of agent %s", sc.ID, sc.AgentKey)
	if sc.ID == "" || sc.NextRunAt.IsZero() {
		return nil, false, fmt.Errorf("%s: the schedule needs an ID and a NextRunAt", op)
	}
	var interval any
	if sc.Interval != 0 {
		interval = sc.Interval.Microseconds()
	}
	args := []any{sc.ID, sc.Class, sc.Name, sc.Method, blob(sc.Payload), string(sc.Kind), nullString(sc.Cron), interval,
		nullString(sc.IdempotencyKey), sc.NextRunAt.UnixMicro(), sc.CreatedAt.UnixMicro(), nullString(sc.Owner)}
	for range maxConflictRetries {
		got, err := writeRows(ctx, s, s.aq.insertSchedule, args, scanSchedule)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		if len(got) == 1 {
			if sc.Owner == "" && !sc.NextRunAt.After(sc.CreatedAt) {
				s.wake(store.Wake{Kind: store.WakeSchedules, Key: sc.Class})
			}
			return got[0], true, nil
		}
		// Nothing was inserted: the key or the id exists.
		if sc.IdempotencyKey != "" {
			ex, err := readOne(ctx, s, s.aq.scheduleByKey, []any{sc.Class, sc.Name, sc.IdempotencyKey}, scanSchedule)
			if err == nil {
				return ex, false, nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return nil, false, fmt.Errorf("%s: %w", op, err)
			}
		}
		ex, err := readOne(ctx, s, s.aq.scheduleByID, []any{sc.ID}, scanSchedule)
		if err == nil {
			return nil, false, fmt.Errorf("%s: %w (a schedule of agent %s)", op, store.ErrDuplicateID, ex.AgentKey)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		// The schedule in the way was deleted since: try again.
	}
	return nil, false, fmt.Errorf("%s: the schedules in its way kept changing", op)
}

// GetSchedule implements store.AgentStore.
func (s *Store) GetSchedule(ctx context.Context, key store.AgentKey, id string) (*store.Schedule, error) {
	sc, err := readOne(ctx, s, s.aq.getSchedule, []any{id, key.Class, key.Name}, scanSchedule)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get schedule %s of agent %s: %w", id, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get schedule %s of agent %s: %w", id, key, err)
	}
	return sc, nil
}

// ListSchedules implements store.AgentStore.
func (s *Store) ListSchedules(ctx context.Context, key store.AgentKey, f store.ScheduleFilter) ([]store.Schedule, error) {
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if !f.From.IsZero() {
		from = f.From.UnixMicro()
	}
	if !f.To.IsZero() {
		to = f.To.UnixMicro()
	}
	scs, err := readAll(ctx, s, s.aq.listSchedules, []any{key.Class, key.Name, string(f.Kind), string(f.Kind), from, to}, scanSchedule)
	if err != nil {
		return nil, fmt.Errorf("list schedules of agent %s: %w", key, err)
	}
	return scs, nil
}

// DeleteSchedule implements store.AgentStore.
func (s *Store) DeleteSchedule(ctx context.Context, key store.AgentKey, id string) (bool, error) {
	changed, err := s.exec(ctx, s.aq.deleteSchedule, id, key.Class, key.Name)
	if err != nil {
		return false, fmt.Errorf("delete schedule %s of agent %s: %w", id, key, err)
	}
	return changed > 0, nil
}

// ClaimDueSchedules implements store.AgentStore.
func (s *Store) ClaimDueSchedules(ctx context.Context, owner string, classes []string, now time.Time, limit int) ([]*store.Schedule, error) {
	if owner == "" {
		return nil, errors.New("claim due schedules: no owner given")
	}
	n := now.UnixMicro()
	if len(classes) == 0 {
		return nil, nil
	}
	args := append(append([]any{n}, strArgs(classes)...), owner, limit, owner, n)
	got, err := writeRows(ctx, s, s.inList(s.aq.claimSchedules, len(classes)), args, scanSchedule)
	if err != nil {
		return nil, fmt.Errorf("claim due schedules: %w", err)
	}
	// RETURNING gives the rows in no particular order.
	slices.SortFunc(got, func(a, b *store.Schedule) int {
		if c := a.NextRunAt.Compare(b.NextRunAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return got, nil
}

// NextScheduleTimes implements store.AgentStore.
func (s *Store) NextScheduleTimes(ctx context.Context, classes []string, until time.Time, limit int) ([]time.Time, error) {
	if len(classes) == 0 {
		return nil, nil
	}
	args := append(append([]any{until.UnixMicro()}, strArgs(classes)...), limit)
	rows, err := s.readRows(ctx, s.inList(s.aq.nextSchedules, len(classes)), args...)
	if err != nil {
		return nil, fmt.Errorf("next schedule times: %w", err)
	}
	defer rows.Close()
	var ts []time.Time
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("next schedule times: %w", err)
		}
		ts = append(ts, time.UnixMicro(v).UTC())
	}
	return ts, rows.Err()
}

// RescheduleSchedule implements store.AgentStore.
func (s *Store) RescheduleSchedule(ctx context.Context, id, owner string, next time.Time) error {
	if next.IsZero() {
		return fmt.Errorf("reschedule schedule %s: no next run time given", id)
	}
	for range maxConflictRetries {
		changed, err := s.exec(ctx, s.aq.reschedule, next.UnixMicro(), id, owner)
		if err != nil {
			return fmt.Errorf("reschedule schedule %s: %w", id, err)
		}
		if changed > 0 {
			return nil
		}
		cur, err := readOne(ctx, s, s.aq.scheduleByID, []any{id}, scanSchedule)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reschedule schedule %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reschedule schedule %s: %w", id, err)
		}
		if cur.Owner != owner {
			holder := "nobody"
			if cur.Owner != "" {
				holder = cur.Owner
			}
			return fmt.Errorf("reschedule schedule %s of agent %s: claimed by %s, not %s: %w", id, cur.AgentKey, holder, owner, store.ErrLeaseLost)
		}
		// owner claimed it again since: try again.
	}
	return fmt.Errorf("reschedule schedule %s: its claim kept changing", id)
}

// CreateFiber implements store.AgentStore.
func (s *Store) CreateFiber(ctx context.Context, f *store.Fiber) (*store.Fiber, bool, error) {
	op := fmt.Sprintf("create fiber %s of agent %s", f.ID, f.AgentKey)
	if f.ID == "" {
		return nil, false, fmt.Errorf("%s: the fiber needs an ID", op)
	}
	status := f.Status
	if status == "" {
		status = store.FiberPending
	}
	updated := f.UpdatedAt
	if updated.IsZero() {
		updated = f.CreatedAt
	}
	args := []any{f.Class, f.AgentKey.Name, f.ID, f.Name, nullString(f.IdempotencyKey), blob(f.Metadata), string(status),
		blob(f.Stash), nullString(f.Error), nullString(f.Owner), f.CreatedAt.UnixMicro(), updated.UnixMicro(), micros(f.FinishedAt)}
	find := func(q string, arg string) (*store.Fiber, error) {
		ex, err := readOne(ctx, s, q, []any{f.Class, f.AgentKey.Name, arg}, scanFiber)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		return ex, err
	}
	for range maxConflictRetries {
		got, err := writeRows(ctx, s, s.aq.insertFiber, args, scanFiber)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		if len(got) == 1 {
			return got[0], true, nil
		}
		// Nothing was inserted: the id or the key exists.
		byID, err := find(s.aq.getFiber, f.ID)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		var byKey *store.Fiber
		if f.IdempotencyKey != "" {
			if byKey, err = find(s.aq.fiberByKey, f.IdempotencyKey); err != nil {
				return nil, false, fmt.Errorf("%s: %w", op, err)
			}
		}
		switch {
		case byID != nil && byKey != nil && byID.ID != byKey.ID:
			return nil, false, fmt.Errorf("%s: %w, and its idempotency key %q is fiber %s's", op, store.ErrDuplicateID, f.IdempotencyKey, byKey.ID)
		case byID != nil:
			return byID, false, nil
		case byKey != nil:
			return byKey, false, nil
		}
		// The fiber in the way was deleted since: try again.
	}
	return nil, false, fmt.Errorf("%s: the fibers in its way kept changing", op)
}

// GetFiber implements store.AgentStore.
func (s *Store) GetFiber(ctx context.Context, key store.AgentKey, id string) (*store.Fiber, error) {
	f, err := readOne(ctx, s, s.aq.getFiber, []any{key.Class, key.Name, id}, scanFiber)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get fiber %s of agent %s: %w", id, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get fiber %s of agent %s: %w", id, key, err)
	}
	return f, nil
}

// ListFibers implements store.AgentStore.
func (s *Store) ListFibers(ctx context.Context, key store.AgentKey, f store.FiberFilter) ([]store.Fiber, error) {
	args := []any{key.Class, key.Name, string(f.Status), string(f.Status), f.Name, f.Name}
	fs, err := readAll(ctx, s, s.aq.listFibers, args, scanFiber)
	if err != nil {
		return nil, fmt.Errorf("list fibers of agent %s: %w", key, err)
	}
	return fs, nil
}

// ClaimFiber implements store.AgentStore.
func (s *Store) ClaimFiber(ctx context.Context, key store.AgentKey, id, owner string, now time.Time) (*store.Fiber, error) {
	op := fmt.Sprintf("claim fiber %s of agent %s", id, key)
	if owner == "" {
		return nil, fmt.Errorf("%s: no owner given", op)
	}
	for range maxConflictRetries {
		got, err := writeRows(ctx, s, s.aq.claimFiber, []any{owner, now.UnixMicro(), key.Class, key.Name, id}, scanFiber)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if len(got) == 1 {
			return got[0], nil
		}
		cur, err := readOne(ctx, s, s.aq.getFiber, []any{key.Class, key.Name, id}, scanFiber)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%s: %w", op, store.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if cur.Status.Finished() {
			return nil, fmt.Errorf("%s: fiber is %s: %w", op, cur.Status, store.ErrFinished)
		}
		// It was deleted and created again since: try again.
	}
	return nil, fmt.Errorf("%s: the fiber kept changing", op)
}

// UpdateFiber implements store.AgentStore.
func (s *Store) UpdateFiber(ctx context.Context, key store.AgentKey, id, owner string, status store.FiberStatus, errMsg string, now time.Time) error {
	n := now.UnixMicro()
	var newOwner, finished any = owner, nil
	if status.Finished() {
		newOwner, finished = nil, n
	} else if status == store.FiberInterrupted {
		newOwner = nil
	}
	changed, err := s.exec(ctx, s.aq.updateFiber, string(status), nullString(errMsg), newOwner, finished, n, key.Class, key.Name, id, owner)
	if err != nil {
		return fmt.Errorf("update fiber %s of agent %s: %w", id, key, err)
	}
	if changed == 0 {
		return fmt.Errorf("update fiber %s of agent %s: %s does not run it: %w", id, key, owner, store.ErrLeaseLost)
	}
	return nil
}

// StashFiber implements store.AgentStore.
func (s *Store) StashFiber(ctx context.Context, key store.AgentKey, id, owner string, stash []byte, now time.Time) error {
	changed, err := s.exec(ctx, s.aq.stashFiber, blob(stash), now.UnixMicro(), key.Class, key.Name, id, owner)
	if err != nil {
		return fmt.Errorf("stash fiber %s of agent %s: %w", id, key, err)
	}
	if changed == 0 {
		return fmt.Errorf("stash fiber %s of agent %s: %s does not run it: %w", id, key, owner, store.ErrLeaseLost)
	}
	return nil
}

// AbortFiber implements store.AgentStore.
func (s *Store) AbortFiber(ctx context.Context, key store.AgentKey, id string, now time.Time) (store.FiberStatus, error) {
	var prior store.FiberStatus
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		prior = ""
		var (
			status    string
			owner     sql.NullString
			liveOwner int
		)
		err := QueryRow(ctx, tx, s.aq.lockFiber, key.Class, key.Name, id).Scan(&status, &owner, &liveOwner)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("abort fiber %s of agent %s: %w", id, key, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("abort fiber %s of agent %s: %w", id, key, err)
		}
		prior = store.FiberStatus(status)
		if prior.Finished() || liveOwner == 1 {
			return nil // finished already, or its live runner aborts it
		}
		n := now.UnixMicro()
		if _, err := Exec(ctx, tx, s.aq.abortFiber, n, n, key.Class, key.Name, id); err != nil {
			return fmt.Errorf("abort fiber %s of agent %s: %w", id, key, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return prior, nil
}

// DeleteFiber implements store.AgentStore.
func (s *Store) DeleteFiber(ctx context.Context, key store.AgentKey, id string) (bool, error) {
	changed, err := s.exec(ctx, s.aq.deleteFiber, key.Class, key.Name, id)
	if err != nil {
		return false, fmt.Errorf("delete fiber %s of agent %s: %w", id, key, err)
	}
	return changed > 0, nil
}

// InterruptFibers implements store.AgentStore.
func (s *Store) InterruptFibers(ctx context.Context, key store.AgentKey, owner string, now time.Time) ([]store.Fiber, error) {
	got, err := writeRows(ctx, s, s.aq.interruptFibers, []any{now.UnixMicro(), key.Class, key.Name, owner}, scanFiber)
	if err != nil {
		return nil, fmt.Errorf("interrupt fibers of agent %s: %w", key, err)
	}
	fs := make([]store.Fiber, len(got))
	for i, f := range got {
		fs[i] = *f
	}
	// RETURNING gives the rows in no particular order.
	slices.SortFunc(fs, func(a, b store.Fiber) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return fs, nil
}

// OrphanedFiberAgents implements store.AgentStore.
func (s *Store) OrphanedFiberAgents(ctx context.Context, classes []string, limit int) ([]store.AgentKey, error) {
	if len(classes) == 0 {
		return nil, nil
	}
	args := append(strArgs(classes), limit)
	rows, err := s.readRows(ctx, s.inList(s.aq.orphanedFiberAgents, len(classes)), args...)
	if err != nil {
		return nil, fmt.Errorf("find agents with orphaned fibers: %w", err)
	}
	defer rows.Close()
	var keys []store.AgentKey
	for rows.Next() {
		var k store.AgentKey
		if err := rows.Scan(&k.Class, &k.Name); err != nil {
			return nil, fmt.Errorf("find agents with orphaned fibers: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}
