package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"agentflow/store"
)

// This file serves the paged lists and the counts: their filters come as
// query parameters, and a page's next_page_token is the opaque (base64 of
// JSON) keyset cursor of its last row, tagged with the list it belongs to.

// pageToken is a page_token's content.
type pageToken struct {
	List      string    `json:"l"`
	CreatedAt time.Time `json:"t,omitzero"`
	ID        string    `json:"i,omitempty"`
	Class     string    `json:"c,omitempty"`
	Name      string    `json:"n,omitempty"`
	Seq       int64     `json:"s,omitempty"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeToken reads the page_token of list, if the request has one.
func decodeToken(q query, list string) (*pageToken, error) {
	s := q.v.Get("page_token")
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var t pageToken
	if err == nil {
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		err = dec.Decode(&t)
	}
	if err != nil || t.List != list {
		return nil, apiErr(http.StatusBadRequest, CodeInvalidPageToken,
			"query parameter page_token=%q: not a page token of this list; pass the next_page_token of the previous page", s)
	}
	return &t, nil
}

func (q query) time(name string) (time.Time, error) {
	s := q.v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalidArg("query parameter %s=%q: must be an RFC 3339 time such as 2025-02-23T09:00:00Z", name, s)
	}
	return t, nil
}

// filterErr turns the store's *FilterError into a 400 naming the field.
func filterErr(err error) error {
	var fe *store.FilterError
	if errors.As(err, &fe) {
		return invalidArg("invalid filter: %s %s %s", fe.Field, fe.Value, fe.Rule)
	}
	return err
}

func isInvalidFilter(err error) bool { return errors.Is(err, store.ErrInvalidFilter) }

// instanceFilter reads the filters the workflow list and the counts share.
func instanceFilter(q query) (store.InstanceFilter, error) {
	var f store.InstanceFilter
	for _, s := range q.list("status") {
		if !slices.Contains(store.Statuses, store.Status(s)) {
			return f, invalidArg("query parameter status=%q: must be one of %s", s, joinStrings(store.Statuses))
		}
		f.Statuses = append(f.Statuses, store.Status(s))
	}
	f.Workflows = q.list("workflow")
	// service= (empty) selects the default service.
	for _, s := range q.v["service"] {
		for part := range strings.SplitSeq(s, ",") {
			f.Services = append(f.Services, strings.TrimSpace(part))
		}
	}
	if o := q.v.Get("origin"); o != "" {
		class, name, _ := strings.Cut(o, "/")
		if class == "" {
			return f, invalidArg("query parameter origin=%q: must be an agent class, or class/name", o)
		}
		f.Origin = store.AgentKey{Class: class, Name: name}
	}
	var err error
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"created_from", &f.CreatedFrom}, {"created_to", &f.CreatedTo}, {"updated_from", &f.UpdatedFrom}, {"updated_to", &f.UpdatedTo}} {
		if *t.dst, err = q.time(t.name); err != nil {
			return f, err
		}
	}
	for _, r := range [][2]string{{"created_from", "created_to"}, {"updated_from", "updated_to"}} {
		from, _ := q.time(r[0])
		to, _ := q.time(r[1])
		if !from.IsZero() && !to.IsZero() && !to.After(from) {
			return f, invalidArg("query parameter %s=%q: must be after %s (%s)", r[1], q.v.Get(r[1]), r[0], q.v.Get(r[0]))
		}
	}
	return f, nil
}

var instanceFilterParams = []string{"status", "workflow", "service", "origin", "created_from", "created_to", "updated_from", "updated_to"}

func (h *handler) listWorkflows(r *http.Request) (any, error) {
	q, err := readQuery(r, append(instanceFilterParams, "limit", "page_token")...)
	if err != nil {
		return nil, err
	}
	f, err := instanceFilter(q)
	if err != nil {
		return nil, err
	}
	if f.Limit, err = q.limit("limit", store.MaxPage); err != nil {
		return nil, err
	}
	tok, err := decodeToken(q, "workflows")
	if err != nil {
		return nil, err
	}
	if tok != nil {
		if tok.ID == "" || tok.CreatedAt.IsZero() {
			return nil, apiErr(http.StatusBadRequest, CodeInvalidPageToken, "query parameter page_token: not a page token of this list")
		}
		f.After = &store.InstanceCursor{CreatedAt: tok.CreatedAt, ID: tok.ID}
	}
	insts, err := h.st.ListInstances(r.Context(), f)
	if err != nil {
		return nil, filterErr(err)
	}
	page := WorkflowPage{Workflows: make([]Workflow, len(insts))}
	for i := range insts {
		page.Workflows[i] = workflowJSON(&insts[i], false)
	}
	if limit := cmp0(f.Limit, store.MaxPage); len(insts) == limit {
		last := insts[len(insts)-1]
		page.NextPageToken = encodeToken(pageToken{List: "workflows", CreatedAt: last.CreatedAt, ID: last.ID})
	}
	return page, nil
}

func cmp0(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

func (h *handler) countWorkflows(r *http.Request) (any, error) {
	q, err := readQuery(r, slices.DeleteFunc(slices.Clone(instanceFilterParams), func(s string) bool { return s == "status" })...)
	if err != nil {
		return nil, err
	}
	f, err := instanceFilter(q)
	if err != nil {
		return nil, err
	}
	c, err := h.counts.get(r.Context(), q.v.Encode(), func(ctx context.Context) (map[store.Status]int, error) {
		return h.st.CountInstances(ctx, f)
	})
	if err != nil {
		return nil, filterErr(err)
	}
	out := WorkflowCounts{Counts: map[string]int{}, AsOf: c.at.UTC()}
	for _, s := range store.Statuses {
		out.Counts[string(s)] = c.counts[s]
		out.Total += c.counts[s]
	}
	return out, nil
}

// attempts returns the instance's step attempts.
func (h *handler) attempts(r *http.Request, id string) ([]store.StepAttempt, error) {
	return h.st.ListStepAttempts(r.Context(), id)
}

func (h *handler) listAgents(r *http.Request) (any, error) {
	q, err := readQuery(r, "class", "limit", "page_token")
	if err != nil {
		return nil, err
	}
	f := store.AgentFilter{Class: q.v.Get("class")}
	if f.Limit, err = q.limit("limit", store.MaxPage); err != nil {
		return nil, err
	}
	tok, err := decodeToken(q, "agents")
	if err != nil {
		return nil, err
	}
	if tok != nil {
		if tok.Class == "" || tok.Name == "" || (f.Class != "" && tok.Class != f.Class) {
			return nil, apiErr(http.StatusBadRequest, CodeInvalidPageToken, "query parameter page_token: not a page token of this list (with this class)")
		}
		f.After = store.AgentKey{Class: tok.Class, Name: tok.Name}
	}
	agents, err := h.st.ListAgents(r.Context(), f)
	if err != nil {
		return nil, filterErr(err)
	}
	page := AgentPage{Agents: mapSlice(agents, agentSummaryJSON)}
	if limit := cmp0(f.Limit, store.MaxPage); len(agents) == limit {
		last := agents[len(agents)-1]
		page.NextPageToken = encodeToken(pageToken{List: "agents", Class: last.Class, Name: last.Name})
	}
	return page, nil
}

func (h *handler) listOutbox(r *http.Request) (any, error) {
	q, err := readQuery(r, "agent", "undelivered", "limit", "page_token")
	if err != nil {
		return nil, err
	}
	var f store.OutboxFilter
	if a := q.v.Get("agent"); a != "" {
		class, name, _ := strings.Cut(a, "/")
		if class == "" {
			return nil, invalidArg("query parameter agent=%q: must be an agent class, or class/name", a)
		}
		f.Agent = store.AgentKey{Class: class, Name: name}
	}
	switch u := q.v.Get("undelivered"); u {
	case "", "false":
	case "true":
		f.Undelivered = true
	default:
		return nil, invalidArg("query parameter undelivered=%q: must be true or false", u)
	}
	if f.Limit, err = q.limit("limit", store.MaxPage); err != nil {
		return nil, err
	}
	tok, err := decodeToken(q, "outbox")
	if err != nil {
		return nil, err
	}
	if tok != nil {
		if tok.Seq <= 0 {
			return nil, apiErr(http.StatusBadRequest, CodeInvalidPageToken, "query parameter page_token: not a page token of this list")
		}
		f.AfterID = tok.Seq
	}
	rows, err := h.st.ListOutboxes(r.Context(), f)
	if err != nil {
		return nil, filterErr(err)
	}
	page := OutboxPage{Outbox: mapSlice(rows, outboxJSON)}
	if limit := cmp0(f.Limit, store.MaxPage); len(rows) == limit {
		page.NextPageToken = encodeToken(pageToken{List: "outbox", Seq: rows[len(rows)-1].ID})
	}
	return page, nil
}
