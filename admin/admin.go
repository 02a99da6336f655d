// Package admin is agentflow's operator API: an http.Handler serving
// versioned JSON routes under /api/v1/ to list, inspect and control
// workflow instances, agents, schedules, Think submissions and the outbox
// (and, at /, the web dashboard of package admin/dashboard, which reads
// them from the browser), and the Client that speaks to it (the `agentflow` command's workflows,
// agents, schedules and submissions subcommands use it).
//
// Every operation is a store operation: the handler needs only a store, no
// engine and no agent runtime, so `agentflow serve` inspects and steers a
// cluster without running its workers. A control that changes an instance
// (create, send event, resume, restart) is seen by the cluster's engines
// through the store's wake-ups (store.Waker), or at their next poll.
//
// The routes, their parameters and bodies are described by the OpenAPI 3.1
// document the handler serves at /api/v1/openapi.json (and .yaml).
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"agentflow/admin/dashboard"
	"agentflow/internal/bearer"
	"agentflow/store"
)

// DefaultMaxBodyBytes is Options.MaxBodyBytes's default: room for a
// workflow's params at the engine's default limit (1 MiB) and the rest of
// the request.
const DefaultMaxBodyBytes = 2 << 20

// MaxPayloadBytes bounds a created instance's params and a sent event's
// payload, as the workflow engine's default limits do.
const MaxPayloadBytes = 1 << 20

// Options configure NewHandler.
type Options struct {
	// Store is the store to inspect and control; required.
	Store store.Store
	// Token, when set, is the bearer token every /api/ request must carry,
	// with the rules of the agents server: an "Authorization: Bearer
	// <token>" header, or the "token" query parameter; compared in
	// constant time; answered 401 without it. It must be visible ASCII
	// without spaces; NewHandler panics otherwise.
	Token string
	// Logger receives the handler's errors; default slog.Default().
	Logger *slog.Logger
	// Now is the clock of control operations; default time.Now.
	Now func() time.Time
	// MaxBodyBytes bounds a request's body; default DefaultMaxBodyBytes. A
	// larger body is answered 413. It must not be negative.
	MaxBodyBytes int64
	// Dashboard, when set, serves every path outside /api/ instead of the
	// embedded web dashboard (package admin/dashboard), which is served by
	// default: its page at / and its assets. It is served without the
	// token: it must hold no data of its own, and read everything from the
	// API.
	Dashboard http.Handler
	// CountsMaxAge is how long the status counts of one filter are served
	// from memory before they are counted again; default
	// DefaultCountsMaxAge, negative to count on every request. Either
	// way, concurrent requests for the same counts share one count.
	CountsMaxAge time.Duration
	// CancelRunning, when set, cancels a running Think submission: the
	// store alone cannot interrupt a turn, which lives in the memory of
	// the node running the agent. A program with an agent runtime sets it
	// to think.CancelSubmission over that runtime, which reaches the agent
	// on whichever node of the cluster it is live (agentflow dev does).
	// Without it, a cancel of a running submission answers 409.
	CancelRunning func(ctx context.Context, agent store.AgentKey, id string) error
}

// APIPrefix is where the API's routes live.
const APIPrefix = "/api/v1"

type handler struct {
	st      store.Store
	log     *slog.Logger
	now     func() time.Time
	token   *bearer.Token // nil: no token required
	maxBody int64
	api     *http.ServeMux
	dash    http.Handler
	counts  *countCache
	cancel  func(ctx context.Context, agent store.AgentKey, id string) error
	// openapiJSON is the OpenAPI document as JSON.
	openapiJSON []byte
}

