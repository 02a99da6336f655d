package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"agentflow/store"
)

// The list scenario: operators' queries (store.InspectStore) on a table of
// cfg.ListInstances instances.
//
// The instances are inserted by SQL that generates them in the database
// (a recursive CTE on SQLite, generate_series on PostgreSQL), in
// transactions of listChunk rows, through the store's own writer: the
// figures are about reading a large table, not about filling one. Instance
// i is of class cls(i mod 5); its status, from (i div 5) mod 10, is
// complete for half the values and errored, terminated, waiting, running
// and queued for one each, so that every class has every status; two
// instances share each creation time (ties for the keyset). The first
// listDescribed instances also get five steps (the second with one failed
// attempt) and two events, for describe.
//
// On PostgreSQL the fill ends with ANALYZE, which autovacuum would run on a
// real deployment (it is off on the benchmark machine); SQLite is left as a
// deployment leaves it, without statistics.

const (
	listClasses   = 5
	listChunk     = 100_000
	listDescribed = 10_000
	listRounds    = 200 // queries timed per figure
)

// listFilterStatus and listFilterClass are the filtered page's filters:
// 10% of the instances have the status, 20% the class.
const (
	listFilterStatus = store.StatusErrored
	listFilterClass  = "cls3"
)

// listBase is the creation time of instance 0; instance i was created
// (i div 2) milliseconds later.
var listBase = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

func listCreated(i int) time.Time { return listBase.Add(time.Duration(i/2) * time.Millisecond) }

func listID(i int) string { return fmt.Sprintf("i%08d", i) }

// listFillSQL inserts instances ? (from) to ? (to, exclusive): arguments
// from, to, then the base time in microseconds.
func listFillSQL(backend string) string {
	// Columns as the generator computes them from i.
	const pick = `, CASE (i / 5) % 10 WHEN 5 THEN 'errored' WHEN 6 THEN 'terminated' WHEN 7 THEN 'waiting'
     WHEN 8 THEN 'running' WHEN 9 THEN 'queued' ELSE 'complete' END AS status`
	if backend == "postgres" {
		return `INSERT INTO workflow_instances (id, workflow, service, params, status, created_at, updated_at, finished_at, wake_at, fence)
SELECT 'i' || lpad(i::text, 8, '0'), 'cls' || (i % 5), '', '{"n":1}'::bytea, status,
  base + (i / 2) * 1000, base + (i / 2) * 1000 + 1000000,
  CASE WHEN status IN ('complete', 'errored', 'terminated') THEN base + (i / 2) * 1000 + 1000000 END,
  CASE WHEN status IN ('waiting', 'running', 'queued') THEN base + 365 * 86400000000::bigint END, 1
FROM (SELECT i, $3::bigint AS base` + pick + ` FROM generate_series($1::bigint, $2::bigint - 1) AS i) g`
	}
	return `WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?),
 g AS (SELECT i, ? AS base` + pick + ` FROM n)
INSERT INTO workflow_instances (id, workflow, service, params, status, created_at, updated_at, finished_at, wake_at, fence)
SELECT printf('i%08d', i), 'cls' || (i % 5), '', CAST('{"n":1}' AS BLOB), status,
  base + (i / 2) * 1000, base + (i / 2) * 1000 + 1000000,
  CASE WHEN status IN ('complete', 'errored', 'terminated') THEN base + (i / 2) * 1000 + 1000000 END,
  CASE WHEN status IN ('waiting', 'running', 'queued') THEN base + 365 * 86400000000 END, 1
FROM g`
}

