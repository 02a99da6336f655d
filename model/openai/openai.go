// Package openai is a model.Provider for OpenAI-compatible chat completions
// (POST {BaseURL}/chat/completions with "stream": true): OpenAI itself,
// Workers AI's OpenAI endpoint, Ollama, vLLM and the llama.cpp server.
//
// Transport, auth and wire types are the official SDK's
// (github.com/openai/openai-go/v3); the SDK's own retries are off and the
// client ignores the OPENAI_* environment (an unset APIKey is never filled
// in from OPENAI_API_KEY and sent to some other server). Retries are
// model.WithRetry's, configured by Options.Retry. Streamed tool calls are
// accumulated here, not by the SDK's accumulator, so that these quirks are
// handled (each has a wire-stream test in testdata/):
//
//   - Tool-call deltas are keyed by their index, but some servers (Ollama)
//     send parallel calls all with index 0: a delta whose id differs from
//     the id of the call open at its index starts a new call.
//   - A whole call may arrive in one chunk (id, name and all arguments).
//   - Empty arguments ("" or no arguments field at all) become {}.
//   - Calls are recognized from the content, never from the finish reason:
//     a forced call that ends with finish reason "stop" is still a call,
//     and a model that answers in text instead of a forced call yields just
//     text (no call is ever made up).
//   - Arguments that are not a complete JSON object when the call ends (cut
//     off by max tokens, or a stream that breaks off) end the call with
//     Invalid set; such a call is never reported as valid. A stream that
//     ends without a finish reason ends with a transient *model.Error after
//     the open calls are closed.
//   - Usage arrives with stream_options.include_usage in a last chunk with
//     no choices; some servers send (cumulative) usage on every chunk. One
//     EventUsage with the last usage seen is yielded before EventFinish.
//
// Tool calls end (EventToolCallEnd, in index order) when the finish
// reason arrives or the stream ends. A call with no id gets "call_<n>".
// Errors are *model.Error: 429 rate_limit, 5xx and transport errors
// transient, a context-length error (code context_length_exceeded, or a
// 400 whose message says the context is exceeded) context_overflow,
// anything else fatal.
package openai

import (
	"context"
	"errors"
	"iter"
	"net/http"

	"agentflow/model"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// DefaultBaseURL is OpenAI's API.
const DefaultBaseURL = "https://api.openai.com/v1/"

// Options configure a Provider.
type Options struct {
	// BaseURL is the API root, e.g. "https://api.openai.com/v1",
	// "http://localhost:11434/v1" (Ollama), or
	// "https://api.cloudflare.com/client/v4/accounts/<id>/ai/v1" (Workers AI).
	// Default DefaultBaseURL.
	BaseURL string
	// APIKey is sent as a bearer token when set.
	APIKey string
	// Model is the default model; a Request's Model overrides it.
	Model string
	// HTTPClient defaults to a plain *http.Client (deadlines come from ctx).
	HTTPClient *http.Client
	// Retry retries retryable failures before any event (model.WithRetry).
	Retry model.Retry
	// LegacyMaxTokens sends Request.MaxTokens as "max_tokens" instead of
	// "max_completion_tokens", for servers that know only the old field.
	LegacyMaxTokens bool
}

// Provider streams chat completions. It is safe for concurrent use.
type Provider struct {
	opts   Options
	chat   oai.ChatCompletionService
	stream model.Provider // with retry when configured
}

var _ model.Provider = (*Provider)(nil)

// New makes a Provider.
func New(opts Options) (*Provider, error) {
	if opts.Model == "" {
		return nil, errors.New("openai: Options.Model is required")
	}
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
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
	p := &Provider{opts: opts, chat: oai.NewChatCompletionService(ro...)}
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
		st := s.p.chat.NewStreaming(ctx, params)
		defer st.Close()
		acc := newAccumulator()
		for st.Next() {
			for _, ev := range acc.chunk(st.Current()) {
				if !yield(ev, nil) {
					return
				}
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
