package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"agentflow/store"
)

// This file implements store.AgentWorkflowStore: the tracking rows in which
// an agent keeps the workflow instances it started (agent_workflows). The
// other half of agents ⇄ workflows is in sqlstore.go: an instance's origin
// (origin_class, origin_name) and the notice Finish queues for it.
//
// metadata is JSON text in a TEXT column on both engines: SQLite's JSON
// functions read a BLOB as binary JSONB, and PostgreSQL casts TEXT to json
// directly. It is checked when stored (checkMetadata), so that the filter's
// JSON functions never meet anything but an object.

const agentWorkflowCols = `class, name, workflow_id, binding, workflow, service, status, metadata,
 error_name, error_message, created_at, updated_at, completed_at`

// maxWorkflowPage is ListAgentWorkflows' default and largest page.
const maxWorkflowPage = 100

type agentWorkflowQueries struct {
	insert, get, delete                    string
	progress, finish, sync                 string
	listHead, listAfter, listTail          string
	listStatuses, listWorkflow, metaEqual  string
	outcome, ackFinish, ackSync, ackDelete string
	// createTracked inserts the instance and its tracking row in one
	// statement, where the dialect has data-modifying CTEs; "" elsewhere.
	createTracked string
}

// trackConflict replaces a tracking row left for an earlier instance with
// the same id (which retention deleted): the instance insert before it
// proves the id is new.
const trackConflict = `
 ON CONFLICT (class, name, workflow_id) DO UPDATE SET binding = excluded.binding, workflow = excluded.workflow,
   service = excluded.service, status = excluded.status, metadata = excluded.metadata,
   error_name = excluded.error_name, error_message = excluded.error_message, created_at = excluded.created_at,
   updated_at = excluded.updated_at, completed_at = excluded.completed_at`

