package crashtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Monitor watches a target from the parent: progress while children run,
// and the final check.
type Monitor struct {
	t      Target
	prefix string
	db     *sql.DB
	audit  *auditDB
}

// OpenMonitor opens the engine's database and the audit log of t, which
// must have been prepared (see Prepare). prefix is the instance id prefix
// ("" means "ct").
func OpenMonitor(ctx context.Context, t Target, prefix string) (*Monitor, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	if prefix == "" {
		prefix = "ct"
	}
	db, err := t.openDB(ctx, 2)
	if err != nil {
		return nil, fmt.Errorf("crashtest: monitor: %w", err)
	}
	a, err := openAudit(ctx, t, 2)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("crashtest: monitor: %w", err)
	}
	return &Monitor{t: t, prefix: prefix, db: db, audit: a}, nil
}

// Close closes the monitor's connections.
func (m *Monitor) Close() {
	m.audit.close()
	m.db.Close()
}

// Progress is a snapshot of the instances under the monitor's prefix.
type Progress struct {
	Created  int // instances that exist
	Finished int // complete, errored or terminated
	Complete int
	Errored  int
}

// Progress counts the instances by status.
func (m *Monitor) Progress(ctx context.Context) (Progress, error) {
	var p Progress
	rows, err := m.db.QueryContext(ctx, m.rebind(`SELECT status, COUNT(*) FROM workflow_instances WHERE id LIKE ? GROUP BY status`), m.prefix+"-%")
	if err != nil {
		return p, err
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return p, err
		}
		p.Created += n
		switch status {
		case "complete":
			p.Complete += n
			p.Finished += n
		case "errored":
			p.Errored += n
			p.Finished += n
		case "terminated":
			p.Finished += n
		}
	}
	return p, rows.Err()
}

// Stuck describes, for a failure message, the instances under the
// monitor's prefix that have not finished (up to 10) and the node rows:
// whose claim each is under, when it is due, what it waits for.
func (m *Monitor) Stuck(ctx context.Context) string {
	var b strings.Builder
	rows, err := m.db.QueryContext(ctx, m.rebind(`SELECT id, status, COALESCE(owner, ''), fence, COALESCE(wake_at, 0),
   COALESCE(waiting_event, ''), updated_at FROM workflow_instances
 WHERE id LIKE ? AND status NOT IN ('complete', 'errored', 'terminated') ORDER BY id LIMIT 10`), m.prefix+"-%")
	if err != nil {
		return fmt.Sprintf("\n(unfinished instances not read: %v)", err)
	}
	for rows.Next() {
		var id, status, owner, event string
		var fence, wake, updated int64
		if err := rows.Scan(&id, &status, &owner, &fence, &wake, &event, &updated); err != nil {
			break
		}
		fmt.Fprintf(&b, "\nunfinished: %s status=%s owner=%q fence=%d wake_at=%d waiting_event=%q updated_at=%d",
			id, status, owner, fence, wake, event, updated)
	}
	rows.Close()
	nodes, err := m.db.QueryContext(ctx, `SELECT id, host, pid, expires_at FROM agentflow_nodes ORDER BY id`)
	if err != nil {
		return b.String() + fmt.Sprintf("\n(nodes not read: %v)", err)
	}
	defer nodes.Close()
	for nodes.Next() {
		var id, host string
		var pid, expires int64
		if err := nodes.Scan(&id, &host, &pid, &expires); err != nil {
			break
		}
		fmt.Fprintf(&b, "\nnode: %s host=%s pid=%d expires_at=%d", id, host, pid, expires)
	}
	return b.String()
}

// Executions returns how many step executions the audit log holds.
func (m *Monitor) Executions(ctx context.Context) (int, error) { return m.audit.countExecs(ctx) }

// NodeExists reports whether the engine's node table still has node id.
func (m *Monitor) NodeExists(ctx context.Context, id string) (bool, error) {
	var n int
	err := m.db.QueryRowContext(ctx, m.rebind(`SELECT COUNT(*) FROM agentflow_nodes WHERE id = ?`), id).Scan(&n)
	return n > 0, err
}

