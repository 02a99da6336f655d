// Package scripted is a scripted model: a model.Provider that plays back
// turns written in advance, for examples, tests and benchmarks that must
// not depend on a real model. It is not a model; its name says so wherever
// it is used.
//
//	m := scripted.New(
//		scripted.Call("get_weather", `{"city":"Oslo"}`), // first model call: a tool call
//		scripted.Say("It is sunny in Oslo."),             // second: the answer
//	)
package scripted

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"sync"

	"agentflow/internal/agentseam"
	"agentflow/model"
)

// Turn is one scripted model call: what the model "says".
type Turn struct {
	Text  string
	Calls []model.ToolCall
	Usage model.Usage
	// Respond, when set, computes the turn from the request instead.
	Respond func(req model.Request) Turn
	// Stall makes the call never answer: its stream yields nothing until
	// its context ends (the turn is cancelled, the runtime stops), then
	// the context's error.
	Stall bool
}

// Say is a turn that answers with text.
func Say(text string) Turn {
	return Turn{Text: text, Usage: model.Usage{InputTokens: 10, OutputTokens: 5}}
}

// Stall is a turn that never answers, as a model that hangs: see
// Turn.Stall. A test harness (package agenttest) counts a turn stalled
// here as waiting, not busy, so that virtual time can pass over it: a
// prompt step's timeout, say.
func Stall() Turn { return Turn{Stall: true} }

// Call is a turn that calls one tool with JSON arguments.
func Call(name, args string) Turn {
	return Turn{Calls: []model.ToolCall{{Name: name, Arguments: json.RawMessage(args)}},
		Usage: model.Usage{InputTokens: 10, OutputTokens: 5}}
}

// Model plays its turns in order, then repeats the last one (or, with
// Loop, starts over). It is safe for concurrent use; concurrent callers
// take turns from the one script.
type Model struct {
	mu       sync.Mutex
	turns    []Turn
	next     int
	calls    int // tool calls made, for their generated ids
	Loop     bool
	requests []model.Request
}

// New returns a model that plays turns.
func New(turns ...Turn) *Model { return &Model{turns: turns} }

// Requests returns the requests the model has received.
func (m *Model) Requests() []model.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]model.Request(nil), m.requests...)
}

// Stream implements model.Provider: it yields the next turn's events.
func (m *Model) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	m.mu.Lock()
	m.requests = append(m.requests, req)
	var t Turn
	switch {
	case len(m.turns) == 0:
		t = Say("")
	case m.next < len(m.turns):
		t = m.turns[m.next]
		m.next++
	case m.Loop:
		t = m.turns[0]
		m.next = 1
	default:
		t = m.turns[len(m.turns)-1]
	}
	m.mu.Unlock()
	if t.Respond != nil {
		t = t.Respond(req) // outside the lock: a test's Respond may block
	}
	m.mu.Lock()
	first := m.calls
	m.calls += len(t.Calls)
	m.mu.Unlock()
	return func(yield func(model.Event, error) bool) {
		if t.Stall {
			unpark := agentseam.Park(ctx)
			<-ctx.Done()
			unpark()
		}
		if err := ctx.Err(); err != nil {
			yield(model.Event{}, err)
			return
		}
		if t.Text != "" && !yield(model.Event{Kind: model.EventText, Text: t.Text}, nil) {
			return
		}
		for i, c := range t.Calls {
			if c.ID == "" {
				c.ID = fmt.Sprintf("call_%d", first+i+1)
			}
			args, invalid := model.NormalizeArguments(string(c.Arguments))
			if !yield(model.Event{Kind: model.EventToolCallStart, Index: i, ToolCall: model.ToolCall{ID: c.ID, Name: c.Name}}, nil) {
				return
			}
			if !yield(model.Event{Kind: model.EventToolCallDelta, Index: i, ArgumentsDelta: string(c.Arguments)}, nil) {
				return
			}
			end := model.Event{Kind: model.EventToolCallEnd, Index: i, Invalid: invalid,
				ToolCall: model.ToolCall{ID: c.ID, Name: c.Name, Arguments: args}}
			if !yield(end, nil) {
				return
			}
		}
		if !yield(model.Event{Kind: model.EventUsage, Usage: t.Usage}, nil) {
			return
		}
		finish := model.FinishStop
		if len(t.Calls) > 0 {
			finish = model.FinishToolCalls
		}
		yield(model.Event{Kind: model.EventFinish, FinishReason: finish}, nil)
	}
}
