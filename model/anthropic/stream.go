package anthropic

import (
	"fmt"
	"io"
	"strings"

	"agentflow/model"

	"github.com/anthropics/anthropic-sdk-go"
)

// call is one tool_use block being accumulated.
type call struct {
	index      int // position in the turn, from 0
	id, name   string
	startInput string // the input given in content_block_start
	args       strings.Builder
	ended      bool
}

// accumulator turns Messages stream events into normalized events.
type accumulator struct {
	calls   []*call
	blocks  map[int64]*call // content block index → its call
	reason  anthropic.StopReason
	input   int
	output  int
	stopped bool // message_stop seen
}

func newAccumulator() *accumulator {
	return &accumulator{blocks: map[int64]*call{}}
}

// event takes one stream event and returns the events it makes.
func (a *accumulator) event(ev anthropic.MessageStreamEventUnion) []model.Event {
	switch ev.Type {
	case "message_start":
		u := ev.Message.Usage
		a.input = int(u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens)
		a.output = int(u.OutputTokens)
	case "content_block_start":
		cb := ev.ContentBlock
		switch cb.Type {
		case "text":
			if cb.Text != "" {
				return []model.Event{{Kind: model.EventText, Text: cb.Text}}
			}
		case "tool_use":
			c := &call{index: len(a.calls), id: cb.ID, name: cb.Name, startInput: cb.JSON.Input.Raw()}
			if c.id == "" {
				c.id = fmt.Sprintf("toolu_%d", c.index)
			}
			a.calls = append(a.calls, c)
			a.blocks[ev.Index] = c
			return []model.Event{{Kind: model.EventToolCallStart, Index: c.index,
				ToolCall: model.ToolCall{ID: c.id, Name: c.name}}}
		}
	case "content_block_delta":
		d := ev.Delta
		switch d.Type {
		case "text_delta":
			if d.Text != "" {
				return []model.Event{{Kind: model.EventText, Text: d.Text}}
			}
		case "input_json_delta":
			c := a.blocks[ev.Index]
			if c == nil || c.ended || d.PartialJSON == "" {
				return nil
			}
			c.args.WriteString(d.PartialJSON)
			return []model.Event{{Kind: model.EventToolCallDelta, Index: c.index,
				ToolCall: model.ToolCall{ID: c.id, Name: c.name}, ArgumentsDelta: d.PartialJSON}}
		}
	case "content_block_stop":
		if c := a.blocks[ev.Index]; c != nil && !c.ended {
			return a.end(c, "")
		}
	case "message_delta":
		if ev.Delta.StopReason != "" {
			a.reason = ev.Delta.StopReason
		}
		// Usage here is cumulative; newer API versions repeat input too.
		if n := int(ev.Usage.InputTokens + ev.Usage.CacheCreationInputTokens + ev.Usage.CacheReadInputTokens); n > 0 {
			a.input = n
		}
		if ev.Usage.OutputTokens > 0 {
			a.output = int(ev.Usage.OutputTokens)
		}
	case "message_stop":
		a.stopped = true
		evs := a.closeCalls("")
		evs = append(evs,
			model.Event{Kind: model.EventUsage, Usage: model.Usage{InputTokens: a.input, OutputTokens: a.output}},
			model.Event{Kind: model.EventFinish, FinishReason: finishReason(a.reason)})
		return evs
	}
	return nil
}

// end ends c: its arguments are the deltas, or else the input of its
// start, normalized; invalid, when set, overrides. A whole input that came
// with the start is first told as one delta, as if it had been streamed.
func (a *accumulator) end(c *call, invalid string) []model.Event {
	c.ended = true
	tc := model.ToolCall{ID: c.id, Name: c.name}
	var evs []model.Event
	raw := c.args.String()
	if strings.TrimSpace(raw) == "" {
		raw = c.startInput
		if args, bad := model.NormalizeArguments(raw); bad == "" && string(args) != "{}" && invalid == "" {
			evs = append(evs, model.Event{Kind: model.EventToolCallDelta, Index: c.index, ToolCall: tc, ArgumentsDelta: string(args)})
		}
	}
	ev := model.Event{Kind: model.EventToolCallEnd, Index: c.index, ToolCall: tc}
	ev.ToolCall.Arguments, ev.Invalid = model.NormalizeArguments(raw)
	switch {
	case invalid != "":
		ev.ToolCall.Arguments, ev.Invalid = nil, invalid
	case c.name == "":
		ev.ToolCall.Arguments, ev.Invalid = nil, "tool call without a name"
	}
	return append(evs, ev)
}

// closeCalls ends every call still open.
func (a *accumulator) closeCalls(invalid string) []model.Event {
	var evs []model.Event
	for _, c := range a.calls {
		if !c.ended {
			evs = append(evs, a.end(c, invalid)...)
		}
	}
	return evs
}

// finish handles a stream that ended without an error: one that did not
// reach message_stop ends its open calls invalid and fails.
func (a *accumulator) finish() ([]model.Event, error) {
	if a.stopped {
		return nil, nil
	}
	evs := a.closeCalls("stream ended before the call was complete")
	return evs, &model.Error{Kind: model.ErrorTransient, Provider: providerName,
		Err: fmt.Errorf("stream ended before message_stop: %w", io.ErrUnexpectedEOF)}
}

func finishReason(r anthropic.StopReason) model.FinishReason {
	switch r {
	case anthropic.StopReasonEndTurn, anthropic.StopReasonStopSequence:
		return model.FinishStop
	case anthropic.StopReasonToolUse:
		return model.FinishToolCalls
	case anthropic.StopReasonMaxTokens, anthropic.StopReasonModelContextWindowExceeded:
		return model.FinishLength
	case anthropic.StopReasonRefusal:
		return model.FinishFilter
	}
	return model.FinishReason(r)
}
