package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"agentflow/store"
)

// This file implements store.ThinkStore: Think agents' ledgers of
// submissions (think_submissions) and their conversations
// (think_conversation).
//
// Both tables number an agent's rows with seq, the agent's largest plus
// one, computed inside the transaction that inserts. On SQLite write
// transactions run one at a time, so that is exact. On PostgreSQL,
// CreateSubmission first takes Dialect.AgentLock, a transaction-level
// advisory lock on the agent: the agent may have no agent_instances row to
// lock (a workflow may submit to an agent never activated), locking that
// row would queue behind the agent's state writes, and retrying on a unique
// violation would cost a round trip per collision and need not ever win
// under a burst of submissions to one agent. The conversation's appends
// are numbered under the row lock of the running submission they belong
// to, and only one submission of an agent runs at a time, so its writers
// are one after the other already.
//
// A runner's writes (ApplySubmission, AppendConversation, FinishSubmission)
// are fenced by owner: they apply only while the submission is running and
// owner runs it, and fail with ErrLeaseLost otherwise, changing nothing.

const submissionCols = `class, name, id, seq, idempotency_key, metadata, messages, status, error, output, applied, owner,
 input_tokens, output_tokens, created_at, started_at, finished_at, notify_instance, notify_event, trace_parent`

const conversationCols = `class, name, seq, submission_id, message, created_at`

// submissionStatuses is how many statuses a submission can have.
const submissionStatuses = 6

// maxSubmissionList is ListSubmissions' default and largest page.
const maxSubmissionList = 1000

// deleteChunk bounds the ids one DELETE of DeleteSubmissions names.
const deleteChunk = 500

var (
	finishedSubmissions = sqlList(store.SubmissionCompleted, store.SubmissionAborted, store.SubmissionSkipped, store.SubmissionError)
	// activeSubmissions is the predicate of the partial index
	// think_submissions_active. A statement about pending or running
	// submissions names it as written there, beside its own status test:
	// SQLite proves neither that status = 'pending' nor that status IN (?)
	// implies it, PostgreSQL not the second in a generic plan, and without
	// the index they walk every submission the agent ever had.
	activeSubmissions = sqlList(store.SubmissionPending, store.SubmissionRunning)
)

// anySubmission, true of every row, makes think_submissions_seq, partial on
// it, usable (migration 0013 says why).
const anySubmission = ` AND seq IS NOT NULL`

type thinkQueries struct {
	agentLock                                            string
	getSubmission, submissionByKey, insertSubmission     string
	listHead, listStatuses, listTail                     string
	startSubmission, lockRunning, setApplied, maxConvSeq string
	insertMessage, finishSubmission                      string
	readRunning, applyMessages, appendTurn               string
	lockSubmission, finishPending                        string
	outboxQueries
	deleteFinished, deleteFinishedIDs   string
	recoverSubmissions                  string
	conversationFrom, clearConversation string
	pendingAgents                       string
}