// listDetailSQL gives the first n instances their steps, attempts and
// events; each statement takes n.
func listDetailSQL(backend string) []string {
	if backend == "postgres" {
		return []string{
			`INSERT INTO workflow_steps (instance_id, seq, name, occurrence, kind, state, attempt, result, wake_at, updated_at, started_at, attempt_started_at)
SELECT id, s, 'step' || s, 0, 'do', 'done', CASE WHEN s = 1 THEN 2 ELSE 1 END, '"ok"'::bytea, NULL,
  created_at + (s + 1) * 1000, created_at + s * 1000, created_at + s * 1000 + 500
FROM workflow_instances, generate_series(0, 4) AS s WHERE id < 'i' || lpad(($1::bigint)::text, 8, '0')`,
			`INSERT INTO workflow_step_attempts (instance_id, seq, attempt, started_at, ended_at, error_name, error_message)
SELECT id, 1, 1, created_at + 1000, created_at + 1400, 'Flaky', 'try again' FROM workflow_instances WHERE id < 'i' || lpad(($1::bigint)::text, 8, '0')`,
			`INSERT INTO workflow_events (instance_id, type, payload, created_at, consumed, consumed_at)
SELECT id, 'go', '{}'::bytea, created_at + e * 100, 1, created_at + 6000
FROM workflow_instances, generate_series(0, 1) AS e WHERE id < 'i' || lpad(($1::bigint)::text, 8, '0')`,
		}
	}
	return []string{
		`INSERT INTO workflow_steps (instance_id, seq, name, occurrence, kind, state, attempt, result, wake_at, updated_at, started_at, attempt_started_at)
SELECT id, s.v, 'step' || s.v, 0, 'do', 'done', CASE WHEN s.v = 1 THEN 2 ELSE 1 END, CAST('"ok"' AS BLOB), NULL,
  created_at + (s.v + 1) * 1000, created_at + s.v * 1000, created_at + s.v * 1000 + 500
FROM workflow_instances, (SELECT 0 AS v UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) s
WHERE id < printf('i%08d', ?)`,
		`INSERT INTO workflow_step_attempts (instance_id, seq, attempt, started_at, ended_at, error_name, error_message)
SELECT id, 1, 1, created_at + 1000, created_at + 1400, 'Flaky', 'try again' FROM workflow_instances WHERE id < printf('i%08d', ?)`,
		`INSERT INTO workflow_events (instance_id, type, payload, created_at, consumed, consumed_at)
SELECT id, 'go', CAST('{}' AS BLOB), created_at + e.v * 100, 1, created_at + 6000
FROM workflow_instances, (SELECT 0 AS v UNION ALL SELECT 1) e WHERE id < printf('i%08d', ?)`,
	}
}

