package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"agentflow/store"
)

// This file implements the ends of Think submissions and their outbox
// (think_outbox, store.OutboxMessage).
//
// A submission that names a waiting workflow instance (notify_instance and
// notify_event) gets one outbox row written with the change that ends it:
// on PostgreSQL FinishSubmission is one statement (a writable CTE: the
// UPDATE, and an INSERT … SELECT from its RETURNING), elsewhere, and for
// FinishPendingSubmission and CancelSubmission, the INSERT … SELECT runs
// after the UPDATE in the same transaction. The INSERT selects the target
// from the submission row itself, so a submission without one gets no row
// and the payload, built in Go with encoding/json, is only stored when it
// does.
//
// Outbox claims (owner) follow the rule of agents.go: a claim held by a
// node without a row in agentflow_nodes is free. A node's writes on a
// message it claimed (DeliveredOutbox, FailedOutbox, RetryOutbox) are
// fenced by owner.

// finishSubmissionSQL ends a running submission while owner runs it.
const finishSubmissionSQL = `UPDATE think_submissions SET status = ?, error = ?, output = ?, owner = NULL, finished_at = ?,
   input_tokens = ?, output_tokens = ?
 WHERE class = ? AND name = ? AND id = ? AND owner = ? AND status = '` + string(store.SubmissionRunning) + `'`

const outboxCols = `id, class, name, submission_id, instance_id, event_type, payload, attempts, last_error, next_attempt_at,
 owner, created_at, delivered_at, failed`

// outboxInsertCols are the columns an end of a submission fills.
const outboxInsertCols = `class, name, submission_id, instance_id, event_type, payload, attempts, next_attempt_at, created_at`

type outboxQueries struct {
	finishNotify, insertOutbox                            string
	finishReturning, insertDelivered, claimWoken          string
	lastStep                                              string
	claimOutbox, nextOutbox, deliveredOutbox, retryOutbox string
	failedOutbox                                          string
	outboxByID, pruneOutbox, getOutbox                    string
}