func newThinkQueries(d *Dialect) thinkQueries {
	r := d.Rebind
	running := `'` + string(store.SubmissionRunning) + `'`
	pending := `'` + string(store.SubmissionPending) + `'`
	q := thinkQueries{
		getSubmission:   r(`SELECT ` + submissionCols + ` FROM think_submissions WHERE class = ? AND name = ? AND id = ?`),
		submissionByKey: r(`SELECT ` + submissionCols + ` FROM think_submissions WHERE class = ? AND name = ? AND idempotency_key = ?`),
		// Run under the agent's lock (or the serialized writer), after
		// the reads that found neither the id nor the key.
		insertSubmission: r(`INSERT INTO think_submissions (class, name, id, seq, idempotency_key, metadata, messages, status, created_at,
   notify_instance, notify_event, trace_parent)
 VALUES (?, ?, ?, (SELECT COALESCE(MAX(p.seq), 0) + 1 FROM think_submissions p WHERE p.class = ? AND p.name = ? AND p.seq IS NOT NULL),
   ?, ?, ?, ` + pending + `, ?, ?, ?, ?)
 RETURNING ` + submissionCols),

		// ListSubmissions' query is put together from these, with ?
		// placeholders, and rebound once put together.
		listHead:     `SELECT ` + submissionCols + ` FROM think_submissions WHERE class = ? AND name = ?`,
		listStatuses: ` AND status IN (%s)`,
		listTail:     ` ORDER BY seq LIMIT ?`,

		// One statement. On PostgreSQL a concurrent start that changed the
		// picked row first makes this one re-check it (status is no longer
		// pending) and change nothing; one whose start committed before
		// this statement's snapshot is seen by NOT EXISTS. A row other
		// than the oldest pending one is never picked, so two starts
		// cannot pick two rows.
		startSubmission: r(`UPDATE think_submissions SET status = ` + running + `, owner = ?, started_at = ?
 WHERE class = ? AND name = ? AND status = ` + pending + `
   AND seq = (SELECT MIN(p.seq) FROM think_submissions p
     WHERE p.class = ? AND p.name = ? AND p.status IN ` + activeSubmissions + ` AND p.status = ` + pending + `)
   AND NOT EXISTS (SELECT 1 FROM think_submissions o
     WHERE o.class = ? AND o.name = ? AND o.status IN ` + activeSubmissions + ` AND o.status = ` + running + `)
 RETURNING ` + submissionCols),
		lockRunning: r(`SELECT messages, applied FROM think_submissions
 WHERE class = ? AND name = ? AND id = ? AND owner = ? AND status = ` + running + d.ForUpdate),
		setApplied:       r(`UPDATE think_submissions SET applied = 1 WHERE class = ? AND name = ? AND id = ?`),
		maxConvSeq:       r(`SELECT COALESCE(MAX(seq), 0) FROM think_conversation WHERE class = ? AND name = ?`),
		insertMessage:    r(`INSERT INTO think_conversation (` + conversationCols + `) VALUES (?, ?, ?, ?, ?, ?)`),
		finishSubmission: r(finishSubmissionSQL),
		lockSubmission:   r(`SELECT status FROM think_submissions WHERE class = ? AND name = ? AND id = ?` + d.ForUpdate),
		finishPending: r(`UPDATE think_submissions SET status = ?, error = ?, finished_at = ?
 WHERE class = ? AND name = ? AND id = ? AND status = ` + pending),
		deleteFinished: r(`DELETE FROM think_submissions WHERE class = ? AND name = ? AND status IN ` + finishedSubmissions),
		// Filled in with inList.
		deleteFinishedIDs: `DELETE FROM think_submissions WHERE class = ? AND name = ? AND status IN ` + finishedSubmissions + ` AND id IN (%s)`,
		// One statement for both kinds: a submission whose messages never
		// reached the conversation is pending again, one cut off mid-turn
		// finishes as error.
		recoverSubmissions: r(`UPDATE think_submissions SET
   status      = CASE WHEN applied = 0 THEN ` + pending + ` ELSE '` + string(store.SubmissionError) + `' END,
   error       = CASE WHEN applied = 0 THEN error ELSE ? END,
   started_at  = CASE WHEN applied = 0 THEN NULL ELSE started_at END,
   finished_at = CASE WHEN applied = 0 THEN NULL ELSE CAST(? AS BIGINT) END,
   owner = NULL
 WHERE class = ? AND name = ? AND status IN ` + activeSubmissions + ` AND status = ` + running + `
   AND (owner IS NULL OR owner <> ?)
 RETURNING ` + submissionCols),
		conversationFrom:  r(`SELECT ` + conversationCols + ` FROM think_conversation WHERE class = ? AND name = ? AND seq >= ? ORDER BY seq`),
		clearConversation: r(`DELETE FROM think_conversation WHERE class = ? AND name = ?`),
		// An agent live on a node with a row is that node's to run. Filled
		// in with inList.
		pendingAgents: `SELECT DISTINCT t.class, t.name FROM think_submissions t
 WHERE t.class IN (%s) AND t.status IN ` + activeSubmissions + `
   AND (t.status = ` + pending + ` OR t.owner IS NULL OR NOT ` + live("t.owner") + `)
   AND NOT EXISTS (SELECT 1 FROM agent_instances a WHERE a.class = t.class AND a.name = t.name AND ` + live("a.owner") + `)
 ORDER BY t.class, t.name LIMIT ?`,
	}
	if d.AgentLock != "" {
		q.agentLock = r(d.AgentLock)
	}
	if d.WritableCTEs {
		q.readRunning, q.applyMessages, q.appendTurn = messagesCTEs(d)
	}
	q.outboxQueries = newOutboxQueries(d)
	return q
}