func (r *runner) list(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()

	n := cfg.ListInstances
	start := time.Now()
	fill := e.d.Rebind(listFillSQL(e.backend))
	for from := 0; from < n; from += listChunk {
		to := min(from+listChunk, n)
		if err := e.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, fill, from, to, listBase.UnixMicro())
			return err
		}); err != nil {
			return nil, fmt.Errorf("fill instances %d to %d: %w", from, to, err)
		}
		r.progress("%d of %d instances after %s", to, n, time.Since(start).Round(time.Millisecond))
	}
	described := min(listDescribed, n)
	for _, q := range listDetailSQL(e.backend) {
		if err := e.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, e.d.Rebind(q), described)
			return err
		}); err != nil {
			return nil, fmt.Errorf("fill steps and events: %w", err)
		}
	}
	if e.backend == "postgres" {
		if _, err := e.read.ExecContext(ctx, `ANALYZE`); err != nil {
			return nil, fmt.Errorf("analyze: %w", err)
		}
	}
	filled := time.Since(start)
	if got, err := e.count(ctx, `SELECT COUNT(*) FROM workflow_instances`); err != nil {
		return nil, err
	} else if got != n {
		return nil, fmt.Errorf("%d instances in the store, want %d", got, n)
	}
	r.progress("filled %d instances (%d described) in %s", n, described, filled.Round(time.Millisecond))

	st := e.st
	rng := rand.New(rand.NewPCG(1, 2))
	// time runs fn listRounds times and returns the sorted latencies (ms).
	time1 := func(what string, fn func() error) ([]float64, error) {
		lat := make([]float64, 0, listRounds)
		for range listRounds {
			t := time.Now()
			if err := fn(); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			lat = append(lat, ms(time.Since(t)))
		}
		slices.Sort(lat)
		r.progress("%s: p50 %.2f ms, p99 %.2f ms", what, percentileSorted(lat, 50), percentileSorted(lat, 99))
		return lat, nil
	}

	page, err := time1("first page", func() error {
		insts, err := st.ListInstances(ctx, store.InstanceFilter{})
		if err == nil && (len(insts) != store.MaxPage || insts[0].ID != listID(n-1)) {
			err = fmt.Errorf("first page has %d instances, the first %s; want %d from %s", len(insts), firstID(insts), store.MaxPage, listID(n-1))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	filtered, err := time1("filtered page deep in the table", func() error {
		// After an instance in the middle half of the table.
		i := n/4 + rng.IntN(max(n/2, 1))
		f := store.InstanceFilter{Statuses: []store.Status{listFilterStatus}, Workflows: []string{listFilterClass},
			After: &store.InstanceCursor{CreatedAt: listCreated(i), ID: listID(i)}}
		insts, err := st.ListInstances(ctx, f)
		if err != nil {
			return err
		}
		if len(insts) != store.MaxPage && i > 10*store.MaxPage*listClasses*10 {
			return fmt.Errorf("page after %s has %d instances, want %d", listID(i), len(insts), store.MaxPage)
		}
		for _, in := range insts {
			if in.Status != listFilterStatus || in.Workflow != listFilterClass || in.ID >= listID(i) {
				return fmt.Errorf("page after %s lists %s (%s, %s)", listID(i), in.ID, in.Workflow, in.Status)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	describe, err := time1("describe", func() error {
		id := listID(rng.IntN(max(described, 1)))
		if _, err := st.GetInstance(ctx, id); err != nil {
			return err
		}
		steps, err := st.ListSteps(ctx, id)
		if err != nil {
			return err
		}
		attempts, err := st.ListStepAttempts(ctx, id)
		if err != nil {
			return err
		}
		events, err := st.ListEvents(ctx, id)
		if err != nil {
			return err
		}
		if described > 0 && (len(steps) != 5 || len(attempts) != 6 || len(events) != 2) {
			return fmt.Errorf("instance %s has %d steps, %d attempts, %d events; want 5, 6, 2", id, len(steps), len(attempts), len(events))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The dashboard's status counts over the whole table: not a target,
	// measured so that its cost is known.
	var counts []float64
	for range 5 {
		t := time.Now()
		c, err := st.CountInstances(ctx, store.InstanceFilter{})
		if err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
		counts = append(counts, ms(time.Since(t)))
		total := 0
		for _, v := range c {
			total += v
		}
		if total != n {
			return nil, fmt.Errorf("counts %v add up to %d, want %d", c, total, n)
		}
	}
	slices.Sort(counts)
	r.progress("count by status: p50 %.1f ms", percentileSorted(counts, 50))

	return []Result{
		metric("list_page_p50_ms", percentileSorted(page, 50), "ms"),
		metric("list_page_p99_ms", percentileSorted(page, 99), "ms"),
		metric("list_filtered_page_p50_ms", percentileSorted(filtered, 50), "ms"),
		metric("list_filtered_page_p99_ms", percentileSorted(filtered, 99), "ms"),
		metric("describe_p50_ms", percentileSorted(describe, 50), "ms"),
		metric("describe_p99_ms", percentileSorted(describe, 99), "ms"),
		metric("count_all_p50_ms", percentileSorted(counts, 50), "ms"),
		metric("fill_s", filled.Seconds(), "s"),
	}, nil
}

func firstID(insts []store.Instance) string {
	if len(insts) == 0 {
		return "none"
	}
	return insts[0].ID
}