func newOutboxQueries(d *Dialect) outboxQueries {
	r := d.Rebind
	due := `delivered_at IS NULL AND next_attempt_at <= ? AND (owner IS NULL OR NOT ` + live("think_outbox.owner") + `)`
	q := outboxQueries{
		// Arguments: payload, next_attempt_at, created_at, then the
		// submission's class, name and id.
		insertOutbox: r(`INSERT INTO think_outbox (` + outboxInsertCols + `)
 SELECT class, name, id, notify_instance, notify_event, ?, 0, ?, ? FROM think_submissions
 WHERE class = ? AND name = ? AND id = ? AND notify_instance IS NOT NULL`),
		// FinishSubmissionAndDeliver's: the finish, returning the
		// submission's target, and the outbox row of a message it
		// delivered itself.
		finishReturning: r(finishSubmissionSQL + ` RETURNING notify_instance, notify_event`),
		insertDelivered: r(`INSERT INTO think_outbox (` + outboxInsertCols + `, delivered_at)
 VALUES (?, ?, ?, ?, ?, NULL, 0, ?, ?, ?)`),
		// Claims an instance that waits for the event just inserted, as
		// claimDue does; run with the instance's row locked.
		claimWoken: r(`UPDATE workflow_instances
 SET owner = ?, fence = fence + 1, wake_at = NULL, waiting_event = NULL, updated_at = ?, status = 'running'
 WHERE id = ? AND owner IS NULL AND ` + notIndexed("status") + ` = 'waiting' AND waiting_event = ? AND service = ?
 RETURNING ` + instanceCols),
		// The step a claimed instance waits in: its last one.
		lastStep: r(`SELECT ` + stepCols + `, started_at FROM workflow_steps WHERE instance_id = ? ORDER BY seq DESC LIMIT 1`),
		// The inner SELECT locks the rows it picks (on PostgreSQL, skipping
		// those another claim holds); a row another claim committed after
		// this statement's snapshot is checked again in its new version,
		// whose owner has a row, so it is not taken twice.
		//
		// The picked ids are a materialized CTE rather than an IN
		// (subquery): PostgreSQL may run such a subquery again for each
		// row it updates, and with SKIP LOCKED each run skips the rows
		// already updated and picks further ones, past the limit.
		//
		// Picked in the order of think_outbox_due (earliest due first), so
		// that the pick walks that index's undelivered rows: in id order
		// SQLite scans the whole table, a week of delivered messages.
		claimOutbox: r(`WITH picked AS MATERIALIZED (SELECT think_outbox.id FROM think_outbox WHERE ` + due + `
              ORDER BY think_outbox.next_attempt_at, think_outbox.id LIMIT ?` + d.SkipLocked + `)
UPDATE think_outbox SET owner = ?
 WHERE id IN (SELECT id FROM picked) AND ` + due + `
 RETURNING ` + outboxCols),
		nextOutbox: r(`SELECT next_attempt_at FROM think_outbox WHERE ` + due + `
 ORDER BY next_attempt_at, id LIMIT ?`),
		deliveredOutbox: r(`UPDATE think_outbox SET payload = NULL, owner = NULL, delivered_at = ?
 WHERE id = ? AND owner = ? AND delivered_at IS NULL`),
		failedOutbox: r(`UPDATE think_outbox SET payload = NULL, owner = NULL, delivered_at = ?, failed = 1, last_error = ?
 WHERE id = ? AND owner = ? AND delivered_at IS NULL`),
		retryOutbox: r(`UPDATE think_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, owner = NULL
 WHERE id = ? AND owner = ? AND delivered_at IS NULL`),
		outboxByID: r(`SELECT ` + outboxCols + ` FROM think_outbox WHERE id = ?`),
		pruneOutbox: r(`WITH picked AS MATERIALIZED (SELECT id FROM think_outbox
 WHERE delivered_at IS NOT NULL AND delivered_at < ? ORDER BY delivered_at, id LIMIT ?` + d.SkipLocked + `)
DELETE FROM think_outbox WHERE id IN (SELECT id FROM picked)`),
		getOutbox: r(`SELECT ` + outboxCols + ` FROM think_outbox WHERE class = ? AND name = ? AND submission_id = ? ORDER BY id`),
	}
	if d.WritableCTEs {
		// Arguments: finishSubmissionSQL's, then payload, next_attempt_at,
		// created_at. It returns how many submissions it finished and how
		// many outbox messages it wrote.
		q.finishNotify = r(`WITH f AS (` + finishSubmissionSQL + `
 RETURNING class, name, id, notify_instance, notify_event),
o AS (INSERT INTO think_outbox (` + outboxInsertCols + `)
 SELECT class, name, id, notify_instance, notify_event, ?, 0, ?, ? FROM f WHERE notify_instance IS NOT NULL RETURNING 1)
SELECT (SELECT COUNT(*) FROM f), (SELECT COUNT(*) FROM o)`)
	}
	return q
}

func scanOutbox(r rowScanner) (*store.OutboxMessage, error) {
	var (
		m              store.OutboxMessage
		lastErr, owner sql.NullString
		attempts       int64
		next, created  int64
		delivered      sql.NullInt64
		failed         int64
	)
	if err := r.Scan(&m.ID, &m.Class, &m.Name, &m.SubmissionID, &m.InstanceID, &m.EventType, &m.Payload, &attempts,
		&lastErr, &next, &owner, &created, &delivered, &failed); err != nil {
		return nil, err
	}
	m.Failed = failed != 0
	m.Attempts = int(attempts)
	m.LastError, m.Owner = lastErr.String, owner.String
	m.NextAttemptAt, m.CreatedAt = time.UnixMicro(next).UTC(), time.UnixMicro(created).UTC()
	m.DeliveredAt = fromMicros(delivered)
	return &m, nil
}

// outboxPayload is the payload of the outbox message of a submission that
// ended: {"submissionId","status","error","output"}, output being the
// submission's JSON output or null.
func outboxPayload(id string, status store.SubmissionStatus, errMsg string, output []byte) ([]byte, error) {
	var out json.RawMessage
	if output != nil {
		if !json.Valid(output) {
			return nil, errors.New("output is not valid JSON")
		}
		out = output
	}
	return json.Marshal(struct {
		SubmissionID string          `json:"submissionId"`
		Status       string          `json:"status"`
		Error        string          `json:"error"`
		Output       json.RawMessage `json:"output"`
	}{id, string(status), errMsg, out})
}

