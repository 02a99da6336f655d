// Package model is the interface between Think agents and language models
// (DESIGN §4.4): a Provider streams a model turn as normalized events, whatever
// the wire format. Real providers live below it (model/openai for
// OpenAI-compatible chat completions, model/anthropic for Anthropic
// Messages); model/scripted is a scripted model for examples and tests.
//
// A provider normalizes its stream's quirks so that consumers never see
// them: tool calls are told by start, argument deltas and an end carrying
// the complete arguments; empty or absent arguments become {}; calls are
// recognized from the content, not from the finish reason; arguments that
// are not valid JSON (a truncated stream) end the call with Invalid set,
// and such a call must never be executed.
package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
)

// Role is who a message is from.
type Role string

// Roles.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
	RoleTool      Role = "tool" // a tool's result
)

// Message is one message of a conversation. The system prompt is not a
// message: it is Request.System.
type Message struct {
	Role Role `json:"role"`
	// Content is the text; for a tool result, the result (usually JSON).
	Content string `json:"content,omitempty"`
	// ToolCalls are the calls an assistant message made.
	ToolCalls []ToolCall `json:"toolCalls,omitempty"`
	// ToolCallID and ToolName say which call a tool result answers.
	ToolCallID string `json:"toolCallId,omitempty"`
	ToolName   string `json:"toolName,omitempty"`
	// IsError marks a tool result that reports a failure.
	IsError bool `json:"isError,omitempty"`
}

// ToolCall is a call of a tool by the model.
type ToolCall struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// Tool is a tool offered to the model.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Parameters is the JSON Schema of the arguments, an object schema.
	Parameters json.RawMessage `json:"parameters"`
}

// ToolChoiceMode says whether and which tools the model must call.
type ToolChoiceMode string

// Tool choice modes.
const (
	ToolChoiceAuto     ToolChoiceMode = "auto"     // the model decides (the default)
	ToolChoiceRequired ToolChoiceMode = "required" // some tool must be called
	ToolChoiceNone     ToolChoiceMode = "none"     // no tool may be called
	ToolChoiceTool     ToolChoiceMode = "tool"     // the tool named Name must be called
)

// ToolChoice is a Request's tool choice.
type ToolChoice struct {
	Mode ToolChoiceMode `json:"mode,omitempty"`
	Name string         `json:"name,omitempty"` // for ToolChoiceTool
}

// Request is one model call.
type Request struct {
	// Model overrides the provider's configured model when set.
	Model       string
	System      string
	Messages    []Message
	Tools       []Tool
	ToolChoice  ToolChoice
	Temperature *float64
	TopP        *float64
	// MaxTokens caps the output; 0 is the provider's default.
	MaxTokens int
}

// EventKind is what a streamed Event tells.
type EventKind string

// Event kinds, in the order a stream may send them: any number of text
// deltas and tool calls (each a start, argument deltas, an end), usage,
// and one finish last.
const (
	EventText          EventKind = "text"
	EventToolCallStart EventKind = "tool_call_start"
	EventToolCallDelta EventKind = "tool_call_delta"
	EventToolCallEnd   EventKind = "tool_call_end"
	EventUsage         EventKind = "usage"
	EventFinish        EventKind = "finish"
)

// Event is one normalized streamed event.
type Event struct {
	Kind EventKind
	// Text is a text delta (EventText).
	Text string
	// Index is the tool call's position in the turn, from 0, for the three
	// tool-call kinds.
	Index int
	// ToolCall is the call: at start its ID and Name, at end also its
	// complete Arguments ({} when the model sent none).
	ToolCall ToolCall
	// ArgumentsDelta is a piece of the arguments' JSON (EventToolCallDelta).
	ArgumentsDelta string
	// Invalid, at EventToolCallEnd, says why the arguments are not a JSON
	// object (e.g. a stream cut off mid-argument); such a call must never
	// be executed.
	Invalid string
	// Usage is the token count (EventUsage).
	Usage Usage
	// FinishReason is the provider's reason (EventFinish), normalized to
	// the constants below when it has one of their meanings.
	FinishReason FinishReason
}

// Usage counts tokens.
type Usage struct {
	InputTokens  int `json:"inputTokens"`
	OutputTokens int `json:"outputTokens"`
}

// FinishReason is why the model stopped.
type FinishReason string

// Finish reasons. Do not decide whether tools were called from it: a
// forced call may end with FinishStop; look at the tool-call events.
const (
	FinishStop      FinishReason = "stop"
	FinishToolCalls FinishReason = "tool_calls"
	FinishLength    FinishReason = "length"
	FinishFilter    FinishReason = "content_filter"
)

// Provider streams model turns.
type Provider interface {
	// Stream sends req and yields the turn's events. An error ends the
	// sequence; it is an *Error when it came from the provider.
	Stream(ctx context.Context, req Request) iter.Seq2[Event, error]
}

// ErrorKind classifies provider errors.
type ErrorKind string

// Error kinds.
const (
	// ErrorRateLimit: 429; retried with backoff.
	ErrorRateLimit ErrorKind = "rate_limit"
	// ErrorTransient: a transport error or a 5xx; retried with backoff.
	ErrorTransient ErrorKind = "transient"
	// ErrorContextOverflow: the request does not fit the model's context;
	// not retried.
	ErrorContextOverflow ErrorKind = "context_overflow"
	// ErrorFatal: anything else (bad request, auth); not retried.
	ErrorFatal ErrorKind = "fatal"
)

// Error is an error from a provider.
type Error struct {
	Kind     ErrorKind
	Provider string // "openai", "anthropic", …
	Status   int    // the HTTP status, 0 for a transport error
	Err      error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %s (HTTP %d): %v", e.Provider, e.Kind, e.Status, e.Err)
	}
	return fmt.Sprintf("%s: %s: %v", e.Provider, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the error is worth retrying: a transport
// error, a 429 or a 5xx.
func (e *Error) Retryable() bool { return e.Kind == ErrorRateLimit || e.Kind == ErrorTransient }

// KindOf returns the kind of a provider error, or "" when err is not one.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// Response is a whole turn, accumulated from its events.
type Response struct {
	Text      string
	ToolCalls []ToolCall
	// Invalid holds the calls whose arguments were not a JSON object
	// (ID and Name as the model sent them, no Arguments) with the reason;
	// they are not in ToolCalls and must never be executed.
	Invalid      []InvalidCall
	Usage        Usage
	FinishReason FinishReason
}

// InvalidCall is a tool call that must not be executed.
type InvalidCall struct {
	Index  int
	Call   ToolCall
	Reason string
}

// Collect runs a stream to its end and accumulates it, calling each (when
// not nil) with every event as it arrives.
func Collect(ctx context.Context, p Provider, req Request, each func(Event)) (*Response, error) {
	r := &Response{}
	for ev, err := range p.Stream(ctx, req) {
		if err != nil {
			return r, err
		}
		if each != nil {
			each(ev)
		}
		switch ev.Kind {
		case EventText:
			r.Text += ev.Text
		case EventToolCallEnd:
			if ev.Invalid != "" {
				r.Invalid = append(r.Invalid, InvalidCall{Index: ev.Index, Call: ev.ToolCall, Reason: ev.Invalid})
				continue
			}
			r.ToolCalls = append(r.ToolCalls, ev.ToolCall)
		case EventUsage:
			r.Usage.InputTokens += ev.Usage.InputTokens
			r.Usage.OutputTokens += ev.Usage.OutputTokens
		case EventFinish:
			r.FinishReason = ev.FinishReason
		}
	}
	return r, nil
}
