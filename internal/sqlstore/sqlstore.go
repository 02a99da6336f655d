// Package sqlstore implements store.Store over database/sql once, for every
// SQL engine agentflow supports. The engines differ in a Dialect (placeholder
// syntax, row locking, migration locking) and in how writes reach the
// database (a Writer: for SQLite a GroupCommitter, which commits the writes
// queued meanwhile in one transaction; for PostgreSQL the store's pipeline,
// which sends one-statement writes in groups, each one pgx batch in one
// implicit transaction, and runs a multi-statement write in a transaction of
// its own).
//
// Times are stored as microseconds since the Unix epoch in integer columns,
// so both engines compare and shift them the same way.
package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"agentflow/internal/wakebus"
	"agentflow/store"
)

// Dialect is what differs between SQL engines.
type Dialect struct {
	Name string
	// Numbered reports whether placeholders are $1, $2, … rather than ?.
	Numbered bool
	// ForUpdate locks the rows a SELECT reads until the transaction ends
	// (" FOR UPDATE"); empty where transactions are serialized anyway.
	ForUpdate string
	// SkipLocked makes a locking SELECT skip rows other transactions hold
	// (" FOR UPDATE SKIP LOCKED"); empty where transactions are serialized.
	SkipLocked string
	// MigrationLock, when set, is run first in the migration transaction so
	// that processes starting together migrate one at a time.
	MigrationLock string
	// WritableCTEs reports data-modifying statements in WITH (PostgreSQL).
	// With them a fenced write and its step row are one statement (see
	// withStep), which the Writer runs as a one-statement write (WriteOne)
	// rather than in a transaction of its own.
	WritableCTEs bool
	// Serialized reports that write transactions run one at a time
	// (SQLite): a read inside one sees the rows as they will be at commit,
	// so a fence can be checked without rewriting the instance row.
	Serialized bool
	// JSON is the engine's set of JSON functions, which the metadata
	// filter of ListAgentWorkflows uses.
	JSON JSONFunctions
	// AgentLock, when set, is a statement that locks one agent until the
	// transaction ends, given its class and name as arguments (with ?
	// placeholders). A Think agent's writes that number rows (max + 1)
	// take it first; it is empty where write transactions are serialized.
	AgentLock string
}

// JSONFunctions names an engine's set of JSON functions.
type JSONFunctions int

const (
	// JSONSQLite: json_type, json_extract and ->, with paths $."key"
	// (SQLite 3.45 or later, whose paths take backslash escapes).
	JSONSQLite JSONFunctions = iota
	// JSONPostgres: the json type's json_typeof, -> and ->>.
	JSONPostgres
)