// FinishSubmission implements store.ThinkStore.
func (s *Store) FinishSubmission(ctx context.Context, key store.AgentKey, id, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time) error {
	op := fmt.Sprintf("finish submission %s of agent %s", id, key)
	if !status.Finished() {
		return fmt.Errorf("%s: status %q is not a finished one", op, status)
	}
	payload, err := outboxPayload(id, status, errMsg, output)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	n := now.UnixMicro()
	args := []any{string(status), nullString(errMsg), blob(output), n,
		usage.InputTokens, usage.OutputTokens, key.Class, key.Name, id, owner}
	var changed, queued int64 // submissions finished, outbox messages written
	if s.tq.finishNotify != "" {
		err = s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
			changed, queued = 0, 0
			rows, err := c.Query(ctx, s.tq.finishNotify, append(args, payload, n, n)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			if rows.Next() {
				if err := rows.Scan(&changed, &queued); err != nil {
					return err
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
			return rows.Close()
		})
	} else {
		err = s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			c := TxConn(tx)
			var err error
			queued = 0
			if changed, err = c.Exec(ctx, s.tq.finishSubmission, args...); err != nil || changed == 0 {
				return err
			}
			queued, err = c.Exec(ctx, s.tq.insertOutbox, payload, n, n, key.Class, key.Name, id)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if queued > 0 {
		s.wake(store.Wake{Kind: store.WakeOutbox})
	}
	if changed == 0 {
		return fmt.Errorf("%s: %s does not run it: %w", op, owner, store.ErrLeaseLost)
	}
	return nil
}

// FinishSubmissionAndDeliver implements store.ThinkStore. The instance's
// row is locked and checked as SendEvent does, in the transaction that
// ends the submission, so the event is inserted (and the instance woken)
// exactly when the submission's end commits, and the outbox row, written
// delivered, keeps the ledger's record of it.
func (s *Store) FinishSubmissionAndDeliver(ctx context.Context, key store.AgentKey, id, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time, d store.Delivery) (bool, *store.Instance, error) {
	if d.MaxEventBytes <= 0 {
		return false, nil, s.FinishSubmission(ctx, key, id, owner, status, errMsg, output, usage, now)
	}
	op := fmt.Sprintf("finish submission %s of agent %s", id, key)
	if !status.Finished() {
		return false, nil, fmt.Errorf("%s: status %q is not a finished one", op, status)
	}
	payload, err := outboxPayload(id, status, errMsg, output)
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", op, err)
	}
	n := now.UnixMicro()
	args := []any{string(status), nullString(errMsg), blob(output), n,
		usage.InputTokens, usage.OutputTokens, key.Class, key.Name, id, owner}
	var (
		changed, delivered bool
		queued             int64       // outbox messages written undelivered
		woke               *store.Wake // the instance's service, if the event woke it
		claimed            *store.Instance
	)
	err = s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		changed, delivered, queued, woke, claimed = false, false, 0, nil, nil
		var inst, typ sql.NullString
		err := QueryRow(ctx, tx, s.tq.finishReturning, args...).Scan(&inst, &typ)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // owner does not run it
		}
		if err != nil {
			return err
		}
		changed = true
		if !inst.Valid {
			return nil // nobody to tell
		}
		c := TxConn(tx)
		if len(payload) <= d.MaxEventBytes {
			li, err := s.lock(ctx, tx, inst.String, "deliver a submission's end to")
			switch {
			case errors.Is(err, store.ErrNotFound):
				// Not in this store: the outbox tells it.
			case err != nil:
				return err
			case !li.status.Finished():
				if _, err := c.Exec(ctx, s.q.insertEvent, inst.String, typ.String, blob(payload), n); err != nil {
					return fmt.Errorf("send event to instance %q: %w", inst.String, err)
				}
				switch {
				case !li.waitsFor(typ.String):
					// Not waiting for it: it takes the event when it does.
				case d.ClaimOwner != "" && li.service == d.ClaimService:
					in, err := scanInstance(QueryRow(ctx, tx, s.tq.claimWoken, d.ClaimOwner, n, inst.String, typ.String, li.service))
					if err != nil {
						return fmt.Errorf("claim instance %q: %w", inst.String, err)
					}
					if err := s.takeForWait(ctx, tx, inst.String, typ.String, now); err != nil {
						return err
					}
					claimed = in
				default:
					if _, err := c.Exec(ctx, s.q.wakeForEvent, n, inst.String); err != nil {
						return fmt.Errorf("wake instance %q: %w", inst.String, err)
					}
					woke = &store.Wake{Kind: store.WakeInstances, Key: li.service}
				}
				if _, err := c.Exec(ctx, s.tq.insertDelivered, key.Class, key.Name, id, inst.String, typ.String, n, n, n); err != nil {
					return fmt.Errorf("record its outbox message: %w", err)
				}
				delivered = true
				return nil
			}
		}
		queued, err = c.Exec(ctx, s.tq.insertOutbox, payload, n, n, key.Class, key.Name, id)
		return err
	})
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", op, err)
	}
	switch {
	case woke != nil:
		s.wake(*woke)
	case queued > 0:
		s.wake(store.Wake{Kind: store.WakeOutbox})
	}
	if !changed {
		return false, nil, fmt.Errorf("%s: %s does not run it: %w", op, owner, store.ErrLeaseLost)
	}
	return delivered, claimed, nil
}