func scanSubmission(r rowScanner) (*store.Submission, error) {
	var (
		sub                  store.Submission
		status               string
		key, md, errMsg, own sql.NullString
		notifyIn, notifyEv   sql.NullString
		traceParent          sql.NullString
		applied, in, out     int64
		created              int64
		started, finished    sql.NullInt64
	)
	if err := r.Scan(&sub.Class, &sub.Name, &sub.ID, &sub.Seq, &key, &md, &sub.Messages, &status, &errMsg, &sub.Output,
		&applied, &own, &in, &out, &created, &started, &finished, &notifyIn, &notifyEv, &traceParent); err != nil {
		return nil, err
	}
	sub.Status = store.SubmissionStatus(status)
	sub.IdempotencyKey, sub.Error, sub.Owner = key.String, errMsg.String, own.String
	sub.NotifyInstance, sub.NotifyEvent, sub.TraceParent = notifyIn.String, notifyEv.String, traceParent.String
	if md.Valid {
		sub.Metadata = []byte(md.String)
	}
	sub.Applied = applied != 0
	sub.InputTokens, sub.OutputTokens = int(in), int(out)
	sub.CreatedAt = time.UnixMicro(created).UTC()
	sub.StartedAt, sub.FinishedAt = fromMicros(started), fromMicros(finished)
	return &sub, nil
}

func scanConversation(r rowScanner) (*store.ConversationMessage, error) {
	var (
		m       store.ConversationMessage
		created int64
	)
	if err := r.Scan(&m.Class, &m.Name, &m.Seq, &m.SubmissionID, &m.Message, &created); err != nil {
		return nil, err
	}
	m.CreatedAt = time.UnixMicro(created).UTC()
	return &m, nil
}

// splitMessages returns the elements of a JSON array, each as its JSON
// text; nil has none.
func splitMessages(msgs []byte) ([]json.RawMessage, error) {
	if msgs == nil {
		return nil, nil
	}
	if !utf8.Valid(msgs) {
		return nil, errors.New("messages are not valid UTF-8")
	}
	var out []json.RawMessage
	if err := json.Unmarshal(msgs, &out); err != nil {
		return nil, fmt.Errorf("messages are not a JSON array: %w", err)
	}
	if out == nil {
		return nil, errors.New("messages are not a JSON array: null")
	}
	return out, nil
}

// messagesCTEs are, for dialects with data-modifying CTEs, the statements
// by which a running submission's messages reach the conversation in one
// statement each rather than a transaction of four to six round trips:
// readRunning reads the submission's messages (which never change once
// submitted) and whether they were applied, while owner runs it; then
// applyMessages sets applied and appends them, and appendTurn appends
// a turn's, each only while owner runs the submission, under the row lock
// the UPDATE or FOR UPDATE takes. Both take the messages as one array after
// the fence's arguments and return how many submissions they fenced (0 or
// 1). The seqs follow the conversation's last, read in the statement's
// snapshot: one submission of an agent runs at a time, and a second writer
// would fail on the primary key, not interleave.
func messagesCTEs(d *Dialect) (readRunning, apply, appendTurn string) {
	fence := `class = ? AND name = ? AND id = ? AND owner = ? AND status = '` + string(store.SubmissionRunning) + `'`
	insert := ` m AS (INSERT INTO think_conversation (` + conversationCols + `)
   SELECT s.class, s.name, (SELECT COALESCE(MAX(c.seq), 0) FROM think_conversation c
       WHERE c.class = s.class AND c.name = s.name) + e.ord, s.id, e.msg, ?
   FROM s, unnest(CAST(? AS BYTEA[])) WITH ORDINALITY AS e(msg, ord))
SELECT COUNT(*) FROM s`
	readRunning = d.Rebind(`SELECT messages, applied FROM think_submissions WHERE ` + fence)
	apply = d.Rebind(`WITH s AS (UPDATE think_submissions SET applied = 1 WHERE ` + fence + ` AND applied = 0
   RETURNING class, name, id),` + insert)
	appendTurn = d.Rebind(`WITH s AS (SELECT class, name, id FROM think_submissions WHERE ` + fence + ` FOR UPDATE),` + insert)
	return readRunning, apply, appendTurn
}