func newAgentWorkflowQueries(d *Dialect) agentWorkflowQueries {
	// finish and sync change the row only when the status or the error
	// differs, so that an update that repeats the row's state is reported
	// as no change and leaves its times alone.
	set := `UPDATE agent_workflows SET status = ?, error_name = ?, error_message = ?, completed_at = ?, updated_at = ?
 WHERE class = ? AND name = ? AND workflow_id = ?
   AND (status <> ? OR error_name IS DISTINCT FROM ? OR error_message IS DISTINCT FROM ?)`
	finish := set + ` AND status NOT IN ` + sqlList(store.StatusTerminated, store.StatusPaused)
	q := agentWorkflowQueries{
		// The tracking row, after insertInstance in a transaction.
		insert: d.Rebind(`INSERT INTO agent_workflows (` + agentWorkflowCols + `)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)` + trackConflict),
		get:    d.Rebind(`SELECT ` + agentWorkflowCols + ` FROM agent_workflows WHERE class = ? AND name = ? AND workflow_id = ?`),
		delete: d.Rebind(`DELETE FROM agent_workflows WHERE class = ? AND name = ? AND workflow_id = ?`),
		progress: d.Rebind(`UPDATE agent_workflows SET status = '` + string(store.StatusRunning) + `', updated_at = ?
 WHERE class = ? AND name = ? AND workflow_id = ? AND status IN ` + sqlList(store.StatusQueued, store.StatusWaiting) + `
 RETURNING ` + agentWorkflowCols),
		finish: d.Rebind(finish + ` RETURNING ` + agentWorkflowCols),
		sync:   d.Rebind(set + ` RETURNING ` + agentWorkflowCols),

		// ListAgentWorkflows' query is put together from these, with ?
		// placeholders, and rebound once put together.
		// created_at IS NOT NULL (every row) makes agent_workflows_page,
		// partial on it, usable (migration 0013 says why).
		listHead:     `SELECT ` + agentWorkflowCols + ` FROM agent_workflows WHERE class = ? AND name = ? AND created_at IS NOT NULL`,
		listStatuses: ` AND status IN (%s)`,
		listWorkflow: ` AND workflow = ?`,
		// A row comparison, which PostgreSQL makes a condition of the
		// index scan rather than a filter of the rows it reads.
		listAfter: ` AND (created_at, workflow_id) < (?, ?)`,
		listTail:  ` ORDER BY created_at DESC, workflow_id DESC LIMIT ?`,
	}
	if d.WritableCTEs {
		// The tracking row is inserted only if the instance was: none
		// for a taken id, which the statement reports as no row changed.
		q.createTracked = d.Rebind(`WITH i AS (` + insertInstanceSQL + ` RETURNING id)
 INSERT INTO agent_workflows (` + agentWorkflowCols + `)
 SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM i` + trackConflict)
	}
	// The instance's end and the tracking row (its NOT NULL columns as
	// zero values when there is none, which the first column tells), in
	// the order scanOutcome reads them. The row's key is given in full, not
	// joined on i.id: PostgreSQL's generic plan then looks it up by the
	// whole primary key rather than reading all of the agent's rows.
	q.outcome = d.Rebind(`SELECT i.status, i.output, i.error_name, i.error_message, w.workflow_id IS NOT NULL,
 COALESCE(w.class, ''), COALESCE(w.name, ''), COALESCE(w.workflow_id, ''), COALESCE(w.binding, ''),
 COALESCE(w.workflow, ''), COALESCE(w.service, ''), COALESCE(w.status, ''), w.metadata, w.error_name, w.error_message,
 COALESCE(w.created_at, 0), COALESCE(w.updated_at, 0), w.completed_at
 FROM workflow_instances i LEFT JOIN agent_workflows w ON w.class = ? AND w.name = ? AND w.workflow_id = ?
 WHERE i.id = ?`)
	// A notice's acknowledgement: the tracking update, and the deletion
	// of the notice while its claimant still holds it. Where the dialect
	// has data-modifying CTEs they are one statement (the DELETE first);
	// elsewhere two in one transaction.
	del := `DELETE FROM agent_schedules WHERE id = ? AND class = ? AND name = ? AND owner = ?`
	if d.WritableCTEs {
		q.ackFinish = d.Rebind(`WITH d AS (` + del + `) ` + finish)
		q.ackSync = d.Rebind(`WITH d AS (` + del + `) ` + set)
	} else {
		q.ackFinish, q.ackSync, q.ackDelete = d.Rebind(finish), d.Rebind(set), d.Rebind(del)
	}
	// A top-level key whose value is a string, number or boolean, with
	// the value's JSON text (a string unquoted; a number as written)
	// equal to a text. Objects, arrays and null match nothing.
	switch d.JSON {
	case JSONPostgres:
		q.metaEqual = ` AND CASE WHEN json_typeof(CAST(metadata AS json) -> CAST(? AS TEXT)) IN ('string', 'number', 'boolean')
   THEN CAST(metadata AS json) ->> CAST(? AS TEXT) END = CAST(? AS TEXT)`
	default:
		// json_extract gives booleans as 1 and 0 and numbers as SQL
		// numbers; -> gives a number's text as written.
		q.metaEqual = ` AND CASE json_type(metadata, ?) WHEN 'text' THEN json_extract(metadata, ?)
   WHEN 'integer' THEN metadata -> ? WHEN 'real' THEN metadata -> ? WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END = ?`
	}
	return q
}

// metaEqualArgs are the arguments of metaEqual for key and text.
func (s *Store) metaEqualArgs(key, text string) []any {
	if s.d.JSON == JSONPostgres {
		return []any{key, key, text}
	}
	p := sqlitePath(key)
	return []any{p, p, p, p, text}
}

// sqlitePath is the SQLite JSON path of a top-level key: $."key", the key
// written as a JSON string, which SQLite's paths unescape.
func sqlitePath(key string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(key) // a string always encodes
	return "$." + strings.TrimSuffix(b.String(), "\n")
}