// DisguiseNode rewrites node id's host so that other engines on this host
// cannot tell that its process is gone and must wait for its lease to
// expire. It reports whether the node's row was there to rewrite. The
// node's heartbeats only refresh its expiry, so the disguise lasts.
func (m *Monitor) DisguiseNode(ctx context.Context, id string) (bool, error) {
	res, err := m.db.ExecContext(ctx, m.rebind(`UPDATE agentflow_nodes SET host = ? WHERE id = ?`), "elsewhere.invalid", id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (m *Monitor) rebind(q string) string { return m.audit.rebind(q) }

// Report is what Check found.
type Report struct {
	Instances int // expected
	Complete  int // complete with the expected output
	// Lost counts expected instances that are missing, not complete, or
	// complete with another output.
	Lost int
	// Executions counts step attempts started (audit "exec" rows);
	// Keys the distinct step keys executed.
	Executions int
	Keys       int
	// Reexecuted counts keys with an attempt that ran more than once: a
	// step cut off by a crash and run again.
	Reexecuted int
	// DuplicateSteps counts executions of a key recorded after the key's
	// first "returned" or "committed" marker: a returned step ran again.
	DuplicateSteps int
	// BadKeys counts executions whose idempotency key was not
	// "<instance>:<step>:<occurrence>" of that very step.
	BadKeys int
	// BadAttempts counts executions with an unexpected attempt number
	// (1 for every step, 1 failing and 2 succeeding for "flaky").
	BadAttempts int
	// UnexpectedKeys counts executions or effects of steps that no
	// instance has.
	UnexpectedKeys int
	// MissingExecutions counts steps of complete instances that never
	// succeeded according to the log; MissingReturned those with no
	// "returned" marker. Both mean the audit log itself is broken.
	MissingExecutions int
	MissingReturned   int
	// MissingEffects counts steps of complete instances whose effect row
	// is missing. Effects are keyed by idempotency key, so each exists at
	// most once: together with this count it shows exactly once.
	MissingEffects int
	// EffectDedups counts effect inserts that found the effect already
	// applied, i.e. a re-execution the idempotency key made harmless.
	EffectDedups int
	// PIDs counts successful executions per process.
	PIDs map[int]int
	// Problems describes the first few violations.
	Problems []string

	// Filled in by Run.
	Seed     int64
	Kills    int
	Lives    int
	Duration float64 // seconds
}

// Err returns an error describing the contract violations, or nil.
func (r *Report) Err() error {
	var bad []string
	add := func(n int, what string) {
		if n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Lost, "lost instances")
	add(r.DuplicateSteps, "executions of steps that had returned")
	add(r.BadKeys, "executions with a wrong idempotency key")
	add(r.BadAttempts, "executions with a wrong attempt number")
	add(r.UnexpectedKeys, "executions or effects of unknown steps")
	add(r.MissingExecutions, "returned steps with no recorded execution")
	add(r.MissingReturned, "steps of complete instances with no returned marker")
	add(r.MissingEffects, "missing effects")
	if len(bad) == 0 {
		return nil
	}
	msg := "durability contract violated: " + strings.Join(bad, ", ")
	if len(r.Problems) > 0 {
		msg += "\n  " + strings.Join(r.Problems, "\n  ")
	}
	return errors.New(msg)
}

// ExactlyOnceErr returns an error unless every attempt ran exactly once and
// at least min processes did work; for runs without crashes.
func (r *Report) ExactlyOnceErr(minProcs int) error {
	if err := r.Err(); err != nil {
		return err
	}
	if want := r.Instances * (StepsPerInstance + 1); r.Executions != want || r.Reexecuted != 0 || r.EffectDedups != 0 {
		return fmt.Errorf("not exactly once: %d executions for %d instances (want %d), %d keys re-executed, %d effects deduplicated",
			r.Executions, r.Instances, want, r.Reexecuted, r.EffectDedups)
	}
	if len(r.PIDs) < minProcs {
		return fmt.Errorf("only %d process(es) did work (%v), want at least %d", len(r.PIDs), r.PIDs, minProcs)
	}
	return nil
}

// String summarizes the report.
func (r *Report) String() string {
	pids := make([]int, 0, len(r.PIDs))
	for p := range r.PIDs {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	var per []string
	for _, p := range pids {
		per = append(per, fmt.Sprintf("%d:%d", p, r.PIDs[p]))
	}
	s := fmt.Sprintf("instances=%d complete=%d lost=%d executions=%d keys=%d reexecuted=%d duplicate_steps=%d bad_keys=%d bad_attempts=%d missing_effects=%d effect_dedups=%d work_per_pid=[%s]",
		r.Instances, r.Complete, r.Lost, r.Executions, r.Keys, r.Reexecuted, r.DuplicateSteps, r.BadKeys, r.BadAttempts,
		r.MissingEffects, r.EffectDedups, strings.Join(per, " "))
	if r.Lives > 0 {
		s += fmt.Sprintf(" kills=%d lives=%d seed=%d duration=%.1fs", r.Kills, r.Lives, r.Seed, r.Duration)
	}
	return s
}

const maxProblems = 10

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Check checks the durability contract over instances 0 … instances-1.
func (m *Monitor) Check(ctx context.Context, instances int) (*Report, error) {
	r := &Report{Instances: instances, PIDs: make(map[int]int)}

	// Instances.
	type inst struct {
		status string
		output []byte
	}
	got := make(map[string]inst)
	rows, err := m.db.QueryContext(ctx, m.rebind(`SELECT id, status, output FROM workflow_instances WHERE id LIKE ?`), m.prefix+"-%")
	if err != nil {
		return nil, fmt.Errorf("crashtest: check: %w", err)
	}
	for rows.Next() {
		var id, status string
		var out []byte
		if err := rows.Scan(&id, &status, &out); err != nil {
			rows.Close()
			return nil, fmt.Errorf("crashtest: check: %w", err)
		}
		got[id] = inst{status, out}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("crashtest: check: %w", err)
	}
	complete := make(map[string]bool, instances)
	expected := make(map[string]int, instances) // id -> index
	for i := range instances {
		id := InstanceID(m.prefix, i)
		expected[id] = i
		in, ok := got[id]
		switch {
		case !ok:
			r.Lost++
			r.problem("instance %s does not exist", id)
			continue
		case in.status != "complete":
			r.Lost++
			r.problem("instance %s is %s, not complete", id, in.status)
			continue
		}
		var out string
		if err := json.Unmarshal(in.output, &out); err != nil || out != expectedOutput(id) {
			r.Lost++
			r.problem("instance %s output %s, want %q", id, in.output, expectedOutput(id))
			continue
		}
		complete[id] = true
		r.Complete++
	}

	// The log.
	log, err := m.audit.readLog(ctx)
	if err != nil {
		return nil, fmt.Errorf("crashtest: check: read audit log: %w", err)
	}
	known := func(instance, step string, occ int) bool {
		if _, ok := expected[instance]; !ok {
			return false
		}
		for _, s := range doSteps {
			if s.name == step && s.occ == occ {
				return true
			}
		}
		return false
	}
	type attemptKey struct {
		key     string
		attempt int
	}
	firstMarker := make(map[string]int64) // key -> seq of its first returned/committed marker
	returned := make(map[string]bool)
	runs := make(map[attemptKey]int)
	okRuns := make(map[string]int)
	keys := make(map[string]bool)
	reexec := make(map[string]bool)
	for _, row := range log {
		key := idemKey(row.Instance, row.Step, row.Occurrence)
		switch row.Kind {
		case kindReturned, kindCommitted:
			if _, ok := firstMarker[key]; !ok {
				firstMarker[key] = row.Seq
			}
			if row.Kind == kindReturned {
				returned[key] = true
			}
		case kindDedup:
			r.EffectDedups++
		case kindExec:
			r.Executions++
			if !known(row.Instance, row.Step, row.Occurrence) {
				r.UnexpectedKeys++
				r.problem("execution of unknown step %s", key)
				continue
			}
			keys[key] = true
			if row.Key != key {
				r.BadKeys++
				r.problem("execution of %s carried idempotency key %q", key, row.Key)
			}
			wantAttempt := 1
			if row.Step == "flaky" && row.OK {
				wantAttempt = 2
			}
			if row.Attempt != wantAttempt {
				r.BadAttempts++
				r.problem("execution of %s (ok=%v) was attempt %d, want %d", key, row.OK, row.Attempt, wantAttempt)
			}
			if seq, ok := firstMarker[key]; ok {
				r.DuplicateSteps++
				r.problem("step %s ran again (log seq %d, pid %d, attempt %d) after it returned or committed (log seq %d)", key, row.Seq, row.PID, row.Attempt, seq)
			}
			ak := attemptKey{key, row.Attempt}
			runs[ak]++
			if runs[ak] == 2 {
				reexec[key] = true
			}
			if row.OK {
				okRuns[key]++
				r.PIDs[row.PID]++
			}
		}
	}
	r.Keys = len(keys)
	r.Reexecuted = len(reexec)

	// Effects.
	effects, err := m.audit.readEffects(ctx)
	if err != nil {
		return nil, fmt.Errorf("crashtest: check: read effects: %w", err)
	}
	for k, instance := range effects {
		step, occ, ok := splitKey(k, instance)
		if !ok || !known(instance, step, occ) {
			r.UnexpectedKeys++
			r.problem("effect under unknown key %q", k)
		}
	}
	for id := range complete {
		for _, s := range doSteps {
			key := idemKey(id, s.name, s.occ)
			if okRuns[key] == 0 {
				r.MissingExecutions++
				r.problem("step %s of complete instance has no successful execution in the log", key)
			}
			if !returned[key] {
				r.MissingReturned++
				r.problem("step %s of complete instance has no returned marker", key)
			}
			if _, ok := effects[key]; !ok {
				r.MissingEffects++
				r.problem("step %s of complete instance has no effect", key)
			}
		}
	}
	return r, nil
}

// splitKey splits "<instance>:<step>:<occurrence>" knowing the instance.
func splitKey(key, instance string) (step string, occ int, ok bool) {
	rest, found := strings.CutPrefix(key, instance+":")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", 0, false
	}
	if _, err := fmt.Sscanf(rest[i+1:], "%d", &occ); err != nil {
		return "", 0, false
	}
	return rest[:i], occ, true
}

// Check opens a monitor on t, checks instances 0 … instances-1 under
// prefix, and closes it.
func Check(ctx context.Context, t Target, prefix string, instances int) (*Report, error) {
	m, err := OpenMonitor(ctx, t, prefix)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.Check(ctx, instances)
}
