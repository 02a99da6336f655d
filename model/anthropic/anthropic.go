// Package anthropic is a model.Provider for the Anthropic Messages API
// (POST {BaseURL}/v1/messages with "stream": true).
//
// Transport, auth and wire types are the official SDK's
// (github.com/anthropics/anthropic-sdk-go); the SDK's own retries are off
// and the client ignores the ANTHROPIC_* environment. Retries are
// model.WithRetry's, configured by Options.Retry.
//
// Mapping: Request.System is the system prompt; consecutive messages of
// one side are merged into one message (the API wants user and assistant
// to alternate), an assistant's tool calls become tool_use blocks and tool
// results become tool_result blocks of a user message; tools are sent with
// their schema as input_schema; tool choice auto/required/none/tool maps to
// auto/any/none/tool. MaxTokens defaults to Options.MaxTokens, else 4096.
//
// The stream (message_start, content_block_start/delta/stop,
// message_delta, message_stop, ping, error) is accumulated here, with these
// quirks handled (each has a wire-stream test in testdata/):
//
//   - A tool_use block's arguments are the concatenated input_json_delta
//     pieces; empty (no delta, or only "" pieces) become {}. When a server
//     sends the whole input in content_block_start and no deltas, that
//     input is the arguments.
//   - Calls are recognized from the tool_use blocks, never from the stop
//     reason: a forced call that ends with end_turn is still a call, and a
//     model that answers in text instead yields just text.
//   - Arguments that are not a complete JSON object when the block stops
//     (cut off by max_tokens) end the call with Invalid set. A stream that
//     ends before message_stop ends its open calls invalid and then fails
//     with a transient *model.Error.
//   - Usage: input tokens (with cache creation and cache reads) from
//     message_start, output tokens from the last message_delta (they are
//     cumulative); one EventUsage before EventFinish.
//
// Errors are *model.Error: 429 rate_limit; 5xx (529 overloaded included),
// transport errors and overloaded_error/api_error events in the stream
// transient; a 400 "prompt is too long" or an invalid_request_error about
// the context window context_overflow; anything else fatal.
package anthropic

import (
	"context"
	"errors"
	"iter"
	"net/http"

	"agentflow/model"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// DefaultBaseURL is Anthropic's API.
const DefaultBaseURL = "https://api.anthropic.com/"

// DefaultMaxTokens is the output cap when neither the Request nor the
// Options set one (the API requires one).
const DefaultMaxTokens = 4096

// Options configure a Provider.
type Options struct {
	// BaseURL is the API root (without /v1). Default DefaultBaseURL.
	BaseURL string
	// APIKey is sent as x-api-key when set.
	APIKey string
	// Model is the default model; a Request's Model overrides it.
	Model string
	// MaxTokens is the default output cap; default DefaultMaxTokens.
	MaxTokens int
	// HTTPClient defaults to a plain *http.Client (deadlines come from ctx).
	HTTPClient *http.Client
	// Retry retries retryable failures before any event (model.WithRetry).
	Retry model.Retry
}

// Provider streams Messages turns. It is safe for concurrent use.
type Provider struct {
	opts   Options
	msgs   anthropic.MessageService
	stream model.Provider
}

var _ model.Provider = (*Provider)(nil)

// New makes a Provider.
func New(opts Options) (*Provider, error) {
	if opts.Model == "" {
		return nil, errors.New("anthropic: Options.Model is required")
	}
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	ro := []option.RequestOption{
		option.WithBaseURL(opts.BaseURL),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0),
	}
	if opts.APIKey != "" {
		ro = append(ro, option.WithAPIKey(opts.APIKey))
	}
	p := &Provider{opts: opts, msgs: anthropic.NewMessageService(ro...)}
	p.stream = model.WithRetry(streamer{p}, opts.Retry)
	return p, nil
}

// Stream sends req and yields the turn's normalized events.
func (p *Provider) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	return p.stream.Stream(ctx, req)
}

// streamer is one try, without retry.
type streamer struct{ p *Provider }

func (s streamer) Stream(ctx context.Context, req model.Request) iter.Seq2[model.Event, error] {
	return func(yield func(model.Event, error) bool) {
		params, err := s.p.params(req)
		if err != nil {
			yield(model.Event{}, &model.Error{Kind: model.ErrorFatal, Provider: providerName, Err: err})
			return
		}
		st := s.p.msgs.NewStreaming(ctx, params)
		defer st.Close()
		acc := newAccumulator()
		for st.Next() {
			for _, ev := range acc.event(st.Current()) {
				if !yield(ev, nil) {
					return
				}
			}
			if acc.stopped {
				return
			}
		}
		if err := st.Err(); err != nil {
			for _, ev := range acc.closeCalls("stream failed before the call was complete") {
				if !yield(ev, nil) {
					return
				}
			}
			yield(model.Event{}, classify(ctx, err))
			return
		}
		evs, err := acc.finish()
		for _, ev := range evs {
			if !yield(ev, nil) {
				return
			}
		}
		if err != nil {
			yield(model.Event{}, err)
		}
	}
}
