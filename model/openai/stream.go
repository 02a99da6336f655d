package openai

import (
	"fmt"
	"io"
	"strings"

	"agentflow/model"

	oai "github.com/openai/openai-go/v3"
)

// call is one streamed tool call being accumulated.
type call struct {
	index   int // position in the turn, from 0
	id      string
	name    string
	args    strings.Builder
	started bool // EventToolCallStart yielded
	pending string
	ended   bool
}

// accumulator turns chat.completion.chunk objects into normalized events.
type accumulator struct {
	calls     []*call
	open      map[int64]*call // by wire index: the latest call at that index
	reason    string
	sawFinish bool
	usage     *model.Usage
}

func newAccumulator() *accumulator {
	return &accumulator{open: map[int64]*call{}}
}

// chunk takes one chunk and returns the events it makes.
func (a *accumulator) chunk(c oai.ChatCompletionChunk) []model.Event {
	var evs []model.Event
	if c.JSON.Usage.Valid() {
		// Usage is cumulative: keep the last one seen (some servers send it
		// on every chunk, OpenAI only on the last, choice-less one).
		a.usage = &model.Usage{
			InputTokens:  int(c.Usage.PromptTokens),
			OutputTokens: int(c.Usage.CompletionTokens),
		}
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 { // we never ask for n > 1
			continue
		}
		d := ch.Delta
		if d.Content != "" {
			evs = append(evs, model.Event{Kind: model.EventText, Text: d.Content})
		}
		if d.Refusal != "" {
			evs = append(evs, model.Event{Kind: model.EventText, Text: d.Refusal})
		}
		for _, tc := range d.ToolCalls {
			evs = a.toolDelta(evs, tc)
		}
		if ch.FinishReason != "" {
			a.reason = ch.FinishReason
			a.sawFinish = true
			evs = append(evs, a.closeCalls("")...)
		}
	}
	return evs
}

func (a *accumulator) toolDelta(evs []model.Event, tc oai.ChatCompletionChunkChoiceDeltaToolCall) []model.Event {
	cur := a.open[tc.Index]
	switch {
	case cur == nil || cur.ended,
		// Ollama quirk: parallel calls all on index 0, told apart by a new id.
		tc.ID != "" && cur.id != "" && tc.ID != cur.id:
		cur = &call{index: len(a.calls), id: tc.ID}
		a.calls = append(a.calls, cur)
		a.open[tc.Index] = cur
	case cur.id == "" && tc.ID != "":
		cur.id = tc.ID
	}
	// Some servers repeat the name on every delta: keep the first.
	if cur.name == "" && tc.Function.Name != "" {
		cur.name = tc.Function.Name
	}
	if !cur.started && cur.name != "" {
		evs = append(evs, a.start(cur)...)
	}
	if s := tc.Function.Arguments; s != "" {
		cur.args.WriteString(s)
		if cur.started {
			evs = append(evs, model.Event{Kind: model.EventToolCallDelta, Index: cur.index,
				ToolCall: model.ToolCall{ID: cur.id, Name: cur.name}, ArgumentsDelta: s})
		} else {
			cur.pending += s
		}
	}
	return evs
}

// start marks c started and returns its start event, followed by a delta
// with any arguments that came before its name.
func (a *accumulator) start(c *call) []model.Event {
	c.started = true
	if c.id == "" {
		c.id = fmt.Sprintf("call_%d", c.index)
	}
	tc := model.ToolCall{ID: c.id, Name: c.name}
	evs := []model.Event{{Kind: model.EventToolCallStart, Index: c.index, ToolCall: tc}}
	if c.pending != "" {
		evs = append(evs, model.Event{Kind: model.EventToolCallDelta, Index: c.index, ToolCall: tc, ArgumentsDelta: c.pending})
		c.pending = ""
	}
	return evs
}

// closeCalls ends every open call in order. When invalid is set the calls
// are ended invalid whatever their arguments.
func (a *accumulator) closeCalls(invalid string) []model.Event {
	var evs []model.Event
	for _, c := range a.calls {
		if c.ended {
			continue
		}
		c.ended = true
		if !c.started {
			evs = append(evs, a.start(c)...)
		}
		end := model.Event{Kind: model.EventToolCallEnd, Index: c.index,
			ToolCall: model.ToolCall{ID: c.id, Name: c.name}}
		end.ToolCall.Arguments, end.Invalid = model.NormalizeArguments(c.args.String())
		switch {
		case invalid != "":
			end.ToolCall.Arguments, end.Invalid = nil, invalid
		case c.name == "":
			end.ToolCall.Arguments, end.Invalid = nil, "tool call without a name"
		}
		evs = append(evs, end)
	}
	clear(a.open)
	return evs
}

// finish returns the events that end a stream that ended without an
// error: usage and finish — or, when no finish reason came, the open calls
// ended invalid and an unexpected-EOF error.
func (a *accumulator) finish() ([]model.Event, error) {
	if !a.sawFinish {
		evs := a.closeCalls("stream ended before the call was complete")
		return evs, &model.Error{Kind: model.ErrorTransient, Provider: providerName,
			Err: fmt.Errorf("stream ended without a finish reason: %w", io.ErrUnexpectedEOF)}
	}
	evs := a.closeCalls("")
	if a.usage != nil {
		evs = append(evs, model.Event{Kind: model.EventUsage, Usage: *a.usage})
	}
	evs = append(evs, model.Event{Kind: model.EventFinish, FinishReason: finishReason(a.reason)})
	return evs, nil
}

func finishReason(s string) model.FinishReason {
	switch s {
	case "stop":
		return model.FinishStop
	case "tool_calls", "function_call":
		return model.FinishToolCalls
	case "length":
		return model.FinishLength
	case "content_filter":
		return model.FinishFilter
	}
	return model.FinishReason(s)
}