// checkMetadata accepts nil or a JSON object whose top-level keys are
// unique (the engines disagree on which of two equal keys a filter reads).
func checkMetadata(md []byte) error {
	if md == nil {
		return nil
	}
	if !utf8.Valid(md) || !json.Valid(md) {
		return errors.New("metadata is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(md))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return errors.New("metadata is not a JSON object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return fmt.Errorf("metadata has the key %q twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fmt.Errorf("metadata: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("metadata has data after its object")
	}
	return nil
}

// metadataArg is the stored form of metadata: text, or NULL.
func metadataArg(md []byte) any {
	if md == nil {
		return nil
	}
	return string(md)
}

func scanAgentWorkflow(r rowScanner) (*store.AgentWorkflow, error) {
	var (
		w                store.AgentWorkflow
		status           string
		md               sql.NullString
		errName, errMsg  sql.NullString
		created, updated int64
		completed        sql.NullInt64
	)
	if err := r.Scan(&w.Class, &w.Name, &w.WorkflowID, &w.Binding, &w.Workflow, &w.Service, &status, &md,
		&errName, &errMsg, &created, &updated, &completed); err != nil {
		return nil, err
	}
	w.Status = store.Status(status)
	if md.Valid {
		w.Metadata = []byte(md.String)
	}
	w.ErrorName, w.ErrorMessage = errName.String, errMsg.String
	w.CreatedAt, w.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	w.CompletedAt = fromMicros(completed)
	return &w, nil
}

// CreateTrackedInstance implements store.AgentWorkflowStore.
func (s *Store) CreateTrackedInstance(ctx context.Context, in *store.Instance, wf *store.AgentWorkflow) error {
	op := fmt.Sprintf("create instance %q tracked by agent %s", in.ID, in.Origin)
	switch {
	case in.Origin == (store.AgentKey{}):
		return fmt.Errorf("%s: the instance has no Origin", op)
	case wf.AgentKey != in.Origin:
		return fmt.Errorf("%s: the tracking row is agent %s's", op, wf.AgentKey)
	case wf.WorkflowID != in.ID:
		return fmt.Errorf("%s: the tracking row is for workflow %q", op, wf.WorkflowID)
	}
	if err := checkMetadata(wf.Metadata); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	// Zero fields default to the instance's.
	status, workflow, service, created := wf.Status, wf.Workflow, wf.Service, wf.CreatedAt
	if status == "" {
		status = in.Status
	}
	if workflow == "" {
		workflow = in.Workflow
	}
	if service == "" {
		service = in.Service
	}
	if created.IsZero() {
		created = in.CreatedAt
	}
	updated := wf.UpdatedAt
	if updated.IsZero() {
		updated = created
	}
	args := []any{wf.Class, wf.Name, wf.WorkflowID, wf.Binding, workflow, service, string(status), metadataArg(wf.Metadata),
		nullString(wf.ErrorName), nullString(wf.ErrorMessage), created.UnixMicro(), updated.UnixMicro(), micros(wf.CompletedAt)}
	var err error
	if s.wq.createTracked != "" {
		instArgs, fence := insertInstanceArgs(in)
		err = s.w.WriteOne(ctx, func(ctx context.Context, c Conn) error {
			n, err := c.Exec(ctx, s.wq.createTracked, append(instArgs, args...)...)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			if n == 0 {
				return &store.InstanceError{ID: in.ID, Op: "create", Err: store.ErrDuplicateID}
			}
			return nil
		})
		if err == nil {
			in.Fence = fence
		}
	} else {
		err = s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			c := TxConn(tx)
			if err := s.insertInstance(ctx, c, in); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, s.wq.insert, args...); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		})
	}
	if err == nil {
		s.wakeQueued(in)
	}
	return err
}

