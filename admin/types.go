package admin

import (
	"encoding/json"
	"time"
)

// The types below are the API's JSON bodies, shared by the handler and the
// Client. Field names are snake_case; times are RFC 3339 in UTC, and a time
// that has not happened (an instance not finished yet) is left out. The
// OpenAPI document (openapi.yaml) describes each one.

// ErrorInfo is the error a workflow instance or a step attempt ended with.
type ErrorInfo struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

// AgentRef names one agent instance.
type AgentRef struct {
	Class string `json:"class"`
	Name  string `json:"name"`
}

// Workflow is one workflow instance.
type Workflow struct {
	ID       string `json:"id"`
	Workflow string `json:"workflow"`
	// Service is the service whose workers run it; "" is the default one.
	Service string `json:"service"`
	// Params are left out of list pages.
	Params json.RawMessage `json:"params,omitempty"`
	Origin *AgentRef       `json:"origin,omitempty"`
	Status string          `json:"status"`
	Error  *ErrorInfo      `json:"error,omitempty"`
	// Output is set when complete; left out of list pages.
	Output       json.RawMessage `json:"output,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
	FinishedAt   time.Time       `json:"finished_at,omitzero"`
	WakeAt       time.Time       `json:"wake_at,omitzero"`
	WaitingEvent string          `json:"waiting_event,omitempty"`
	PausedAt     time.Time       `json:"paused_at,omitzero"`
	Owner        string          `json:"owner,omitempty"`
	Restarts     int             `json:"restarts"`
}

// WorkflowPage is one page of a workflow list, newest first.
type WorkflowPage struct {
	Workflows []Workflow `json:"workflows"`
	// NextPageToken, when set, is the page_token of the next page.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// WorkflowCounts counts workflow instances by status.
type WorkflowCounts struct {
	Counts map[string]int `json:"counts"`
	Total  int            `json:"total"`
	// AsOf is when they were counted: the handler keeps counts for
	// Options.CountsMaxAge.
	AsOf time.Time `json:"as_of"`
}

// CreateWorkflowRequest is the body of a create.
type CreateWorkflowRequest struct {
	// Workflow is the registered class name.
	Workflow string `json:"workflow"`
	// Service is the service whose workers run it; "" is the default one.
	Service string `json:"service,omitempty"`
	// ID must match ^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$; empty generates one.
	ID     string          `json:"id,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
}

