package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client speaks to the API of a handler NewHandler returned. Its methods
// return the answers typed, and *Error for an error answer.
type Client struct {
	// BaseURL is the server's URL, e.g. http://127.0.0.1:8787 (the API is
	// under its /api/v1/).
	BaseURL string
	// Token, when set, is sent as an Authorization: Bearer header.
	Token string
	// HTTPClient sends the requests; default http.DefaultClient.
	HTTPClient *http.Client
}

// maxAnswerBytes bounds an answer the client reads.
const maxAnswerBytes = 64 << 20

// do sends one request and decodes a success into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	base := strings.TrimSuffix(c.BaseURL, "/")
	if base == "" {
		return fmt.Errorf("admin client: no server URL")
	}
	u := base + APIPrefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("admin client: encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin client: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("admin client: %s %s: reading the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			// Not this API's answer: a proxy's, or a server without it.
			e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), fmt.Sprintf("%s %s: %s", method, u, strings.TrimSpace(string(b)))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin client: %s %s: decoding the answer: %w", method, u, err)
	}
	return nil
}

func seg(s string) string { return url.PathEscape(s) }

func agentPath(class, name string) string { return "/agents/" + seg(class) + "/" + seg(name) }

// WorkflowFilter selects the instances of ListWorkflows and CountWorkflows
// (which ignores Statuses, Limit and PageToken). Zero fields match all.
type WorkflowFilter struct {
	Statuses  []string
	Workflows []string
	// Services: "" is the default service.
	Services []string
	// Origin is an agent class, or class/name.
	Origin                 string
	CreatedFrom, CreatedTo time.Time
	UpdatedFrom, UpdatedTo time.Time
	Limit                  int
	PageToken              string
}

func (f WorkflowFilter) values(list bool) url.Values {
	q := url.Values{}
	if list {
		for _, s := range f.Statuses {
			q.Add("status", s)
		}
		if f.Limit != 0 {
			q.Set("limit", strconv.Itoa(f.Limit))
		}
		if f.PageToken != "" {
			q.Set("page_token", f.PageToken)
		}
	}
	for _, s := range f.Workflows {
		q.Add("workflow", s)
	}
	for _, s := range f.Services {
		q.Add("service", s)
	}
	if f.Origin != "" {
		q.Set("origin", f.Origin)
	}
	for name, t := range map[string]time.Time{"created_from": f.CreatedFrom, "created_to": f.CreatedTo,
		"updated_from": f.UpdatedFrom, "updated_to": f.UpdatedTo} {
		if !t.IsZero() {
			q.Set(name, t.Format(time.RFC3339Nano))
		}
	}
	return q
}

// ListWorkflows returns one page of instances, newest first.
func (c *Client) ListWorkflows(ctx context.Context, f WorkflowFilter) (*WorkflowPage, error) {
	var out WorkflowPage
	return &out, c.do(ctx, http.MethodGet, "/workflows", f.values(true), nil, &out)
}

// CountWorkflows counts the instances by status.
func (c *Client) CountWorkflows(ctx context.Context, f WorkflowFilter) (*WorkflowCounts, error) {
	var out WorkflowCounts
	return &out, c.do(ctx, http.MethodGet, "/workflow-counts", f.values(false), nil, &out)
}

// DescribeWorkflow returns an instance with its step timeline and events.
func (c *Client) DescribeWorkflow(ctx context.Context, id string) (*WorkflowDescription, error) {
	var out WorkflowDescription
	return &out, c.do(ctx, http.MethodGet, "/workflows/"+seg(id), nil, nil, &out)
}

// CreateWorkflow creates an instance, queued.
func (c *Client) CreateWorkflow(ctx context.Context, req CreateWorkflowRequest) (*Workflow, error) {
	var out Workflow
	return &out, c.do(ctx, http.MethodPost, "/workflows", nil, req, &out)
}

// SendEvent sends an event to an instance and returns the instance.
func (c *Client) SendEvent(ctx context.Context, id string, req SendEventRequest) (*Workflow, error) {
	var out Workflow
	return &out, c.do(ctx, http.MethodPost, "/workflows/"+seg(id)+"/events", nil, req, &out)
}

