package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"agentflow/model"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/ssestream"
)

// classify turns an error of the SDK into a *model.Error:
//
//   - an API error whose code is context_length_exceeded, or whose
//     message says the context is exceeded (vLLM, llama.cpp and others
//     send a plain 400): context_overflow;
//   - 429: rate_limit (but insufficient_quota, which waiting does not
//     cure, is fatal);
//   - 408 and 5xx: transient;
//   - other statuses: fatal;
//   - an error event inside the stream: transient unless it is a context
//     overflow;
//   - a malformed chunk: fatal;
//   - anything else (connection refused, reset, EOF…): transient.
//
// A context cancellation is returned as it is, not as a *model.Error.
func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	e := &model.Error{Provider: providerName, Err: err}
	var apiErr *oai.Error
	var streamErr *ssestream.StreamError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &apiErr):
		e.Status = apiErr.StatusCode
		msg := apiMessage(apiErr)
		if msg != "" {
			e.Err = fmt.Errorf("%w: %s", err, msg)
		}
		switch {
		case apiErr.Code == "context_length_exceeded" || (e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge) && contextOverflow(msg):
			e.Kind = model.ErrorContextOverflow
		case e.Status == http.StatusTooManyRequests && apiErr.Code != "insufficient_quota":
			e.Kind = model.ErrorRateLimit
		case e.Status == http.StatusRequestTimeout || e.Status >= 500:
			e.Kind = model.ErrorTransient
		default:
			e.Kind = model.ErrorFatal
		}
		if e.Kind == model.ErrorRateLimit || e.Kind == model.ErrorTransient {
			if apiErr.Response != nil {
				e.Err = model.WithRetryAfter(e.Err, model.RetryAfterHeader(apiErr.Response.Header))
			}
		}
	case errors.As(err, &streamErr):
		e.Kind = model.ErrorTransient
		if contextOverflow(streamErr.Message) {
			e.Kind = model.ErrorContextOverflow
		}
	case errors.As(err, &syntaxErr):
		e.Kind = model.ErrorFatal
	default:
		e.Kind = model.ErrorTransient
	}
	return e
}

// apiMessage is the error's message: the SDK's, from {"error":{"message"}},
// or else the top-level "message" (vLLM) or the body's text, cut to 500 bytes.
func apiMessage(apiErr *oai.Error) string {
	msg := apiErr.Message
	if msg == "" && apiErr.Response != nil && apiErr.Response.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(apiErr.Response.Body, 64<<10))
		apiErr.Response.Body = io.NopCloser(bytes.NewReader(body))
		var top struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &top) == nil && top.Message != "" {
			msg = top.Message
		} else {
			msg = strings.TrimSpace(string(body))
		}
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	return msg
}

// contextOverflow reports whether an error message says the request does
// not fit the model's context, as OpenAI, vLLM, llama.cpp and Ollama word it.
func contextOverflow(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{
		"context_length_exceeded",
		"maximum context length",
		"context length",
		"exceed_context_size",
		"context size",
		"context window",
	} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