// takeForWait does, for an instance just claimed for the event of type
// typ it waited for, what the replay's TakeEvent would do first: it
// consumes the oldest unconsumed event of the type and stores the pending
// wait step it is suspended in as done with the event's payload, so the
// replay returns the payload without a write. An instance whose last step
// is not a pending wait (none is stored) is left to its replay.
func (s *Store) takeForWait(ctx context.Context, tx *sql.Tx, id, typ string, now time.Time) error {
	st, err := scanStep(QueryRow(ctx, tx, s.tq.lastStep, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the wait step of instance %q: %w", id, err)
	}
	if st.Kind != store.KindWait || st.State != store.StepPending {
		return nil
	}
	var (
		seq, created int64
		payload      []byte
	)
	if err := QueryRow(ctx, tx, s.q.oldestEvent, id, typ).Scan(&seq, &payload, &created); err != nil {
		return fmt.Errorf("take event for %q: %w", id, err)
	}
	if _, err := Exec(ctx, tx, s.q.consumeEvent, now.UnixMicro(), seq); err != nil {
		return fmt.Errorf("consume event %d: %w", seq, err)
	}
	st.State, st.Result, st.StartedAt = store.StepDone, payload, now
	if _, err := Exec(ctx, tx, s.q.upsertStep, stepArgs(id, st, now)...); err != nil {
		return fmt.Errorf("save step %q of %q: %w", st.Name, id, err)
	}
	return nil
}

// FinishPendingSubmission implements store.ThinkStore.
func (s *Store) FinishPendingSubmission(ctx context.Context, key store.AgentKey, id string, status store.SubmissionStatus, errMsg string, now time.Time) (store.SubmissionStatus, error) {
	op := fmt.Sprintf("finish pending submission %s of agent %s", id, key)
	if !status.Finished() {
		return "", fmt.Errorf("%s: status %q is not a finished one", op, status)
	}
	return s.finishPending(ctx, op, key, id, status, errMsg, now)
}

// CancelSubmission implements store.ThinkStore.
func (s *Store) CancelSubmission(ctx context.Context, key store.AgentKey, id string, now time.Time) (store.SubmissionStatus, error) {
	op := fmt.Sprintf("cancel submission %s of agent %s", id, key)
	return s.finishPending(ctx, op, key, id, store.SubmissionAborted, "", now)
}

// finishPending ends the submission with status and errMsg if it is
// pending, with its outbox message, and returns the status it had.
func (s *Store) finishPending(ctx context.Context, op string, key store.AgentKey, id string, status store.SubmissionStatus, errMsg string, now time.Time) (store.SubmissionStatus, error) {
	payload, err := outboxPayload(id, status, errMsg, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	n := now.UnixMicro()
	var (
		prior  store.SubmissionStatus
		queued int64 // outbox messages written
	)
	err = s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		prior, queued = "", 0
		var cur string
		err := QueryRow(ctx, tx, s.tq.lockSubmission, key.Class, key.Name, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s: %w", op, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		prior = store.SubmissionStatus(cur)
		if prior != store.SubmissionPending {
			return nil // running (its runner ends it) or finished
		}
		c := TxConn(tx)
		if _, err := c.Exec(ctx, s.tq.finishPending, string(status), nullString(errMsg), n, key.Class, key.Name, id); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if queued, err = c.Exec(ctx, s.tq.insertOutbox, payload, n, n, key.Class, key.Name, id); err != nil {
			return fmt.Errorf("%s: write its outbox message: %w", op, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if queued > 0 {
		s.wake(store.Wake{Kind: store.WakeOutbox})
	}
	return prior, nil
}

// ClaimOutbox implements store.ThinkStore.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, now time.Time, limit int) ([]store.OutboxMessage, error) {
	if owner == "" {
		return nil, errors.New("claim outbox messages: no owner given")
	}
	if limit <= 0 {
		return nil, nil
	}
	n := now.UnixMicro()
	got, err := writeRows(ctx, s, s.tq.claimOutbox, []any{n, limit, owner, n}, scanOutbox)
	if err != nil {
		return nil, fmt.Errorf("claim outbox messages: %w", err)
	}
	// RETURNING gives the rows in no particular order.
	slices.SortFunc(got, func(a, b *store.OutboxMessage) int { return cmp.Compare(a.ID, b.ID) })
	out := make([]store.OutboxMessage, len(got))
	for i, m := range got {
		out[i] = *m
	}
	return out, nil
}

// NextOutboxTimes implements store.ThinkStore.
func (s *Store) NextOutboxTimes(ctx context.Context, until time.Time, limit int) ([]time.Time, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.readRows(ctx, s.tq.nextOutbox, until.UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("next outbox times: %w", err)
	}
	defer rows.Close()
	var ts []time.Time
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("next outbox times: %w", err)
		}
		ts = append(ts, time.UnixMicro(v).UTC())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("next outbox times: %w", err)
	}
	return ts, nil
}

// fencedOutbox runs q, a write of message id fenced by owner, and says why
// when it changed nothing: the message is gone, delivered, or claimed by
// another (or nobody).
func (s *Store) fencedOutbox(ctx context.Context, what string, id int64, owner, q string, args ...any) error {
	for range maxConflictRetries {
		changed, err := s.exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("%s outbox message %d: %w", what, id, err)
		}
		if changed > 0 {
			return nil
		}
		cur, err := readOne(ctx, s, s.tq.outboxByID, []any{id}, scanOutbox)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s outbox message %d: %w", what, id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("%s outbox message %d: %w", what, id, err)
		}
		op := fmt.Sprintf("%s outbox message %d (submission %s) of agent %s", what, id, cur.SubmissionID, cur.AgentKey)
		if !cur.DeliveredAt.IsZero() {
			done := "delivered"
			if cur.Failed {
				done = "given up"
			}
			return fmt.Errorf("%s: %s already, at %s: %w", op, done, cur.DeliveredAt.Format(time.RFC3339Nano), store.ErrLeaseLost)
		}
		if cur.Owner != owner {
			holder := "nobody"
			if cur.Owner != "" {
				holder = cur.Owner
			}
			return fmt.Errorf("%s: claimed by %s, not %s: %w", op, holder, owner, store.ErrLeaseLost)
		}
		// owner claimed it again since: try again.
	}
	return fmt.Errorf("%s outbox message %d: its claim kept changing", what, id)
}