// SendEventRequest is the body of a send-event.
type SendEventRequest struct {
	// Type must match ^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$.
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Attempt is one attempt of a Do step.
type Attempt struct {
	Number    int        `json:"number"`
	StartedAt time.Time  `json:"started_at,omitzero"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	Error     *ErrorInfo `json:"error,omitempty"`
	// RetryAt is when the next attempt was due, for a failed attempt that
	// was retried.
	RetryAt time.Time `json:"retry_at,omitzero"`
}

// Step is one step of an instance's timeline.
type Step struct {
	Seq        int    `json:"seq"`
	Name       string `json:"name"`
	Occurrence int    `json:"occurrence"`
	// Kind is do, sleep or wait.
	Kind string `json:"kind"`
	// State is pending, done or failed.
	State string `json:"state"`
	// Attempt is, for a pending Do, the number of its next attempt; for a
	// finished one, the number of attempts made.
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// EndedAt is when a done or failed step ended.
	EndedAt time.Time `json:"ended_at,omitzero"`
	// WakeAt is a pending sleep's end, a pending wait's deadline or a
	// pending Do's next attempt time.
	WakeAt time.Time `json:"wake_at,omitzero"`
	// WaitingEvent is the event type a pending wait waits for.
	WaitingEvent string          `json:"waiting_event,omitempty"`
	Result       json.RawMessage `json:"result,omitempty"`
	Error        *ErrorInfo      `json:"error,omitempty"`
	Attempts     []Attempt       `json:"attempts,omitempty"`
}

// Event is an event sent to an instance.
type Event struct {
	Seq        int64           `json:"seq"`
	Type       string          `json:"type"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	SentAt     time.Time       `json:"sent_at"`
	Consumed   bool            `json:"consumed"`
	ConsumedAt time.Time       `json:"consumed_at,omitzero"`
}

// WorkflowDescription is an instance with its step timeline and events.
type WorkflowDescription struct {
	Workflow Workflow `json:"workflow"`
	Steps    []Step   `json:"steps"`
	Events   []Event  `json:"events"`
}

// Agent is one agent instance.
type Agent struct {
	Class string `json:"class"`
	Name  string `json:"name"`
	// State is the agent's JSON state, absent until first set.
	State json.RawMessage `json:"state,omitempty"`
	// Owner is the node the agent is live on, absent when it is live nowhere.
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Schedule is an agent's durable timer.
type Schedule struct {
	ID       string          `json:"id"`
	Class    string          `json:"class"`
	Name     string          `json:"name"`
	Method   string          `json:"method"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	Kind     string          `json:"kind"`
	Cron     string          `json:"cron,omitempty"`
	Interval string          `json:"interval,omitempty"` // a Go duration, "1m30s"
	// IdempotencyKey is unique per agent when set.
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	NextRunAt      time.Time `json:"next_run_at"`
	CreatedAt      time.Time `json:"created_at"`
	Owner          string    `json:"owner,omitempty"`
}

// Fiber is one entry of an agent's fiber ledger.
type Fiber struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
	Status         string          `json:"status"`
	Stash          json.RawMessage `json:"stash,omitempty"`
	Error          string          `json:"error,omitempty"`
	Owner          string          `json:"owner,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	FinishedAt     time.Time       `json:"finished_at,omitzero"`
}

// TrackedWorkflow is an agent's tracking row for a workflow it started.
type TrackedWorkflow struct {
	WorkflowID string          `json:"workflow_id"`
	Binding    string          `json:"binding"`
	Workflow   string          `json:"workflow"`
	Service    string          `json:"service"`
	Status     string          `json:"status"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Error      *ErrorInfo      `json:"error,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	// CompletedAt is when the agent learned the instance finished.
	CompletedAt time.Time `json:"completed_at,omitzero"`
}

// Submission is one entry of a Think agent's ledger.
type Submission struct {
	ID             string          `json:"id"`
	Class          string          `json:"class"`
	Name           string          `json:"name"`
	Seq            int64           `json:"seq"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
	// Messages are the submitted messages; left out of lists.
	Messages       json.RawMessage `json:"messages,omitempty"`
	Status         string          `json:"status"`
	Error          string          `json:"error,omitempty"`
	Output         json.RawMessage `json:"output,omitempty"`
	Applied        bool            `json:"applied"`
	Owner          string          `json:"owner,omitempty"`
	NotifyInstance string          `json:"notify_instance,omitempty"`
	NotifyEvent    string          `json:"notify_event,omitempty"`
	InputTokens    int             `json:"input_tokens"`
	OutputTokens   int             `json:"output_tokens"`
	CreatedAt      time.Time       `json:"created_at"`
	StartedAt      time.Time       `json:"started_at,omitzero"`
	FinishedAt     time.Time       `json:"finished_at,omitzero"`
}

// SubmissionDescription is a submission with its outbox messages.
type SubmissionDescription struct {
	Submission Submission `json:"submission"`
	Outbox     []Outbox   `json:"outbox"`
}

// CancelResult says what a cancel did.
type CancelResult struct {
	// PreviousStatus is the status the submission had; it was pending,
	// since a cancel of any other is refused.
	PreviousStatus string     `json:"previous_status"`
	Submission     Submission `json:"submission"`
}

// ConversationMessage is one message of a Think agent's conversation.
type ConversationMessage struct {
	Seq          int64           `json:"seq"`
	SubmissionID string          `json:"submission_id,omitempty"`
	Message      json.RawMessage `json:"message"`
	CreatedAt    time.Time       `json:"created_at"`
}

// Outbox is a message telling a waiting workflow instance that a
// submission ended.
type Outbox struct {
	ID            int64           `json:"id"`
	Class         string          `json:"class"`
	Name          string          `json:"name"`
	SubmissionID  string          `json:"submission_id"`
	InstanceID    string          `json:"instance_id"`
	EventType     string          `json:"event_type"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	Attempts      int             `json:"attempts"`
	LastError     string          `json:"last_error,omitempty"`
	NextAttemptAt time.Time       `json:"next_attempt_at,omitzero"`
	Owner         string          `json:"owner,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	DeliveredAt   time.Time       `json:"delivered_at,omitzero"`
	Failed        bool            `json:"failed"`
}

// AgentDescription is an agent with its schedules, fibers, tracked
// workflows and, for a Think agent, its submissions and conversation.
type AgentDescription struct {
	Agent     Agent             `json:"agent"`
	Schedules []Schedule        `json:"schedules"`
	Fibers    []Fiber           `json:"fibers"`
	Workflows []TrackedWorkflow `json:"workflows"`
	// Submissions and Conversation are empty for agents that are not
	// Think agents.
	Submissions  []Submission          `json:"submissions"`
	Conversation []ConversationMessage `json:"conversation"`
}

// ScheduleList is an agent's schedules, by next run time.
type ScheduleList struct {
	Schedules []Schedule `json:"schedules"`
}

// SubmissionList is an agent's submissions, oldest first.
type SubmissionList struct {
	Submissions []Submission `json:"submissions"`
}

// AgentSummary is one agent instance as a list shows it, without its state.
type AgentSummary struct {
	Class string `json:"class"`
	Name  string `json:"name"`
	// Owner is the live node, absent when the agent is live nowhere.
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is its last activity: an activation, a release, a state write.
	UpdatedAt  time.Time `json:"updated_at"`
	StateBytes int       `json:"state_bytes"`
}

// AgentPage is one page of the agent list, by class then name.
type AgentPage struct {
	Agents        []AgentSummary `json:"agents"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// OutboxPage is one page of Think outbox rows, newest first.
type OutboxPage struct {
	Outbox        []Outbox `json:"outbox"`
	NextPageToken string   `json:"next_page_token,omitempty"`
}