// NewHandler returns the handler serving the API under /api/v1/ and the
// dashboard (Options.Dashboard) at the other paths. Mount it at the root
// of a server, next to the agents handler's /agents/. It panics when o is
// not valid (no Store, a Token with spaces, a negative MaxBodyBytes), as
// http.ServeMux does with a bad pattern.
func NewHandler(o Options) http.Handler {
	if o.Store == nil {
		panic("admin: Options.Store is required")
	}
	h := &handler{st: o.Store, log: o.Logger, now: o.Now, maxBody: o.MaxBodyBytes, dash: o.Dashboard, cancel: o.CancelRunning}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	switch {
	case h.maxBody < 0:
		panic(fmt.Sprintf("admin: Options.MaxBodyBytes is %d; it must not be negative (0 takes the default, %d)", h.maxBody, DefaultMaxBodyBytes))
	case h.maxBody == 0:
		h.maxBody = DefaultMaxBodyBytes
	}
	maxAge := o.CountsMaxAge
	if maxAge == 0 {
		maxAge = DefaultCountsMaxAge
	}
	h.counts = newCountCache(maxAge, h.now)
	if o.Token != "" {
		t, err := bearer.New(o.Token)
		if err != nil {
			panic("admin: Options.Token: " + err.Error())
		}
		h.token = t
	}
	if h.dash == nil {
		h.dash = dashboard.Handler()
	}
	doc, err := openAPIToJSON()
	if err != nil {
		panic(err) // the embedded document is checked by the tests
	}
	h.openapiJSON = doc
	h.api = http.NewServeMux()
	for _, rt := range routes() {
		h.api.Handle(rt.Method+" "+rt.Path, h.serve(rt.fn))
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") {
		h.dash.ServeHTTP(w, r)
		return
	}
	if h.token != nil && !h.token.Allows(r) {
		h.unauthorized(w, r)
		return
	}
	// The mux answers unknown paths and methods in plain text; jsonErrors
	// turns those answers into the API's JSON errors.
	h.api.ServeHTTP(&jsonErrors{ResponseWriter: w, r: r}, r)
}

// unauthorized answers 401 as bearer.Token.Check does, with a JSON body.
func (h *handler) unauthorized(w http.ResponseWriter, r *http.Request) {
	_, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.TrimSpace(cred) == "" && r.URL.Query().Get(bearer.QueryParam) == "" {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, apiErr(http.StatusUnauthorized, CodeUnauthenticated,
			"send the token in an Authorization: Bearer header (or in the %s query parameter)", bearer.QueryParam))
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	writeError(w, apiErr(http.StatusUnauthorized, CodeUnauthenticated, "the bearer token is not valid"))
}

// apiFunc serves one route: it returns the answer's body (200, or the
// status of a *withStatus) or an error (an *Error, or a store error).
type apiFunc func(h *handler, r *http.Request) (any, error)

type withStatus struct {
	status int
	body   any
}

func (h *handler) serve(fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
		}
		body, err := fn(h, r)
		if err != nil {
			ae := storeErr(err, "")
			if ae == nil {
				h.log.Error("admin: "+r.Method+" "+r.URL.Path, "err", err)
				ae = apiErr(http.StatusInternalServerError, CodeInternal, "internal error; the server's log has the details")
			}
			writeError(w, ae)
			return
		}
		if rb, ok := body.(rawBody); ok {
			w.Header().Set("Content-Type", rb.contentType)
			w.Write(rb.body)
			return
		}
		status := http.StatusOK
		if ws, ok := body.(withStatus); ok {
			status, body = ws.status, ws.body
		}
		writeJSON(w, status, body)
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(apiErr(status, CodeInternal, "encoding the answer: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *Error) { writeJSON(w, e.Status, e) }

// jsonErrors rewrites the mux's own plain-text 404 and 405 answers as JSON
// errors; the routes' answers, always JSON, pass through.
type jsonErrors struct {
	http.ResponseWriter
	r       *http.Request
	swallow bool
}

func (j *jsonErrors) WriteHeader(status int) {
	if (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) &&
		!strings.HasPrefix(j.Header().Get("Content-Type"), "application/json") {
		j.swallow = true
		j.Header().Del("X-Content-Type-Options")
		if status == http.StatusNotFound {
			writeError(j.ResponseWriter, apiErr(status, CodeNotFound, "no route %s %s", j.r.Method, j.r.URL.Path))
		} else {
			writeError(j.ResponseWriter, apiErr(status, CodeMethodNotAllowed, "%s %s is not allowed; allowed: %s",
				j.r.Method, j.r.URL.Path, j.Header().Get("Allow")))
		}
		return
	}
	j.ResponseWriter.WriteHeader(status)
}

func (j *jsonErrors) Write(b []byte) (int, error) {
	if j.swallow {
		return len(b), nil
	}
	return j.ResponseWriter.Write(b)
}

func (j *jsonErrors) Unwrap() http.ResponseWriter { return j.ResponseWriter }

// decodeBody decodes a JSON request body into v, refusing unknown fields
// and trailing data, and naming what was wrong.
func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apiErr(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "the request body is larger than %d bytes", mbe.Limit)
		}
		return invalidArg("reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return invalidArg("the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return invalidArg("body field %q: must be a JSON %s, not %s", te.Field, te.Type.Kind(), te.Value)
		}
		return invalidArg("the request body is not a valid JSON object: %v", err)
	}
	if dec.More() {
		return invalidArg("the request body has data after its JSON object")
	}
	return nil
}