// DeliveredOutbox implements store.ThinkStore.
func (s *Store) DeliveredOutbox(ctx context.Context, id int64, owner string, now time.Time) error {
	return s.fencedOutbox(ctx, "deliver", id, owner, s.tq.deliveredOutbox, now.UnixMicro(), id, owner)
}

// FailedOutbox implements store.ThinkStore.
func (s *Store) FailedOutbox(ctx context.Context, id int64, owner string, now time.Time, reason string) error {
	return s.fencedOutbox(ctx, "give up", id, owner, s.tq.failedOutbox, now.UnixMicro(), nullString(reason), id, owner)
}

// RetryOutbox implements store.ThinkStore.
func (s *Store) RetryOutbox(ctx context.Context, id int64, owner string, next time.Time, lastError string) error {
	if next.IsZero() {
		return fmt.Errorf("retry outbox message %d: no next attempt time given", id)
	}
	return s.fencedOutbox(ctx, "retry", id, owner, s.tq.retryOutbox, next.UnixMicro(), nullString(lastError), id, owner)
}

// PruneOutbox implements store.ThinkStore.
func (s *Store) PruneOutbox(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	n, err := s.exec(ctx, s.tq.pruneOutbox, before.UnixMicro(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune the outbox: %w", err)
	}
	return int(n), nil
}

// GetOutbox implements store.ThinkStore.
func (s *Store) GetOutbox(ctx context.Context, key store.AgentKey, submissionID string) ([]store.OutboxMessage, error) {
	ms, err := readAll(ctx, s, s.tq.getOutbox, []any{key.Class, key.Name, submissionID}, scanOutbox)
	if err != nil {
		return nil, fmt.Errorf("get the outbox messages of submission %s of agent %s: %w", submissionID, key, err)
	}
	return ms, nil
}