// GetAgentWorkflow implements store.AgentWorkflowStore.
func (s *Store) GetAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string) (*store.AgentWorkflow, error) {
	w, err := readOne(ctx, s, s.wq.get, []any{key.Class, key.Name, workflowID}, scanAgentWorkflow)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get workflow %q of agent %s: %w", workflowID, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get workflow %q of agent %s: %w", workflowID, key, err)
	}
	return w, nil
}

// ListAgentWorkflows implements store.AgentWorkflowStore.
func (s *Store) ListAgentWorkflows(ctx context.Context, key store.AgentKey, f store.WorkflowFilter) ([]store.AgentWorkflow, error) {
	q, args := s.listAgentWorkflows(key, f)
	ws, err := readAllOnce(ctx, s, q, args, scanAgentWorkflow)
	if err != nil {
		return nil, fmt.Errorf("list workflows of agent %s: %w", key, err)
	}
	return ws, nil
}

// listAgentWorkflows is ListAgentWorkflows' query and its arguments.
func (s *Store) listAgentWorkflows(key store.AgentKey, f store.WorkflowFilter) (string, []any) {
	limit := f.Limit
	if limit <= 0 || limit > maxWorkflowPage {
		limit = maxWorkflowPage
	}
	var b strings.Builder
	b.WriteString(s.wq.listHead)
	args := []any{key.Class, key.Name}
	if len(f.Statuses) > 0 {
		b.WriteString(fmt.Sprintf(s.wq.listStatuses, strings.TrimSuffix(strings.Repeat("?, ", len(f.Statuses)), ", ")))
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	if f.Workflow != "" {
		b.WriteString(s.wq.listWorkflow)
		args = append(args, f.Workflow)
	}
	if f.After != nil {
		b.WriteString(s.wq.listAfter)
		args = append(args, f.After.CreatedAt.UnixMicro(), f.After.WorkflowID)
	}
	// Sorted, so that one filter is always one query text.
	keys := make([]string, 0, len(f.Metadata))
	for k := range f.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(s.wq.metaEqual)
		args = append(args, s.metaEqualArgs(k, f.Metadata[k])...)
	}
	b.WriteString(s.wq.listTail)
	return s.d.Rebind(b.String()), append(args, limit)
}

// UpdateAgentWorkflow implements store.AgentWorkflowStore. The update is
// one statement that changes the row only if the rule allows it and it
// makes a difference; when it changes nothing, a read says whether the row
// exists and gives it as it is.
func (s *Store) UpdateAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string, u store.TrackingUpdate, now time.Time) (*store.AgentWorkflow, bool, error) {
	op := fmt.Sprintf("update workflow %q of agent %s (%s)", workflowID, key, u.Rule)
	n := now.UnixMicro()
	var q string
	var args []any
	switch u.Rule {
	case store.TrackProgress:
		q, args = s.wq.progress, []any{n, key.Class, key.Name, workflowID}
	case store.TrackFinish, store.TrackSync:
		q = s.wq.sync
		if u.Rule == store.TrackFinish {
			if u.Status != store.StatusComplete && u.Status != store.StatusErrored {
				return nil, false, fmt.Errorf("%s: status %q is neither complete nor errored", op, u.Status)
			}
			q = s.wq.finish
		} else if u.Status == "" {
			return nil, false, fmt.Errorf("%s: no status given", op)
		}
		var completed any
		if u.Status.Finished() {
			completed = n
		}
		errName, errMsg := nullString(u.ErrorName), nullString(u.ErrorMessage)
		args = []any{string(u.Status), errName, errMsg, completed, n, key.Class, key.Name, workflowID,
			string(u.Status), errName, errMsg}
	default:
		return nil, false, fmt.Errorf("update workflow %q of agent %s: unknown tracking rule %q", workflowID, key, u.Rule)
	}
	got, err := writeRows(ctx, s, q, args, scanAgentWorkflow)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	if len(got) == 1 {
		return got[0], true, nil
	}
	w, err := readOne(ctx, s, s.wq.get, []any{key.Class, key.Name, workflowID}, scanAgentWorkflow)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	return w, false, nil
}