func (c *Client) control(ctx context.Context, id, op string) (*Workflow, error) {
	var out Workflow
	return &out, c.do(ctx, http.MethodPost, "/workflows/"+seg(id)+"/"+op, nil, nil, &out)
}

// Pause pauses an instance and returns it as it then is.
func (c *Client) Pause(ctx context.Context, id string) (*Workflow, error) {
	return c.control(ctx, id, "pause")
}

// Resume resumes a paused instance.
func (c *Client) Resume(ctx context.Context, id string) (*Workflow, error) {
	return c.control(ctx, id, "resume")
}

// Terminate ends an unfinished instance as terminated.
func (c *Client) Terminate(ctx context.Context, id string) (*Workflow, error) {
	return c.control(ctx, id, "terminate")
}

// Restart runs an instance again from its start.
func (c *Client) Restart(ctx context.Context, id string) (*Workflow, error) {
	return c.control(ctx, id, "restart")
}

// AgentFilter selects the agents of ListAgents.
type AgentFilter struct {
	Class     string
	Limit     int
	PageToken string
}

// ListAgents returns one page of agents, by class then name.
func (c *Client) ListAgents(ctx context.Context, f AgentFilter) (*AgentPage, error) {
	q := url.Values{}
	if f.Class != "" {
		q.Set("class", f.Class)
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.PageToken != "" {
		q.Set("page_token", f.PageToken)
	}
	var out AgentPage
	return &out, c.do(ctx, http.MethodGet, "/agents", q, nil, &out)
}

// DescribeAgent returns an agent with its state, schedules, fibers,
// tracked workflows, submissions and conversation.
func (c *Client) DescribeAgent(ctx context.Context, class, name string) (*AgentDescription, error) {
	var out AgentDescription
	return &out, c.do(ctx, http.MethodGet, agentPath(class, name), nil, nil, &out)
}

// ListSchedules returns an agent's schedules (of kind, when set).
func (c *Client) ListSchedules(ctx context.Context, class, name, kind string) (*ScheduleList, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	var out ScheduleList
	return &out, c.do(ctx, http.MethodGet, agentPath(class, name)+"/schedules", q, nil, &out)
}

// ListSubmissions returns a Think agent's submissions, oldest first, of
// the given statuses (all when none), at most limit (0: the server's
// default).
func (c *Client) ListSubmissions(ctx context.Context, class, name string, statuses []string, limit int) (*SubmissionList, error) {
	q := url.Values{}
	for _, s := range statuses {
		q.Add("status", s)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out SubmissionList
	return &out, c.do(ctx, http.MethodGet, agentPath(class, name)+"/submissions", q, nil, &out)
}

// DescribeSubmission returns a submission with its messages and outbox rows.
func (c *Client) DescribeSubmission(ctx context.Context, class, name, id string) (*SubmissionDescription, error) {
	var out SubmissionDescription
	return &out, c.do(ctx, http.MethodGet, agentPath(class, name)+"/submissions/"+seg(id), nil, nil, &out)
}

// CancelSubmission aborts a pending submission.
func (c *Client) CancelSubmission(ctx context.Context, class, name, id string) (*CancelResult, error) {
	var out CancelResult
	return &out, c.do(ctx, http.MethodPost, agentPath(class, name)+"/submissions/"+seg(id)+"/cancel", nil, nil, &out)
}

// OutboxFilter selects the rows of ListOutbox.
type OutboxFilter struct {
	// Agent is an agent class, or class/name.
	Agent       string
	Undelivered bool
	Limit       int
	PageToken   string
}

// ListOutbox returns one page of Think outbox rows, newest first.
func (c *Client) ListOutbox(ctx context.Context, f OutboxFilter) (*OutboxPage, error) {
	q := url.Values{}
	if f.Agent != "" {
		q.Set("agent", f.Agent)
	}
	if f.Undelivered {
		q.Set("undelivered", "true")
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.PageToken != "" {
		q.Set("page_token", f.PageToken)
	}
	var out OutboxPage
	return &out, c.do(ctx, http.MethodGet, "/outbox", q, nil, &out)
}