// Rebind rewrites ? placeholders for the dialect. Queries must not contain
// a literal question mark.
func (d *Dialect) Rebind(q string) string {
	if !d.Numbered {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Store implements store.Store.
type Store struct {
	d      *Dialect
	w      Writer
	read   *sql.DB
	rstmts readStmts // statements prepared on read (readPrepared)
	closer func() error
	q      queries
	aq     agentQueries         // see agents.go
	wq     agentWorkflowQueries // see agentworkflows.go
	tq     thinkQueries         // see think.go
	wakes  *wakebus.Bus         // nil: no wakes; see wakes.go
}

// Config assembles a Store.
type Config struct {
	Dialect *Dialect
	Writer  Writer
	// Read serves queries outside write transactions.
	Read *sql.DB
	// Close releases the databases after the writer is closed.
	Close func() error
	// Wakes, when set, is told what each committed write made due.
	Wakes *wakebus.Bus
}

// New returns a Store over already migrated databases.
func New(c Config) *Store {
	return &Store{d: c.Dialect, w: c.Writer, read: c.Read, closer: c.Close,
		q: newQueries(c.Dialect), aq: newAgentQueries(c.Dialect), wq: newAgentWorkflowQueries(c.Dialect),
		tq: newThinkQueries(c.Dialect), wakes: c.Wakes}
}

var _ store.Store = (*Store)(nil)

// Writer exposes the store's write path, for measuring the engine's own
// limit with the same group commit the store uses.
func (s *Store) Writer() Writer { return s.w }

// Dialect returns the store's SQL dialect.
func (s *Store) Dialect() *Dialect { return s.d }

// ReadDB returns the pool that serves queries outside write transactions.
func (s *Store) ReadDB() *sql.DB { return s.read }

// Close implements store.Store.
func (s *Store) Close() error {
	err := errors.Join(s.rstmts.close(), s.w.Close())
	if s.closer != nil {
		err = errors.Join(err, s.closer())
	}
	return err
}

const instanceCols = `id, workflow, service, params, status, error_name, error_message, output,
 created_at, updated_at, finished_at, wake_at, waiting_event, paused_at, owner, fence, origin_class, origin_name,
 restarts, trace_parent`

const stepCols = `seq, name, occurrence, kind, state, attempt, result, error_name, error_message, wake_at, updated_at`

// stepWriteCols are the columns a step write fills (stepArgs): stepCols,
// the step's start and the checkpointed attempt's start.
const stepWriteCols = stepCols + `, started_at, attempt_started_at`

// attemptCols are the columns of a failed attempt's row (attemptArgs).
const attemptCols = `instance_id, seq, attempt, started_at, ended_at, error_name, error_message`

// attemptConflict makes a failed attempt written again (a retried write)
// replace its row.
const attemptConflict = `
 ON CONFLICT (instance_id, seq, attempt) DO UPDATE SET started_at = excluded.started_at, ended_at = excluded.ended_at,
   error_name = excluded.error_name, error_message = excluded.error_message`

type queries struct {
	insertInstance, getInstance, listSteps, listEvents      string
	listStepsOf                                             string
	claimDue, nextWake, upsertStep, insertAttempt           string
	fence, fenceRead, suspend                               fencedQuery
	oldestEvent, consumeEvent, wakeIfEvent                  string
	peekEvent                                               string
	finish, lockInstance, insertEvent, wakeForEvent         string
	finishNotice, insertNotice                              string
	pauseRequest, pauseNow, cancelPause, resume, shiftSteps string
	terminate, deleteSteps, deleteConsumed, restart         string
	deleteAttempts                                          string
	markRunning, fencedStep, finishNoOrigin, fencedOrigin   string
	finishedIDs, heartbeat, listNodes, deleteNode           string
	advertise                                               string
	releasePausing, releaseOwned, orphanOwners              string
}

func newQueries(d *Dialect) queries {
	r := d.Rebind
	q := queries{
		insertInstance: r(insertInstanceSQL),
		getInstance:    r(`SELECT ` + instanceCols + ` FROM workflow_instances WHERE id = ?`),
		listSteps:      r(`SELECT ` + stepCols + `, started_at FROM workflow_steps WHERE instance_id = ? ORDER BY seq`),
		listStepsOf:    r(listStepsOfSQL(d)),
		listEvents:     r(`SELECT seq, type, payload, created_at, consumed, consumed_at FROM workflow_events WHERE instance_id = ? ORDER BY seq`),
		claimDue: r(`UPDATE workflow_instances
 SET owner = ?, fence = fence + 1, wake_at = NULL, waiting_event = NULL, updated_at = ?,
     status = CASE WHEN status IN ('queued', 'waiting') THEN 'running' ELSE status END
 WHERE id IN (SELECT id FROM workflow_instances
              WHERE service = ? AND wake_at IS NOT NULL AND wake_at <= ?
              ORDER BY wake_at LIMIT ?` + d.SkipLocked + `)
   AND wake_at IS NOT NULL AND wake_at <= ?
 RETURNING ` + instanceCols),
		nextWake: r(`SELECT wake_at FROM workflow_instances
 WHERE service = ? AND wake_at IS NOT NULL AND wake_at <= ? ORDER BY wake_at LIMIT ?`),
		fenceRead:   newFencedQuery(d, `SELECT status FROM workflow_instances WHERE `+fencedRow),
		markRunning: r(`UPDATE workflow_instances SET status = 'running', updated_at = ? WHERE id = ?`),
		fencedStep:  fencedStepSQL(d),
		fence: newFencedQuery(d, `UPDATE workflow_instances
 SET status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, updated_at = ?
 WHERE `+fencedRow+` RETURNING status`),
		upsertStep: r(`INSERT INTO workflow_steps (instance_id, ` + stepWriteCols + `)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)` + stepConflict),
		insertAttempt: r(`INSERT INTO workflow_step_attempts (` + attemptCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)` + attemptConflict),
		oldestEvent:   r(`SELECT seq, payload, created_at FROM workflow_events WHERE instance_id = ? AND type = ? AND consumed = 0 ORDER BY seq LIMIT 1`),
		consumeEvent:  r(`UPDATE workflow_events SET consumed = 1, consumed_at = ? WHERE seq = ?`),
		// TakeEvent's first look, a read: the claim, and whether an event
		// of the type waits.
		peekEvent: r(`SELECT owner, fence, EXISTS (SELECT 1 FROM workflow_events e
   WHERE e.instance_id = i.id AND e.type = ? AND e.consumed = 0)
 FROM workflow_instances i WHERE i.id = ?`),
		// SET expressions see the row as it was, so every CASE asks whether
		// a pause was pending (or is being forced) before this write. The
		// casts give PostgreSQL a type for CASE branches that are only a
		// parameter and NULL, which it would otherwise take for text.
		suspend: newFencedQuery(d, `UPDATE workflow_instances SET
   status         = CASE WHEN status = 'waitingForPause' OR ? = 1 THEN 'paused' ELSE ? END,
   prior_status   = CASE WHEN status = 'waitingForPause' OR ? = 1 THEN ? ELSE NULL END,
   paused_at      = CASE WHEN status = 'waitingForPause' OR ? = 1 THEN CAST(? AS BIGINT) ELSE NULL END,
   paused_wake_at = CASE WHEN status = 'waitingForPause' OR ? = 1 THEN CAST(? AS BIGINT) ELSE NULL END,
   wake_at        = CASE WHEN status = 'waitingForPause' OR ? = 1 THEN NULL ELSE CAST(? AS BIGINT) END,
   waiting_event = ?, owner = NULL, updated_at = ?
 WHERE `+fencedRow+` RETURNING status`),
		wakeIfEvent: r(`UPDATE workflow_instances SET wake_at = ?
 WHERE id = ? AND ` + notIndexed("status") + ` = 'waiting' AND owner IS NULL
   AND EXISTS (SELECT 1 FROM workflow_events WHERE instance_id = ? AND type = ? AND consumed = 0)
 RETURNING service`),
		finishNotice: finishNotice(d),
		lockInstance: r(`SELECT status, owner, waiting_event, service FROM workflow_instances WHERE id = ?` + d.ForUpdate),
		insertEvent:  r(`INSERT INTO workflow_events (instance_id, type, payload, created_at) VALUES (?, ?, ?, ?)`),
		wakeForEvent: r(`UPDATE workflow_instances SET wake_at = ? WHERE id = ?`),
		pauseRequest: r(`UPDATE workflow_instances SET status = 'waitingForPause', updated_at = ? WHERE id = ?`),
		pauseNow: r(`UPDATE workflow_instances SET prior_status = status, status = 'paused', paused_at = ?,
   paused_wake_at = wake_at, wake_at = NULL, updated_at = ? WHERE id = ?`),
		cancelPause: r(`UPDATE workflow_instances SET status = 'running', updated_at = ? WHERE id = ?`),
		// A paused suspension may carry no wake time: it is due on resuming.
		resume: r(`UPDATE workflow_instances SET status = COALESCE(prior_status, 'running'),
   wake_at = CASE WHEN ? = 1 THEN ? ELSE COALESCE(paused_wake_at, paused_at) + (? - paused_at) END,
   prior_status = NULL, paused_at = NULL, paused_wake_at = NULL, updated_at = ?
 WHERE id = ? RETURNING wake_at`),
		shiftSteps: r(`UPDATE workflow_steps SET wake_at = wake_at + ?
 WHERE instance_id = ? AND state = 'pending' AND wake_at IS NOT NULL AND wake_at > ?`),
		terminate: r(`UPDATE workflow_instances SET status = 'terminated', finished_at = ?, updated_at = ?,
   owner = NULL, fence = fence + 1, wake_at = NULL, waiting_event = NULL,
   prior_status = NULL, paused_at = NULL, paused_wake_at = NULL WHERE id = ?`),
		deleteSteps:    r(`DELETE FROM workflow_steps WHERE instance_id = ?`),
		deleteAttempts: r(`DELETE FROM workflow_step_attempts WHERE instance_id = ?`),
		deleteConsumed: r(`DELETE FROM workflow_events WHERE instance_id = ? AND consumed = 1`),
		restart: r(`UPDATE workflow_instances SET status = 'queued', output = NULL, error_name = NULL, error_message = NULL,
   finished_at = NULL, updated_at = ?, owner = NULL, fence = fence + 1, restarts = restarts + 1, wake_at = ?, waiting_event = NULL,
   prior_status = NULL, paused_at = NULL, paused_wake_at = NULL WHERE id = ?`),
		finishedIDs: r(`SELECT id FROM workflow_instances WHERE finished_at IS NOT NULL AND finished_at < ?
 ORDER BY finished_at LIMIT ?` + d.SkipLocked),
		heartbeat: r(`INSERT INTO agentflow_nodes (id, service, host, pid, process, started_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at`),
		listNodes:  `SELECT id, service, host, pid, process, started_at, expires_at, address, agent_classes FROM agentflow_nodes ORDER BY started_at`,
		advertise:  r(`UPDATE agentflow_nodes SET address = ?, agent_classes = ? WHERE id = ?`),
		deleteNode: r(`DELETE FROM agentflow_nodes WHERE id = ?`),
		releasePausing: r(`UPDATE workflow_instances SET status = 'paused', prior_status = 'running', paused_at = ?,
   paused_wake_at = ?, wake_at = NULL, owner = NULL, updated_at = ? WHERE owner = ? AND status = 'waitingForPause'`),
		releaseOwned: r(`UPDATE workflow_instances SET owner = NULL, wake_at = ?, updated_at = ? WHERE owner = ?`),
		orphanOwners: `SELECT DISTINCT owner FROM workflow_instances
 WHERE owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM agentflow_nodes WHERE agentflow_nodes.id = workflow_instances.owner)`,
	}
	if q.finishNotice == "" {
		// Finish as plain statements (see finishNoOrigin).
		q.finish, q.finishNoOrigin, q.fencedOrigin = r(finishUpdate), r(finishNoOrigin), r(fencedOrigin)
		q.insertNotice = r(`INSERT INTO agent_schedules (` + noticeCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	}
	return q
}

// fencedRow is the condition of a fenced read or write of one instance
// row, given its id, owner and fence. The owner is compared as an
// expression, which no index covers, so that the primary key is the only
// index a plan can take: PostgreSQL, planning a prepared statement (pgx
// prepares each one per connection) on tables autovacuum has not analyzed,
// was seen taking workflow_instances_owner instead, in some connections of
// some runs, which reads the entries of every instance the node owns for
// each write (BENCHMARKS.md, "PostgreSQL plans").
const fencedRow = `id = ? AND (owner || '') = ? AND fence = ?`

// notIndexed is col as an expression no index covers, for a statement that
// finds its row by primary key and must not be planned through an index on
// col (see fencedRow): an instance's status, for one, leads
// workflow_instances_status_created, through which a lookup of a waiting
// instance would read the entries of every waiting instance.
func notIndexed(col string) string { return "(" + col + " || '')" }

// finishUpdate records an outcome, fenced.
const finishUpdate = `UPDATE workflow_instances SET status = ?, output = ?, error_name = ?, error_message = ?,
   finished_at = ?, updated_at = ?, owner = NULL, wake_at = NULL, waiting_event = NULL,
   prior_status = NULL, paused_at = NULL, paused_wake_at = NULL
 WHERE ` + fencedRow

// Where there are no data-modifying CTEs (finishNotice), Finish is plain
// statements rather than an UPDATE … RETURNING, which is a query: SQLite
// answers it through a temporary table and database/sql through a Rows,
// together as much work as the UPDATE itself. finishNoOrigin finishes an
// instance without an origin agent, the common case, in one statement; when
// it changes nothing, fencedOrigin tells a lost lease from an origin to
// notify, and finishUpdate and insertNotice follow. An instance's origin
// never changes, and the fence makes the UPDATE fail if the claim went
// meanwhile.
const (
	finishNoOrigin = finishUpdate + ` AND origin_class IS NULL`
	fencedOrigin   = `SELECT origin_class, origin_name FROM workflow_instances WHERE ` + fencedRow
)

// noticeCols are the columns of the finish notice (store.FinishedNoticeID):
// id, class, name, method, payload, kind, idempotency key, next run, created.
const noticeCols = `id, class, name, method, payload, kind, idempotency_key, next_run_at, created_at`

// finishNotice is, on dialects with data-modifying CTEs, finishUpdate and
// the insert of the origin agent's finish notice as one statement, which
// takes noticeArgs' arguments after finishUpdate's (the notice's class and
// name come from the updated row) and returns the origin; "" elsewhere. The
// insert reads the UPDATE's RETURNING row, so it writes nothing when the
// fence did not match or the instance has no origin.
func finishNotice(d *Dialect) string {
	if !d.WritableCTEs {
		return ""
	}
	return d.Rebind(`WITH f AS (` + finishUpdate + ` RETURNING origin_class, origin_name),
 n AS (INSERT INTO agent_schedules (` + noticeCols + `)
   SELECT ?, origin_class, origin_name, ?, ?, ?, ?, ?, ? FROM f WHERE origin_class IS NOT NULL
   ON CONFLICT DO NOTHING)
SELECT origin_class, origin_name FROM f`)
}

// noticeArgs are the arguments of the finish notice of instance id due at
// now, but its class and name: those of insertNotice after them, or of
// finishNotice.
func noticeArgs(id string, now int64) ([]any, error) {
	payload, err := json.Marshal(struct {
		InstanceID string `json:"instanceId"`
	}{id})
	if err != nil {
		return nil, err
	}
	nid := store.FinishedNoticeID(id)
	return []any{nid, store.WorkflowFinishedMethod, payload, string(store.ScheduleDelayed), nid, now, now}, nil
}

// originArgs are the origin_class and origin_name of an instance: NULL for
// none.
func originArgs(k store.AgentKey) (any, any) {
	if k == (store.AgentKey{}) {
		return nil, nil
	}
	return k.Class, k.Name
}

// stepConflict makes an insert of a step row replace the row at its seq.
const stepConflict = `
 ON CONFLICT (instance_id, seq) DO UPDATE SET name = excluded.name, occurrence = excluded.occurrence,
   kind = excluded.kind, state = excluded.state, attempt = excluded.attempt, result = excluded.result,
   error_name = excluded.error_name, error_message = excluded.error_message, wake_at = excluded.wake_at,
   updated_at = excluded.updated_at, started_at = COALESCE(workflow_steps.started_at, excluded.started_at),
   attempt_started_at = excluded.attempt_started_at`

// fencedQuery is a fenced UPDATE of one instance row … RETURNING status
// (update), and, on dialects with data-modifying CTEs, the same UPDATE and
// the upsert of a step row as one statement (withStep; "" elsewhere), and
// that statement also inserting a failed attempt's row (withAttempt).
type fencedQuery struct{ update, withStep, withAttempt string }

func newFencedQuery(d *Dialect, update string) fencedQuery {
	f := fencedQuery{update: d.Rebind(update)}
	if d.WritableCTEs {
		f.withStep = d.Rebind(withStep(update, false))
		f.withAttempt = d.Rebind(withStep(update, true))
	}
	return f
}

// single reports whether applying f, with a step row or not, is one statement.
func (f fencedQuery) single(step bool) bool { return !step || f.withStep != "" }

// withStep makes update (a fenced UPDATE of one instance row … RETURNING
// status, with ? placeholders) also upsert a step row, in one statement that
// takes stepArgs after update's arguments and returns the status.
//
// The INSERT reads the UPDATE's RETURNING row, so it writes nothing unless
// the UPDATE matched, and only once the UPDATE holds the instance row's
// lock: PostgreSQL checks an UPDATE's WHERE (the fence) on the newest
// version of the row, after waiting for any transaction that holds it. A
// Terminate or Restart (which lock the row) that commits first has moved the
// fence, so the UPDATE matches nothing and no step lands after Restart
// deleted the steps; one that comes second waits for the transaction of
// this statement to commit, and Restart's DELETE (a later statement, with a
// newer snapshot) then sees the new step and deletes it. That is the order
// the two statements in one transaction give on the other dialects.
//
// The other parts of one statement share one snapshot taken before that
// lock is granted, so a condition on other rows (Suspend's look for a
// buffered event) cannot join the UPDATE this way; see Suspend.
//
// With attempt, the statement also inserts a failed attempt's row, taking
// attemptArgs after stepArgs, in the same way.
func withStep(update string, attempt bool) string {
	q := `WITH f AS (` + update + `),
 s AS (INSERT INTO workflow_steps (instance_id, ` + stepWriteCols + `)
   SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM f` + stepConflict + `)`
	if attempt {
		q += `,
 a AS (INSERT INTO workflow_step_attempts (` + attemptCols + `)
   SELECT ?, ?, ?, ?, ?, ?, ? FROM f` + attemptConflict + `)`
	}
	return q + `
SELECT status FROM f`
}

// fencedStepSQL is, where write transactions are serialized, a step
// checkpoint's fence check and step upsert as one statement; "" elsewhere.
// It takes stepArgs and then the lease's id, owner and fence, and writes the
// step only if the fence matches and the instance is running: one row
// changed means the instance's status is running. Otherwise it writes
// nothing, and the two-statement path (a read of the fence, then the
// upsert) tells a lost lease from a queued instance (which it marks
// running) or a pending pause. Serialized, the statement's read of the
// instance row sees it as it will be at commit (see Dialect.Serialized).
// There is no RETURNING: SQLite would buffer its rows in a temporary table,
// which costs as much as the read it saves.
func fencedStepSQL(d *Dialect) string {
	if !d.Serialized {
		return ""
	}
	// The WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.
	return d.Rebind(`INSERT INTO workflow_steps (instance_id, ` + stepWriteCols + `)
 SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM workflow_instances
 WHERE id = ? AND owner = ? AND fence = ? AND status = 'running'` + stepConflict)
}

// micros converts a time to the stored form; the zero time is NULL.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// blob keeps an empty result distinguishable from none: JSON is never empty.
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

type rowScanner interface{ Scan(dest ...any) error }

func scanInstance(r rowScanner) (*store.Instance, error) {
	var (
		in                             store.Instance
		status                         string
		errName, errMsg, waitEv, owner sql.NullString
		originClass, originName        sql.NullString
		traceParent                    sql.NullString
		created, updated               int64
		finished, wake, paused         sql.NullInt64
	)
	if err := r.Scan(&in.ID, &in.Workflow, &in.Service, &in.Params, &status, &errName, &errMsg, &in.Output,
		&created, &updated, &finished, &wake, &waitEv, &paused, &owner, &in.Fence, &originClass, &originName,
		&in.Restarts, &traceParent); err != nil {
		return nil, err
	}
	in.TraceParent = traceParent.String
	in.Origin = store.AgentKey{Class: originClass.String, Name: originName.String}
	in.Status = store.Status(status)
	in.ErrorName, in.ErrorMessage = errName.String, errMsg.String
	in.CreatedAt = time.UnixMicro(created).UTC()
	in.UpdatedAt = time.UnixMicro(updated).UTC()
	in.FinishedAt, in.WakeAt, in.PausedAt = fromMicros(finished), fromMicros(wake), fromMicros(paused)
	in.WaitingEvent, in.Owner = waitEv.String, owner.String
	return &in, nil
}

func scanStep(r rowScanner) (store.Step, error) {
	var (
		st              store.Step
		kind, state     string
		errName, errMsg sql.NullString
		wake, started   sql.NullInt64
		updated         int64
	)
	if err := r.Scan(&st.Seq, &st.Name, &st.Occurrence, &kind, &state, &st.Attempt, &st.Result,
		&errName, &errMsg, &wake, &updated, &started); err != nil {
		return st, err
	}
	st.Kind, st.State = store.StepKind(kind), store.StepState(state)
	st.ErrorName, st.ErrorMessage = errName.String, errMsg.String
	st.WakeAt, st.UpdatedAt = fromMicros(wake), time.UnixMicro(updated).UTC()
	st.StartedAt = fromMicros(started)
	return st, nil
}

// stepStart is when the attempt (or the sleep or wait) a step write
// checkpoints started: the step's StartedAt, or now when it has none.
func stepStart(s store.Step, now time.Time) int64 {
	if s.StartedAt.IsZero() {
		return now.UnixMicro()
	}
	return s.StartedAt.UnixMicro()
}

func stepArgs(id string, s store.Step, now time.Time) []any {
	start := stepStart(s, now)
	return []any{id, s.Seq, s.Name, s.Occurrence, string(s.Kind), string(s.State), s.Attempt, blob(s.Result),
		nullString(s.ErrorName), nullString(s.ErrorMessage), micros(s.WakeAt), now.UnixMicro(), start, start}
}

// failedAttempt reports the number of the attempt a step write records as
// failed: a Do checkpointed with an error, pending its next attempt
// (Attempt is then the next one's number) or failed for good.
func failedAttempt(s *store.Step) (int, bool) {
	if s == nil || s.Kind != store.KindDo || s.ErrorName == "" {
		return 0, false
	}
	switch s.State {
	case store.StepPending:
		return s.Attempt - 1, s.Attempt > 1
	case store.StepFailed:
		return s.Attempt, true
	}
	return 0, false
}

// attemptArgs are insertAttempt's arguments for the failed attempt n that
// step write s records.
func attemptArgs(id string, s store.Step, n int, now time.Time) []any {
	return []any{id, s.Seq, n, stepStart(s, now), now.UnixMicro(), s.ErrorName, nullString(s.ErrorMessage)}
}

// write runs fn as one atomic write: through the Writer's WriteOne when fn
// runs a single statement (one), else in a transaction.
func (s *Store) write(ctx context.Context, one bool, fn StmtFunc) error {
	if one {
		return s.w.WriteOne(ctx, fn)
	}
	return s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error { return fn(ctx, TxConn(tx)) })
}

// queryRow runs q on c and scans its first row into dest, or returns
// sql.ErrNoRows. Like sql.Row, it reads the result to its end, so that an
// error there (a failed commit) is not missed.
func queryRow(ctx context.Context, c Conn, q string, args []any, dest ...any) error {
	rows, err := c.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// CreateInstances implements store.Store.
func (s *Store) CreateInstances(ctx context.Context, insts []*store.Instance) error {
	// One instance is one INSERT, which inserts nothing when the id exists;
	// a batch needs the transaction to insert none when one id exists.
	err := s.write(ctx, len(insts) == 1, func(ctx context.Context, c Conn) error {
		for _, in := range insts {
			if err := s.insertInstance(ctx, c, in); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.wakeQueued(insts...)
	}
	return err
}

// insertInstanceSQL inserts an instance with insertInstanceArgs, and
// nothing when the id is taken.
const insertInstanceSQL = `INSERT INTO workflow_instances (id, workflow, service, params, status, created_at, updated_at, wake_at, owner, fence,
   origin_class, origin_name, trace_parent)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`

// insertInstanceArgs are insertInstanceSQL's arguments for in, and the
// fence it gets: 1 when it has an Owner.
func insertInstanceArgs(in *store.Instance) ([]any, int64) {
	var fence int64
	if in.Owner != "" {
		fence = 1
	}
	oc, on := originArgs(in.Origin)
	return []any{in.ID, in.Workflow, in.Service, blob(in.Params),
		string(in.Status), in.CreatedAt.UnixMicro(), in.CreatedAt.UnixMicro(), micros(in.WakeAt),
		nullString(in.Owner), fence, oc, on, nullString(in.TraceParent)}, fence
}

// insertInstance inserts one instance, claimed with fence 1 when it has an
// Owner, or fails with ErrDuplicateID.
func (s *Store) insertInstance(ctx context.Context, c Conn, in *store.Instance) error {
	args, fence := insertInstanceArgs(in)
	n, err := c.Exec(ctx, s.q.insertInstance, args...)
	if err != nil {
		return fmt.Errorf("create instance %q: %w", in.ID, err)
	}
	if n == 0 {
		return &store.InstanceError{ID: in.ID, Op: "create", Err: store.ErrDuplicateID}
	}
	in.Fence = fence
	return nil
}

// GetInstance implements store.Store.
func (s *Store) GetInstance(ctx context.Context, id string) (*store.Instance, error) {
	in, err := scanInstance(s.readRow(ctx, s.q.getInstance, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, &store.InstanceError{ID: id, Op: "get", Err: store.ErrNotFound}
	}
	if err != nil {
		return nil, fmt.Errorf("get instance %q: %w", id, err)
	}
	return in, nil
}

// ListSteps implements store.Store.
func (s *Store) ListSteps(ctx context.Context, id string) ([]store.Step, error) {
	rows, err := s.readRows(ctx, s.q.listSteps, id)
	if err != nil {
		return nil, fmt.Errorf("list steps of %q: %w", id, err)
	}
	defer rows.Close()
	var steps []store.Step
	for rows.Next() {
		st, err := scanStep(rows)
		if err != nil {
			return nil, fmt.Errorf("list steps of %q: %w", id, err)
		}
		steps = append(steps, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list steps of %q: %w", id, err)
	}
	return steps, nil
}

// listStepsOfSQL reads the steps of the instances whose ids its one
// argument (idListArg) lists, each instance's ordered by seq. One argument
// keeps the statement's text the same for any number of ids, so it is
// prepared once.
//
// On PostgreSQL the ids are an array, unnested and joined to a subquery per
// id that its ORDER BY keeps from being flattened into a join: each id is
// then a lookup in workflow_steps' primary key, in every plan. The plain
// instance_id = ANY($1) got a sequential scan of the whole table as its
// generic plan when prepared on a table never analyzed, which a connection
// keeps as the table grows. On SQLite they are a JSON array read by json_each.
func listStepsOfSQL(d *Dialect) string {
	if d.JSON == JSONPostgres {
		return `SELECT i.id, s.* FROM unnest(CAST(? AS TEXT[])) WITH ORDINALITY AS i(id, n)
 CROSS JOIN LATERAL (SELECT ` + stepCols + `, started_at FROM workflow_steps WHERE instance_id = i.id ORDER BY seq) s
 ORDER BY i.n, s.seq`
	}
	return `SELECT instance_id, ` + stepCols + `, started_at FROM workflow_steps
 WHERE instance_id IN (SELECT value FROM json_each(?)) ORDER BY instance_id, seq`
}

// idListArg is listStepsOfSQL's argument for ids.
func (s *Store) idListArg(ids []string) (any, error) {
	if s.d.JSON == JSONPostgres {
		return ids, nil
	}
	b, err := json.Marshal(ids)
	return string(b), err
}

// ListStepsOf implements store.Store.
func (s *Store) ListStepsOf(ctx context.Context, ids []string) (map[string][]store.Step, error) {
	if len(ids) == 0 {
		return map[string][]store.Step{}, nil
	}
	arg, err := s.idListArg(ids)
	if err != nil {
		return nil, fmt.Errorf("list steps of %d instances: %w", len(ids), err)
	}
	rows, err := s.readRows(ctx, s.q.listStepsOf, arg)
	if err != nil {
		return nil, fmt.Errorf("list steps of %d instances: %w", len(ids), err)
	}
	defer rows.Close()
	steps := make(map[string][]store.Step, len(ids))
	for rows.Next() {
		var id string
		st, err := scanStep(idScanner{rows, &id})
		if err != nil {
			return nil, fmt.Errorf("list steps of %d instances: %w", len(ids), err)
		}
		steps[id] = append(steps[id], st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list steps of %d instances: %w", len(ids), err)
	}
	return steps, nil
}

// idScanner scans a row's first column into id and the rest as r would.
type idScanner struct {
	r  rowScanner
	id *string
}

func (s idScanner) Scan(dest ...any) error { return s.r.Scan(append([]any{s.id}, dest...)...) }

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, id string) ([]store.Event, error) {
	rows, err := s.readRows(ctx, s.q.listEvents, id)
	if err != nil {
		return nil, fmt.Errorf("list events of %q: %w", id, err)
	}
	defer rows.Close()
	var evs []store.Event
	for rows.Next() {
		e := store.Event{InstanceID: id}
		var created, consumed int64
		var consumedAt sql.NullInt64
		if err := rows.Scan(&e.Seq, &e.Type, &e.Payload, &created, &consumed, &consumedAt); err != nil {
			return nil, fmt.Errorf("list events of %q: %w", id, err)
		}
		e.CreatedAt, e.Consumed, e.ConsumedAt = time.UnixMicro(created).UTC(), consumed != 0, fromMicros(consumedAt)
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events of %q: %w", id, err)
	}
	return evs, nil
}

// ClaimDue implements store.Store.
func (s *Store) ClaimDue(ctx context.Context, owner, service string, now time.Time, limit int) ([]*store.Instance, error) {
	var claimed []*store.Instance
	err := s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
		claimed = claimed[:0]
		n := now.UnixMicro()
		rows, err := c.Query(ctx, s.q.claimDue, owner, n, service, n, limit, n)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			in, err := scanInstance(rows)
			if err != nil {
				return err
			}
			claimed = append(claimed, in)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim due instances: %w", err)
	}
	return claimed, nil
}

// NextWakeTimes implements store.Store.
func (s *Store) NextWakeTimes(ctx context.Context, service string, until time.Time, limit int) ([]time.Time, error) {
	rows, err := s.readRows(ctx, s.q.nextWake, service, until.UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("next wake times: %w", err)
	}
	defer rows.Close()
	var ts []time.Time
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("next wake times: %w", err)
		}
		ts = append(ts, time.UnixMicro(v).UTC())
	}
	return ts, rows.Err()
}

// applyFenced runs f with args, which end with the lease's id, owner and
// fence, and then, if it matched and st is not nil, upserts st: in the same
// statement where the dialect can (fencedQuery.single), else in a second
// one, so that c must then be a transaction. It returns the status the
// UPDATE returned, or ErrLeaseLost having changed nothing.
func (s *Store) applyFenced(ctx context.Context, c Conn, f fencedQuery, args []any, l store.Lease, st *store.Step, now time.Time, op string) (store.Status, error) {
	q := f.update
	n, failed := failedAttempt(st)
	if st != nil && f.withStep != "" {
		q, args = f.withStep, append(args, stepArgs(l.InstanceID, *st, now)...)
		if failed {
			q, args = f.withAttempt, append(args, attemptArgs(l.InstanceID, *st, n, now)...)
		}
	}
	var status string
	err := queryRow(ctx, c, q, args, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return "", &store.InstanceError{ID: l.InstanceID, Op: op, Err: store.ErrLeaseLost}
	}
	if err != nil {
		return "", fmt.Errorf("%s instance %q: %w", op, l.InstanceID, err)
	}
	if st != nil && f.withStep == "" {
		if _, err := c.Exec(ctx, s.q.upsertStep, stepArgs(l.InstanceID, *st, now)...); err != nil {
			return "", fmt.Errorf("save step %q of %q: %w", st.Name, l.InstanceID, err)
		}
		if failed {
			if _, err := c.Exec(ctx, s.q.insertAttempt, attemptArgs(l.InstanceID, *st, n, now)...); err != nil {
				return "", fmt.Errorf("save attempt %d of step %q of %q: %w", n, st.Name, l.InstanceID, err)
			}
		}
	}
	return store.Status(status), nil
}

// checkLease applies the fence to the instance row (locking it), marks a
// queued instance running and returns its status, or ErrLeaseLost; with a
// step, it also upserts it (see applyFenced).
func (s *Store) checkLease(ctx context.Context, c Conn, l store.Lease, st *store.Step, now time.Time, op string) (store.Status, error) {
	if !s.d.Serialized {
		return s.applyFenced(ctx, c, s.q.fence, []any{now.UnixMicro(), l.InstanceID, l.Owner, l.Fence}, l, st, now, op)
	}
	if st != nil && s.q.fencedStep != "" {
		if _, failed := failedAttempt(st); !failed {
			args := append(stepArgs(l.InstanceID, *st, now), l.InstanceID, l.Owner, l.Fence)
			n, err := c.Exec(ctx, s.q.fencedStep, args...)
			if err != nil {
				return "", fmt.Errorf("save step %q of %q: %w", st.Name, l.InstanceID, err)
			}
			if n == 1 {
				return store.StatusRunning, nil
			}
			// Nothing written: the lease is lost, or the instance is not
			// (yet or any more) simply running.
		}
	}
	// Only a read: a checkpoint then costs one row write, not two.
	status, err := s.applyFenced(ctx, c, s.q.fenceRead, []any{l.InstanceID, l.Owner, l.Fence}, l, st, now, op)
	if err == nil && status == store.StatusQueued {
		if _, err := c.Exec(ctx, s.q.markRunning, now.UnixMicro(), l.InstanceID); err != nil {
			return "", fmt.Errorf("%s instance %q: %w", op, l.InstanceID, err)
		}
		status = store.StatusRunning
	}
	return status, err
}

// SaveStep implements store.Store.
func (s *Store) SaveStep(ctx context.Context, l store.Lease, st store.Step, now time.Time) (store.Status, error) {
	var status store.Status
	err := s.write(ctx, s.q.fence.single(true), func(ctx context.Context, c Conn) error {
		var err error
		status, err = s.checkLease(ctx, c, l, &st, now, "save step of")
		return err
	})
	return status, err
}

// TakeEvent implements store.Store.
//
// A wait's first look usually finds nothing: a read under the caller's
// claim says so without queueing a write. Only the owner consumes the
// instance's events, so none the read did not see can have been taken;
// one sent after it is seen by the Suspend that follows (which makes the
// instance due at once). A read that finds an event, or a claim that is
// not the caller's, goes on to the fenced write, which takes the event or
// fails with ErrLeaseLost.
func (s *Store) TakeEvent(ctx context.Context, l store.Lease, typ string, st store.Step, now time.Time) (*store.Event, error) {
	var (
		owner sql.NullString
		fence int64
		found bool
	)
	err := s.readRow(ctx, s.q.peekEvent, typ, l.InstanceID).Scan(&owner, &fence, &found)
	if err == nil && !found && owner.String == l.Owner && fence == l.Fence {
		return nil, nil
	}
	var ev *store.Event
	err = s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ev = nil
		if _, err := s.checkLease(ctx, TxConn(tx), l, nil, now, "take event for"); err != nil {
			return err
		}
		e := store.Event{InstanceID: l.InstanceID, Type: typ, Consumed: true}
		var created int64
		err := QueryRow(ctx, tx, s.q.oldestEvent, l.InstanceID, typ).Scan(&e.Seq, &e.Payload, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("take event for %q: %w", l.InstanceID, err)
		}
		// ConsumedAt as ListEvents will read it: microseconds, UTC.
		e.CreatedAt, e.ConsumedAt = time.UnixMicro(created).UTC(), time.UnixMicro(now.UnixMicro()).UTC()
		if _, err := Exec(ctx, tx, s.q.consumeEvent, now.UnixMicro(), e.Seq); err != nil {
			return fmt.Errorf("consume event %d: %w", e.Seq, err)
		}
		st.State, st.Result = store.StepDone, e.Payload
		if _, err := Exec(ctx, tx, s.q.upsertStep, stepArgs(l.InstanceID, st, now)...); err != nil {
			return fmt.Errorf("save step %q of %q: %w", st.Name, l.InstanceID, err)
		}
		ev = &e
		return nil
	})
	return ev, err
}

// Suspend implements store.Store.
func (s *Store) Suspend(ctx context.Context, l store.Lease, sus store.Suspension, now time.Time) error {
	force, prior := 0, sus.Status
	if sus.Status == store.StatusPaused {
		force, prior = 1, store.StatusRunning
	}
	n := now.UnixMicro()
	args := []any{
		force, string(sus.Status),
		force, string(prior),
		force, n,
		force, micros(sus.WakeAt),
		force, micros(sus.WakeAt),
		nullString(sus.WaitingEvent), n,
		l.InstanceID, l.Owner, l.Fence,
	}
	// A wait checks for a buffered event in a statement of its own, after
	// the suspension: in one statement, the check would read the events as
	// of before the row lock was granted, and miss one that a SendEvent
	// holding the lock (and seeing the instance still owned) had just added.
	one := s.q.suspend.single(sus.Step != nil) && sus.WaitingEvent == ""
	var woke *store.Wake // the instance's service, if a buffered event made it due
	err := s.write(ctx, one, func(ctx context.Context, c Conn) error {
		woke = nil
		status, err := s.applyFenced(ctx, c, s.q.suspend, args, l, sus.Step, now, "suspend")
		if err != nil {
			return err
		}
		if sus.WaitingEvent != "" && status == store.StatusWaiting {
			// An event that arrived while the instance ran must wake it now.
			var service string
			err := queryRow(ctx, c, s.q.wakeIfEvent, []any{n, l.InstanceID, l.InstanceID, sus.WaitingEvent}, &service)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("suspend instance %q: %w", l.InstanceID, err)
			default:
				woke = &store.Wake{Kind: store.WakeInstances, Key: service}
			}
		}
		return nil
	})
	// The suspending engine scheduled the wait's deadline, not this: the
	// event's sender found the instance still running and woke nobody.
	if err == nil && woke != nil {
		s.wake(*woke)
	}
	return err
}

// Finish implements store.Store. Where the dialect can, the outcome and the
// origin agent's notice are one statement (finishNotice); elsewhere they
// are plain statements of one transaction (see finishNoOrigin).
func (s *Store) Finish(ctx context.Context, l store.Lease, o store.Outcome, now time.Time) error {
	n := now.UnixMicro()
	notice, err := noticeArgs(l.InstanceID, n)
	if err != nil {
		return fmt.Errorf("finish instance %q: %w", l.InstanceID, err)
	}
	args := []any{string(o.Status), blob(o.Output), nullString(o.ErrorName),
		nullString(o.ErrorMessage), n, n, l.InstanceID, l.Owner, l.Fence}
	lost := &store.InstanceError{ID: l.InstanceID, Op: "finish", Err: store.ErrLeaseLost}
	one := s.q.finishNotice != ""
	var origin sql.NullString // the origin's class, once its notice is queued
	err = s.write(ctx, one, func(ctx context.Context, c Conn) error {
		origin = sql.NullString{}
		if one {
			var name sql.NullString
			err := queryRow(ctx, c, s.q.finishNotice, append(args, notice...), &origin, &name)
			if errors.Is(err, sql.ErrNoRows) {
				return lost
			}
			return err
		}
		if done, err := c.Exec(ctx, s.q.finishNoOrigin, args...); err != nil || done == 1 {
			return err
		}
		var class, name sql.NullString
		err := queryRow(ctx, c, s.q.fencedOrigin, []any{l.InstanceID, l.Owner, l.Fence}, &class, &name)
		if errors.Is(err, sql.ErrNoRows) {
			return lost
		}
		if err != nil {
			return err
		}
		if done, err := c.Exec(ctx, s.q.finish, args...); err != nil || done == 0 {
			return cmp.Or(err, error(lost))
		}
		if !class.Valid {
			return nil // unreachable (the origin never changes), but never a nameless notice
		}
		// The notice's arguments: id, then the origin's class and name.
		args := append([]any{notice[0], class.String, name.String}, notice[1:]...)
		if _, err := c.Exec(ctx, s.q.insertNotice, args...); err != nil {
			return fmt.Errorf("notify agent %s/%s: %w", class.String, name.String, err)
		}
		origin = class
		return nil
	})
	var ie *store.InstanceError
	if err != nil && !errors.As(err, &ie) {
		return fmt.Errorf("finish instance %q: %w", l.InstanceID, err)
	}
	if err == nil && origin.Valid {
		s.wake(store.Wake{Kind: store.WakeSchedules, Key: origin.String})
	}
	return err
}

type lockedInstance struct {
	status       store.Status
	owner        string
	waitingEvent string
	service      string
}

// waitsFor reports whether the instance is suspended, unclaimed, in a wait
// for an event of type typ: one sent now makes it due.
func (li lockedInstance) waitsFor(typ string) bool {
	return li.status == store.StatusWaiting && li.owner == "" && li.waitingEvent == typ
}

// lock reads and (where the dialect can) locks an instance row for the rest
// of the transaction.
func (s *Store) lock(ctx context.Context, tx *sql.Tx, id, op string) (lockedInstance, error) {
	var (
		li            lockedInstance
		status        string
		owner, waitEv sql.NullString
	)
	err := QueryRow(ctx, tx, s.q.lockInstance, id).Scan(&status, &owner, &waitEv, &li.service)
	if errors.Is(err, sql.ErrNoRows) {
		return li, &store.InstanceError{ID: id, Op: op, Err: store.ErrNotFound}
	}
	if err != nil {
		return li, fmt.Errorf("%s instance %q: %w", op, id, err)
	}
	li.status, li.owner, li.waitingEvent = store.Status(status), owner.String, waitEv.String
	return li, nil
}

// SendEvent implements store.Store.
func (s *Store) SendEvent(ctx context.Context, e store.Event) error {
	var woke *store.Wake // the instance's service, if the event woke it
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		woke = nil
		li, err := s.lock(ctx, tx, e.InstanceID, "send event to")
		if err != nil {
			return err
		}
		if li.status.Finished() {
			return &store.InstanceError{ID: e.InstanceID, Op: "send event to", Status: li.status, Err: store.ErrFinished}
		}
		if _, err := Exec(ctx, tx, s.q.insertEvent, e.InstanceID, e.Type, blob(e.Payload), e.CreatedAt.UnixMicro()); err != nil {
			return fmt.Errorf("send event to instance %q: %w", e.InstanceID, err)
		}
		if li.waitsFor(e.Type) {
			if _, err := Exec(ctx, tx, s.q.wakeForEvent, e.CreatedAt.UnixMicro(), e.InstanceID); err != nil {
				return fmt.Errorf("wake instance %q: %w", e.InstanceID, err)
			}
			woke = &store.Wake{Kind: store.WakeInstances, Key: li.service}
		}
		return nil
	})
	if err == nil && woke != nil {
		s.wake(*woke)
	}
	return err
}

// Pause implements store.Store.
func (s *Store) Pause(ctx context.Context, id string, now time.Time) (store.Status, error) {
	var result store.Status
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		li, err := s.lock(ctx, tx, id, "pause")
		if err != nil {
			return err
		}
		n := now.UnixMicro()
		switch {
		case li.status.Finished():
			return &store.InstanceError{ID: id, Op: "pause", Status: li.status, Err: store.ErrFinished}
		case li.status == store.StatusPaused || li.status == store.StatusWaitingForPause:
			result = li.status
			return nil
		case li.owner != "":
			result = store.StatusWaitingForPause
			_, err = Exec(ctx, tx, s.q.pauseRequest, n, id)
		default:
			result = store.StatusPaused
			_, err = Exec(ctx, tx, s.q.pauseNow, n, n, id)
		}
		if err != nil {
			return fmt.Errorf("pause instance %q: %w", id, err)
		}
		return nil
	})
	return result, err
}

// Resume implements store.Store.
func (s *Store) Resume(ctx context.Context, id string, now time.Time) error {
	var woke *store.Wake // the instance's service, if it is due now
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		woke = nil
		li, err := s.lock(ctx, tx, id, "resume")
		if err != nil {
			return err
		}
		n := now.UnixMicro()
		switch li.status {
		case store.StatusWaitingForPause:
			if _, err := Exec(ctx, tx, s.q.cancelPause, n, id); err != nil {
				return fmt.Errorf("resume instance %q: %w", id, err)
			}
			return nil
		case store.StatusPaused:
		default:
			return &store.InstanceError{ID: id, Op: "resume", Status: li.status, Err: store.ErrNotPaused}
		}
		var pausedAt int64
		if err := QueryRow(ctx, tx, s.d.Rebind(`SELECT paused_at FROM workflow_instances WHERE id = ?`), id).Scan(&pausedAt); err != nil {
			return fmt.Errorf("resume instance %q: %w", id, err)
		}
		// An event that arrived during the pause wakes a waiting instance now.
		wakeNow := 0
		if li.waitingEvent != "" {
			var one int
			err := QueryRow(ctx, tx, s.q.oldestEvent, id, li.waitingEvent).Scan(&one, new([]byte), new(int64))
			if err == nil {
				wakeNow = 1
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("resume instance %q: %w", id, err)
			}
		}
		var wake sql.NullInt64
		if err := QueryRow(ctx, tx, s.q.resume, wakeNow, n, n, n, id).Scan(&wake); err != nil {
			return fmt.Errorf("resume instance %q: %w", id, err)
		}
		if _, err := Exec(ctx, tx, s.q.shiftSteps, n-pausedAt, id, pausedAt); err != nil {
			return fmt.Errorf("resume instance %q: shift timers: %w", id, err)
		}
		if wake.Valid && wake.Int64 <= n {
			woke = &store.Wake{Kind: store.WakeInstances, Key: li.service}
		}
		return nil
	})
	if err == nil && woke != nil {
		s.wake(*woke)
	}
	return err
}

// Terminate implements store.Store.
func (s *Store) Terminate(ctx context.Context, id string, now time.Time) error {
	return s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		li, err := s.lock(ctx, tx, id, "terminate")
		if err != nil {
			return err
		}
		if li.status.Finished() {
			return &store.InstanceError{ID: id, Op: "terminate", Status: li.status, Err: store.ErrFinished}
		}
		n := now.UnixMicro()
		if _, err := Exec(ctx, tx, s.q.terminate, n, n, id); err != nil {
			return fmt.Errorf("terminate instance %q: %w", id, err)
		}
		return nil
	})
}

// Restart implements store.Store.
func (s *Store) Restart(ctx context.Context, id string, now time.Time) error {
	var service string
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		li, err := s.lock(ctx, tx, id, "restart")
		if err != nil {
			return err
		}
		service = li.service
		n := now.UnixMicro()
		for _, q := range []string{s.q.deleteSteps, s.q.deleteAttempts, s.q.deleteConsumed} {
			if _, err := Exec(ctx, tx, q, id); err != nil {
				return fmt.Errorf("restart instance %q: %w", id, err)
			}
		}
		if _, err := Exec(ctx, tx, s.q.restart, n, n, id); err != nil {
			return fmt.Errorf("restart instance %q: %w", id, err)
		}
		return nil
	})
	if err == nil {
		s.wake(store.Wake{Kind: store.WakeInstances, Key: service})
	}
	return err
}

// DeleteFinished implements store.Store.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	var removed int
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		removed = 0
		rows, err := Query(ctx, tx, s.q.finishedIDs, before.UnixMicro(), limit)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		in := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
		for _, q := range []string{
			`DELETE FROM workflow_steps WHERE instance_id IN (` + in + `)`,
			`DELETE FROM workflow_step_attempts WHERE instance_id IN (` + in + `)`,
			`DELETE FROM workflow_events WHERE instance_id IN (` + in + `)`,
			`DELETE FROM workflow_instances WHERE id IN (` + in + `)`,
		} {
			if _, err := tx.ExecContext(ctx, s.d.Rebind(q), ids...); err != nil {
				return err
			}
		}
		removed = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete finished instances: %w", err)
	}
	return removed, nil
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, n store.Node) error {
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := Exec(ctx, tx, s.q.heartbeat, n.ID, n.Service, n.Host, n.PID, n.Process, n.StartedAt.UnixMicro(), n.ExpiresAt.UnixMicro())
		return err
	})
	if err != nil {
		return fmt.Errorf("heartbeat of node %q: %w", n.ID, err)
	}
	return nil
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	rows, err := s.readRows(ctx, s.q.listNodes)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var nodes []store.Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	return nodes, rows.Err()
}

// AdvertiseNode implements store.Store.
func (s *Store) AdvertiseNode(ctx context.Context, id, address string, classes []string) error {
	if classes == nil {
		classes = []string{}
	}
	cls, err := json.Marshal(classes)
	if err != nil {
		return fmt.Errorf("advertise node %q: %w", id, err)
	}
	var n int64
	err = s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
		var err error
		n, err = c.Exec(ctx, s.q.advertise, address, string(cls), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("advertise node %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("advertise node %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// RemoveNode implements store.Store.
func (s *Store) RemoveNode(ctx context.Context, id string, now time.Time) (int, error) {
	var released int
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n := now.UnixMicro()
		if _, err := Exec(ctx, tx, s.q.deleteNode, id); err != nil {
			return err
		}
		res, err := Exec(ctx, tx, s.q.releasePausing, n, n, n, id)
		if err != nil {
			return err
		}
		paused, _ := res.RowsAffected()
		res, err = Exec(ctx, tx, s.q.releaseOwned, n, n, id)
		if err != nil {
			return err
		}
		rest, _ := res.RowsAffected()
		released = int(paused + rest)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove node %q: %w", id, err)
	}
	return released, nil
}

// ReleaseOrphans implements store.Store. It releases each orphan owner's
// instances exactly as RemoveNode would.
func (s *Store) ReleaseOrphans(ctx context.Context, now time.Time) (int, error) {
	rows, err := s.readRows(ctx, s.q.orphanOwners)
	if err != nil {
		return 0, fmt.Errorf("find orphaned instances: %w", err)
	}
	var owners []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			rows.Close()
			return 0, fmt.Errorf("find orphaned instances: %w", err)
		}
		owners = append(owners, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("find orphaned instances: %w", err)
	}
	total := 0
	for _, o := range owners {
		n, err := s.RemoveNode(ctx, o, now)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}
