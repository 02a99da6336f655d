package anthropic

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

	"github.com/anthropics/anthropic-sdk-go"
)

// classify turns an error of the SDK into a *model.Error:
//
//   - a context overflow — a 400 (or 413) whose message says "prompt is too
//     long", or an invalid_request_error about the context window: context_overflow;
//   - 429 or a rate_limit_error: rate_limit;
//   - 408, 5xx (529 overloaded included), and overloaded_error or
//     api_error events inside the stream: transient;
//   - other API errors: fatal;
//   - a malformed event: fatal;
//   - anything else (connection refused, reset, EOF…): transient.
//
// A context cancellation is returned as it is, not as a *model.Error.
func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	e := &model.Error{Provider: providerName, Err: err}
	var apiErr *anthropic.Error
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &apiErr):
		typ, msg := apiMessage(apiErr)
		if msg != "" {
			e.Err = fmt.Errorf("%w: %s: %s", err, typ, msg)
		}
		status := apiErr.StatusCode
		if status != http.StatusOK { // an error event inside a stream has the stream's 200
			e.Status = status
		}
		switch {
		case contextOverflow(typ, msg) && (e.Status == 0 || e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge):
			e.Kind = model.ErrorContextOverflow
		case e.Status == http.StatusTooManyRequests || typ == "rate_limit_error":
			e.Kind = model.ErrorRateLimit
		case e.Status == http.StatusRequestTimeout || e.Status >= 500,
			e.Status == 0 && (typ == "overloaded_error" || typ == "api_error" || typ == "timeout_error"):
			e.Kind = model.ErrorTransient
		default:
			e.Kind = model.ErrorFatal
		}
		if (e.Kind == model.ErrorRateLimit || e.Kind == model.ErrorTransient) && apiErr.Response != nil && e.Status != 0 {
			e.Err = model.WithRetryAfter(e.Err, model.RetryAfterHeader(apiErr.Response.Header))
		}
	case errors.As(err, &syntaxErr):
		e.Kind = model.ErrorFatal
	default:
		e.Kind = model.ErrorTransient
	}
	return e
}

// apiMessage is the error's type and message from its JSON envelope
// {"type":"error","error":{"type","message"}}, or the body's text.
func apiMessage(apiErr *anthropic.Error) (typ, msg string) {
	raw := []byte(apiErr.RawJSON())
	if len(raw) == 0 && apiErr.Response != nil && apiErr.Response.Body != nil && apiErr.StatusCode != http.StatusOK {
		raw, _ = io.ReadAll(io.LimitReader(apiErr.Response.Body, 64<<10))
		apiErr.Response.Body = io.NopCloser(bytes.NewReader(raw))
	}
	var env struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &env) == nil && (env.Error.Type != "" || env.Error.Message != "") {
		typ, msg = env.Error.Type, env.Error.Message
	} else {
		msg = strings.TrimSpace(string(raw))
	}
	if typ == "" {
		typ = string(apiErr.Type())
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	return typ, msg
}

// contextOverflow reports whether an error says the request does not fit
// the model's context window.
func contextOverflow(typ, msg string) bool {
	m := strings.ToLower(msg)
	if strings.Contains(m, "prompt is too long") {
		return true
	}
	if typ != "invalid_request_error" && typ != "" {
		return false
	}
	for _, s := range []string{"context window", "context length", "context_length", "maximum context"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