// messageRows splits a submission's messages into the conversation rows
// they become, one a message, each as it was submitted.
func messageRows(raw []byte) ([][]byte, error) {
	elems, err := splitMessages(raw)
	if err != nil {
		return nil, err
	}
	msgs := make([][]byte, len(elems))
	for i, e := range elems {
		msgs[i] = e
	}
	return msgs, nil
}

// lockAgent takes the dialect's lock on the agent, if it has one.
func (s *Store) lockAgent(ctx context.Context, c Conn, key store.AgentKey) error {
	if s.tq.agentLock == "" {
		return nil
	}
	if _, err := c.Exec(ctx, s.tq.agentLock, key.Class, key.Name); err != nil {
		return fmt.Errorf("lock agent: %w", err)
	}
	return nil
}

// txRow reads one row in a write transaction, or returns nil.
func txRow[T any](ctx context.Context, tx *sql.Tx, q string, args []any, scan func(rowScanner) (*T, error)) (*T, error) {
	v, err := scan(QueryRow(ctx, tx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return v, err
}

// CreateSubmission implements store.ThinkStore.
func (s *Store) CreateSubmission(ctx context.Context, sub *store.Submission) (*store.Submission, bool, error) {
	op := fmt.Sprintf("create submission %s of agent %s", sub.ID, sub.AgentKey)
	if sub.ID == "" {
		return nil, false, fmt.Errorf("create submission of agent %s: the submission needs an ID", sub.AgentKey)
	}
	if _, err := splitMessages(sub.Messages); err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	if sub.Metadata != nil && (!utf8.Valid(sub.Metadata) || !json.Valid(sub.Metadata)) {
		return nil, false, fmt.Errorf("%s: metadata is not valid JSON", op)
	}
	if (sub.NotifyInstance == "") != (sub.NotifyEvent == "") {
		return nil, false, fmt.Errorf("%s: NotifyInstance and NotifyEvent go together (got %q and %q)", op, sub.NotifyInstance, sub.NotifyEvent)
	}
	var (
		got     *store.Submission
		created bool
	)
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		got, created = nil, false
		c := TxConn(tx)
		if err := s.lockAgent(ctx, c, sub.AgentKey); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		byID, err := txRow(ctx, tx, s.tq.getSubmission, []any{sub.Class, sub.Name, sub.ID}, scanSubmission)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		var byKey *store.Submission
		if sub.IdempotencyKey != "" {
			if byKey, err = txRow(ctx, tx, s.tq.submissionByKey, []any{sub.Class, sub.Name, sub.IdempotencyKey}, scanSubmission); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
		switch {
		case byID != nil && byKey != nil && byID.ID != byKey.ID:
			return fmt.Errorf("%s: %w: submission %s exists, and its idempotency key %q is submission %s's",
				op, store.ErrDuplicateID, byID.ID, sub.IdempotencyKey, byKey.ID)
		case byID != nil:
			got = byID
			return nil
		case byKey != nil:
			got = byKey
			return nil
		}
		args := []any{sub.Class, sub.Name, sub.ID, sub.Class, sub.Name, nullString(sub.IdempotencyKey), metadataArg(sub.Metadata),
			blob(sub.Messages), sub.CreatedAt.UnixMicro(), nullString(sub.NotifyInstance), nullString(sub.NotifyEvent),
			nullString(sub.TraceParent)}
		if got, err = scanSubmission(QueryRow(ctx, tx, s.tq.insertSubmission, args...)); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		created = true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return got, created, nil
}

// GetSubmission implements store.ThinkStore.
func (s *Store) GetSubmission(ctx context.Context, key store.AgentKey, id string) (*store.Submission, error) {
	sub, err := readOne(ctx, s, s.tq.getSubmission, []any{key.Class, key.Name, id}, scanSubmission)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get submission %s of agent %s: %w", id, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get submission %s of agent %s: %w", id, key, err)
	}
	return sub, nil
}

// ListSubmissions implements store.ThinkStore.
func (s *Store) ListSubmissions(ctx context.Context, key store.AgentKey, f store.SubmissionFilter) ([]store.Submission, error) {
	q, args := s.listSubmissions(key, f)
	read := readAllOnce[store.Submission]
	if len(f.Statuses) <= submissionStatuses { // a bounded set of shapes to keep prepared
		read = readAll[store.Submission]
	}
	subs, err := read(ctx, s, q, args, scanSubmission)
	if err != nil {
		return nil, fmt.Errorf("list submissions of agent %s: %w", key, err)
	}
	return subs, nil
}

// listSubmissions is ListSubmissions' query and its arguments.
func (s *Store) listSubmissions(key store.AgentKey, f store.SubmissionFilter) (string, []any) {
	limit := f.Limit
	if limit <= 0 || limit > maxSubmissionList {
		limit = maxSubmissionList
	}
	var b strings.Builder
	b.WriteString(s.tq.listHead)
	args := []any{key.Class, key.Name}
	// Through the active index when only active submissions are asked
	// for, otherwise in seq order through think_submissions_seq.
	active := len(f.Statuses) > 0 && !slices.ContainsFunc(f.Statuses, func(st store.SubmissionStatus) bool {
		return st != store.SubmissionPending && st != store.SubmissionRunning
	})
	if active {
		b.WriteString(` AND status IN ` + activeSubmissions)
	} else {
		b.WriteString(anySubmission)
	}
	if len(f.Statuses) > 0 {
		b.WriteString(fmt.Sprintf(s.tq.listStatuses, strings.TrimSuffix(strings.Repeat("?, ", len(f.Statuses)), ", ")))
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	b.WriteString(s.tq.listTail)
	return s.d.Rebind(b.String()), append(args, limit)
}

// StartSubmission implements store.ThinkStore.
func (s *Store) StartSubmission(ctx context.Context, key store.AgentKey, owner string, now time.Time) (*store.Submission, error) {
	if owner == "" {
		return nil, fmt.Errorf("start a submission of agent %s: no owner given", key)
	}
	args := []any{owner, now.UnixMicro(), key.Class, key.Name, key.Class, key.Name, key.Class, key.Name}
	got, err := writeRows(ctx, s, s.tq.startSubmission, args, scanSubmission)
	if err != nil {
		return nil, fmt.Errorf("start a submission of agent %s: %w", key, err)
	}
	if len(got) == 0 {
		return nil, nil
	}
	return got[0], nil
}

// appendMessages inserts msgs at the end of the agent's conversation.
func (s *Store) appendMessages(ctx context.Context, c Conn, tx *sql.Tx, key store.AgentKey, id string, msgs [][]byte, now time.Time) error {
	if len(msgs) == 0 {
		return nil
	}
	var last int64
	if err := QueryRow(ctx, tx, s.tq.maxConvSeq, key.Class, key.Name).Scan(&last); err != nil {
		return err
	}
	n := now.UnixMicro()
	for i, m := range msgs {
		if _, err := c.Exec(ctx, s.tq.insertMessage, key.Class, key.Name, last+1+int64(i), id, m, n); err != nil {
			return err
		}
	}
	return nil
}

// lockRunning locks the submission while owner runs it and returns its
// messages and whether they were applied; it fails with ErrLeaseLost when
// owner does not run it.
func (s *Store) lockRunning(ctx context.Context, tx *sql.Tx, op string, key store.AgentKey, id, owner string) ([]byte, bool, error) {
	var (
		msgs    []byte
		applied int64
	)
	err := QueryRow(ctx, tx, s.tq.lockRunning, key.Class, key.Name, id, owner).Scan(&msgs, &applied)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("%s: %s does not run it: %w", op, owner, store.ErrLeaseLost)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	return msgs, applied != 0, nil
}

// ApplySubmission implements store.ThinkStore. A submission already
// applied is left as it is: its messages are in the conversation once.
func (s *Store) ApplySubmission(ctx context.Context, key store.AgentKey, id, owner string, now time.Time) error {
	op := fmt.Sprintf("apply submission %s of agent %s", id, key)
	if s.tq.applyMessages != "" {
		return s.applyOne(ctx, op, key, id, owner, now)
	}
	return s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		raw, applied, err := s.lockRunning(ctx, tx, op, key, id, owner)
		if err != nil || applied {
			return err
		}
		msgs, err := messageRows(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		c := TxConn(tx)
		if err := s.appendMessages(ctx, c, tx, key, id, msgs, now); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if _, err := c.Exec(ctx, s.tq.setApplied, key.Class, key.Name, id); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
}

// applyOne is ApplySubmission in one statement (messagesCTEs), after a read
// of the messages; when the statement fences nothing, a second read says
// whether the messages were applied meanwhile or owner lost the submission.
func (s *Store) applyOne(ctx context.Context, op string, key store.AgentKey, id, owner string, now time.Time) error {
	raw, applied, err := s.runningMessages(ctx, op, key, id, owner)
	if err != nil || applied {
		return err
	}
	msgs, err := messageRows(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	fenced, err := s.writeMessages(ctx, s.tq.applyMessages, key, id, owner, msgs, now)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if fenced {
		return nil
	}
	if _, applied, err = s.runningMessages(ctx, op, key, id, owner); err != nil {
		return err
	}
	if !applied {
		return fmt.Errorf("%s: it is running, unapplied, and the write did not find it so", op)
	}
	return nil
}

// runningMessages reads, through the read pool, the messages of the submission
// owner runs and whether they were applied; it fails with ErrLeaseLost
// when owner does not run it.
func (s *Store) runningMessages(ctx context.Context, op string, key store.AgentKey, id, owner string) ([]byte, bool, error) {
	var (
		raw     []byte
		applied int64
	)
	err := s.readRow(ctx, s.tq.readRunning, key.Class, key.Name, id, owner).Scan(&raw, &applied)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("%s: %s does not run it: %w", op, owner, store.ErrLeaseLost)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	return raw, applied != 0, nil
}

// writeMessages runs q, applyMessages or appendTurn, and reports
// whether it fenced the running submission.
func (s *Store) writeMessages(ctx context.Context, q string, key store.AgentKey, id, owner string, msgs [][]byte, now time.Time) (bool, error) {
	var fenced int64
	err := s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
		return queryRow(ctx, c, q, []any{key.Class, key.Name, id, owner, now.UnixMicro(), msgs}, &fenced)
	})
	return fenced > 0, err
}

// AppendConversation implements store.ThinkStore.
func (s *Store) AppendConversation(ctx context.Context, key store.AgentKey, id, owner string, msgs [][]byte, now time.Time) error {
	op := fmt.Sprintf("append to the conversation of agent %s for submission %s", key, id)
	for i, m := range msgs {
		if !utf8.Valid(m) || !json.Valid(m) {
			return fmt.Errorf("%s: message %d is not valid JSON", op, i)
		}
	}
	if s.tq.appendTurn != "" {
		fenced, err := s.writeMessages(ctx, s.tq.appendTurn, key, id, owner, msgs, now)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if !fenced {
			return fmt.Errorf("%s: %s does not run it: %w", op, owner, store.ErrLeaseLost)
		}
		return nil
	}
	return s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, _, err := s.lockRunning(ctx, tx, op, key, id, owner); err != nil {
			return err
		}
		if err := s.appendMessages(ctx, TxConn(tx), tx, key, id, msgs, now); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
}

// DeleteSubmissions implements store.ThinkStore.
func (s *Store) DeleteSubmissions(ctx context.Context, key store.AgentKey, ids []string) (int, error) {
	op := fmt.Sprintf("delete submissions of agent %s", key)
	if len(ids) == 0 {
		n, err := s.exec(ctx, s.tq.deleteFinished, key.Class, key.Name)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		return int(n), nil
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	var removed int
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		removed = 0
		c := TxConn(tx)
		for chunk := range slices.Chunk(ids, deleteChunk) {
			args := append([]any{key.Class, key.Name}, strArgs(chunk)...)
			n, err := c.Exec(ctx, s.inList(s.tq.deleteFinishedIDs, len(chunk)), args...)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			removed += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// RecoverSubmissions implements store.ThinkStore.
func (s *Store) RecoverSubmissions(ctx context.Context, key store.AgentKey, owner, errMsg string, now time.Time) ([]store.Submission, []store.Submission, error) {
	// A submission it fails that a prompt step waits for gets its outbox
	// message in the same transaction, as FinishSubmission writes it.
	var got []*store.Submission
	n := now.UnixMicro()
	err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		c := TxConn(tx)
		got = nil
		rows, err := c.Query(ctx, s.tq.recoverSubmissions, nullString(errMsg), n, key.Class, key.Name, owner)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			sub, err := scanSubmission(rows)
			if err != nil {
				return err
			}
			got = append(got, sub)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, sub := range got {
			if sub.Status != store.SubmissionError || sub.NotifyInstance == "" {
				continue
			}
			payload, err := outboxPayload(sub.ID, sub.Status, sub.Error, nil)
			if err != nil {
				return err
			}
			if _, err := c.Exec(ctx, s.tq.insertOutbox, payload, n, n, key.Class, key.Name, sub.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("recover submissions of agent %s: %w", key, err)
	}
	// RETURNING gives the rows in no particular order.
	slices.SortFunc(got, func(a, b *store.Submission) int { return cmp.Compare(a.Seq, b.Seq) })
	var requeued, failed []store.Submission
	for _, sub := range got {
		if sub.Status == store.SubmissionPending {
			requeued = append(requeued, *sub)
		} else {
			failed = append(failed, *sub)
		}
	}
	return requeued, failed, nil
}

// ListConversation implements store.ThinkStore.
func (s *Store) ListConversation(ctx context.Context, key store.AgentKey) ([]store.ConversationMessage, error) {
	ms, err := s.conversationFrom(ctx, key, 0)
	if err != nil {
		return nil, fmt.Errorf("list the conversation of agent %s: %w", key, err)
	}
	return ms, nil
}

// ListConversationFrom implements store.ThinkStore.
func (s *Store) ListConversationFrom(ctx context.Context, key store.AgentKey, seq int64) ([]store.ConversationMessage, error) {
	if seq < 0 {
		return nil, fmt.Errorf("list the conversation of agent %s from message %d: seq must not be negative", key, seq)
	}
	ms, err := s.conversationFrom(ctx, key, seq)
	if err != nil {
		return nil, fmt.Errorf("list the conversation of agent %s from message %d: %w", key, seq, err)
	}
	return ms, nil
}

// conversationFrom reads the agent's messages from seq on (0: all of them;
// seqs start at 1).
func (s *Store) conversationFrom(ctx context.Context, key store.AgentKey, seq int64) ([]store.ConversationMessage, error) {
	return readAll(ctx, s, s.tq.conversationFrom, []any{key.Class, key.Name, seq}, scanConversation)
}

// ClearConversation implements store.ThinkStore. The seqs of messages
// appended afterwards start again at 1.
func (s *Store) ClearConversation(ctx context.Context, key store.AgentKey) error {
	if _, err := s.exec(ctx, s.tq.clearConversation, key.Class, key.Name); err != nil {
		return fmt.Errorf("clear the conversation of agent %s: %w", key, err)
	}
	return nil
}

// PendingSubmissionAgents implements store.ThinkStore.
func (s *Store) PendingSubmissionAgents(ctx context.Context, classes []string, limit int) ([]store.AgentKey, error) {
	if len(classes) == 0 {
		return nil, nil
	}
	args := append(strArgs(classes), limit)
	rows, err := s.readRows(ctx, s.inList(s.tq.pendingAgents, len(classes)), args...)
	if err != nil {
		return nil, fmt.Errorf("find agents with pending submissions: %w", err)
	}
	defer rows.Close()
	var keys []store.AgentKey
	for rows.Next() {
		var k store.AgentKey
		if err := rows.Scan(&k.Class, &k.Name); err != nil {
			return nil, fmt.Errorf("find agents with pending submissions: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}