// DeleteAgentWorkflow implements store.AgentWorkflowStore.
func (s *Store) DeleteAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string) (bool, error) {
	changed, err := s.exec(ctx, s.wq.delete, key.Class, key.Name, workflowID)
	if err != nil {
		return false, fmt.Errorf("delete workflow %q of agent %s: %w", workflowID, key, err)
	}
	return changed > 0, nil
}

// GetWorkflowOutcome implements store.AgentWorkflowStore.
func (s *Store) GetWorkflowOutcome(ctx context.Context, key store.AgentKey, workflowID string) (*store.WorkflowOutcome, error) {
	o, err := readOne(ctx, s, s.wq.outcome, []any{key.Class, key.Name, workflowID, workflowID}, scanOutcome)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("outcome of workflow %q of agent %s: %w", workflowID, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("outcome of workflow %q of agent %s: %w", workflowID, key, err)
	}
	return o, nil
}

// scanOutcome reads a row of the outcome query.
func scanOutcome(r rowScanner) (*store.WorkflowOutcome, error) {
	var (
		o               store.WorkflowOutcome
		status          string
		errName, errMsg sql.NullString
		tracked         bool
	)
	w, err := scanAgentWorkflow(prefixScanner{r: r, pre: []any{&status, &o.Output, &errName, &errMsg, &tracked}})
	if err != nil {
		return nil, err
	}
	o.Status, o.ErrorName, o.ErrorMessage = store.Status(status), errName.String, errMsg.String
	if tracked {
		o.Tracking = w
	}
	return &o, nil
}

// prefixScanner scans its row into pre and then into the destinations it
// is given.
type prefixScanner struct {
	r   rowScanner
	pre []any
}

func (p prefixScanner) Scan(dest ...any) error { return p.r.Scan(append(p.pre, dest...)...) }

// AckWorkflowNotice implements store.AgentWorkflowStore.
func (s *Store) AckWorkflowNotice(ctx context.Context, a store.NoticeAck, now time.Time) error {
	op := fmt.Sprintf("acknowledge notice %s of workflow %q to agent %s", a.NoticeID, a.WorkflowID, a.AgentKey)
	u := a.Update
	q := s.wq.ackSync
	switch u.Rule {
	case store.TrackFinish:
		if u.Status != store.StatusComplete && u.Status != store.StatusErrored {
			return fmt.Errorf("%s: status %q is neither complete nor errored", op, u.Status)
		}
		q = s.wq.ackFinish
	case store.TrackSync:
		if u.Status == "" {
			return fmt.Errorf("%s: no status given", op)
		}
	default:
		return fmt.Errorf("%s: tracking rule %q is neither %q nor %q", op, u.Rule, store.TrackFinish, store.TrackSync)
	}
	if a.NoticeID == "" || a.Owner == "" {
		return fmt.Errorf("%s: the notice id and its owner must be given", op)
	}
	n := now.UnixMicro()
	var completed any
	if u.Status.Finished() {
		completed = n
	}
	errName, errMsg := nullString(u.ErrorName), nullString(u.ErrorMessage)
	del := []any{a.NoticeID, a.Class, a.Name, a.Owner}
	set := []any{string(u.Status), errName, errMsg, completed, n, a.Class, a.Name, a.WorkflowID,
		string(u.Status), errName, errMsg}
	one := s.wq.ackDelete == ""
	err := s.write(ctx, one, func(ctx context.Context, c Conn) error {
		if one {
			_, err := c.Exec(ctx, q, append(del, set...)...)
			return err
		}
		if _, err := c.Exec(ctx, q, set...); err != nil {
			return err
		}
		_, err := c.Exec(ctx, s.wq.ackDelete, del...)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
