package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/propagation"

	"agentflow/internal/bearer"
	"agentflow/store"
)

// HandlerOptions configure the HTTP handler.
type HandlerOptions struct {
	// Prefix is the path the agent routes live under; default "/agents",
	// which is where the JavaScript client connects.
	Prefix string
	// CORS, when set, answers preflight requests and adds CORS headers,
	// and lets WebSocket clients connect from the allowed origins.
	CORS *CORS
	// Token, when set, is a bearer token every request must carry, in an
	// "Authorization: Bearer <token>" header or, for browser WebSockets
	// (which cannot set headers), in the "token" query parameter. A
	// request without it or with another is answered 401 with a
	// WWW-Authenticate: Bearer challenge before the hooks run and before
	// any instance is touched. Only a CORS preflight passes without it.
	// It must be visible ASCII without spaces; Handler panics otherwise.
	Token string
	// MaxBodyBytes bounds a plain request's body; default 1 MiB. The
	// handler reads the body whole before it touches the instance, so a
	// slow client never holds the instance's lock; OnRequest (and
	// BeforeRequest) read it from memory. A larger body is answered 413.
	// It must not be negative; Handler panics otherwise. Serve the handler
	// with a ReadTimeout, which bounds how long a client may take to send
	// the body (net/http lifts it once the body is read).
	MaxBodyBytes int64
	// BeforeConnect is called before a WebSocket upgrade, after the Token
	// check and before the instance is activated; an error refuses the
	// upgrade (with the error's status if it is a StatusCoder, 403
	// otherwise). This is where authentication of your own goes.
	BeforeConnect func(r *http.Request, key store.AgentKey) error
	// BeforeRequest is the same for plain HTTP requests; it is called once
	// the body has been read, which it may read too.
	BeforeRequest func(r *http.Request, key store.AgentKey) error
}

// DefaultMaxBodyBytes is HandlerOptions.MaxBodyBytes's default.
const DefaultMaxBodyBytes = 1 << 20

// CORS is a cross-origin policy.
type CORS struct {
	// AllowedOrigins are origins ("https://app.example.com") or "*".
	AllowedOrigins   []string
	AllowedHeaders   []string // default: Content-Type, Authorization
	AllowCredentials bool
	MaxAgeSeconds    int
}

type handler struct {
	rt     *Runtime
	o      HandlerOptions
	prefix string
	token  *bearer.Token // nil: no token required
}

// Handler returns the http.Handler serving /agents/<class-kebab>/<name>[/rest]:
// WebSocket upgrades speak the agents protocol; other requests go to the
// class's OnRequest hook. An unknown class answers 400 and a malformed path
// 404. Mount it on any router, at its prefix or at the root. It panics when
// o is not valid (a Token with spaces, a negative MaxBodyBytes), as
// http.ServeMux does with a bad pattern.
func (rt *Runtime) Handler(o HandlerOptions) http.Handler {
	if o.Prefix == "" {
		o.Prefix = "/agents"
	}
	switch {
	case o.MaxBodyBytes < 0:
		panic(fmt.Sprintf("agent: HandlerOptions.MaxBodyBytes is %d; it must not be negative (0 takes the default, %d)", o.MaxBodyBytes, DefaultMaxBodyBytes))
	case o.MaxBodyBytes == 0:
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h := &handler{rt: rt, o: o, prefix: strings.TrimSuffix(o.Prefix, "/") + "/"}
	if o.Token != "" {
		t, err := bearer.New(o.Token)
		if err != nil {
			panic("agent: HandlerOptions.Token: " + err.Error())
		}
		h.token = t
	}
	return h
}

type restKey struct{}

// Rest returns the part of an agent request's path after the instance name
// ("" for /agents/counter/alice, "/stats" for /agents/counter/alice/stats).
func Rest(r *http.Request) string {
	s, _ := r.Context().Value(restKey{}).(string)
	return s
}

// parsePath splits /<prefix>/<class>/<name>[/rest]. Segments are unescaped,
// so a name may contain an escaped slash.
func (h *handler) parsePath(r *http.Request) (class, name, rest string, ok bool) {
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, h.prefix) {
		return "", "", "", false
	}
	parts := strings.SplitN(p[len(h.prefix):], "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", "", false
	}
	var err1, err2 error
	class, err1 = url.PathUnescape(parts[0])
	name, err2 = url.PathUnescape(parts[1])
	if err1 != nil || err2 != nil {
		return "", "", "", false
	}
	if len(parts) == 3 {
		rest = "/" + parts[2]
	}
	return class, name, rest, true
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.o.CORS != nil && h.cors(w, r) {
		return
	}
	cl := h.rt.cluster
	// A request from another node of the cluster carries its secret: a
	// forwarded one was authenticated where it arrived, and is served
	// here, never sent on again.
	forwarded := r.Header.Get(forwardedHeader) != "" || r.Header.Get(secretHeader) != ""
	internal := r.URL.EscapedPath() == h.prefix+callPath
	switch {
	case forwarded || internal:
		if !cl.authorized(r) {
			http.Error(w, "forbidden: requests between the nodes of a cluster must carry its secret "+
				"(agent.Options.ClusterSecret); this one carried none or a wrong one", http.StatusForbidden)
			return
		}
	case h.token != nil && !h.token.Check(w, r):
		return
	}
	if h.rt.tel.Tracing() {
		// The request's traceparent (W3C) is the parent of its spans.
		ctx := h.rt.tel.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		route := h.prefix + "{class}/{name}"
		if internal {
			route = h.prefix + callPath
		}
		ctx, span := h.rt.tel.StartHTTP(ctx, r.Method, route)
		sw := &statusWriter{ResponseWriter: w}
		defer func() { h.rt.tel.EndHTTP(span, sw.status) }()
		w, r = sw, r.WithContext(ctx)
	}
	if internal {
		h.serveCall(w, r)
		return
	}
	kebab, name, rest, ok := h.parsePath(r)
	if !ok {
		http.Error(w, "not found: agent paths are "+h.prefix+"<class>/<name>[/<rest>]", http.StatusNotFound)
		return
	}
	h.rt.classMu.RLock()
	c := h.rt.byKebab[kebab]
	h.rt.classMu.RUnlock()
	className := ""
	if c != nil {
		className = c.name
	} else if !forwarded && cl.enabled() {
		className, _ = cl.hostsKebab(r.Context(), kebab)
	}
	if className == "" {
		http.Error(w, fmt.Sprintf("unknown agent class %q", kebab), http.StatusBadRequest)
		return
	}
	if err := ValidateName(name); err != nil { // before the hooks and the body
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := store.AgentKey{Class: className, Name: name}
	upgrade := isWebSocket(r)
	hook := h.o.BeforeRequest
	var body []byte
	if upgrade {
		hook = h.o.BeforeConnect
	} else {
		// The whole body, before the instance: reading it holding the
		// instance's lock would let a slow client stall every caller.
		var herr *HTTPError
		if body, herr = h.readBody(w, r); herr != nil {
			http.Error(w, herr.Message, herr.Status)
			return
		}
		r = withBody(r, body)
	}
	if !forwarded && cl.enabled() {
		p, err := cl.place(r.Context(), c, key)
		if err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		if !p.local && h.forward(w, r, key, kebab, rest, body, p) {
			return
		}
	}
	if c == nil {
		http.Error(w, fmt.Sprintf("agent class %q is not hosted on this node", kebab), http.StatusMisdirectedRequest)
		return
	}
	if hook != nil {
		if err := hook(r, key); err != nil {
			status := http.StatusForbidden
			if sc, ok := errors.AsType[StatusCoder](err); ok {
				status = sc.StatusCode()
			}
			http.Error(w, err.Error(), status)
			return
		}
	}
	in, err := h.rt.acquire(r.Context(), c, name)
	if owned, ok := errors.AsType[*store.AgentOwnedError](err); ok && cl.enabled() {
		if forwarded { // the sender tries the owner
			w.Header().Set(ownerHeader, owned.Node.ID)
			http.Error(w, err.Error(), http.StatusMisdirectedRequest)
			return
		}
		if owned.Node.Address != "" && h.forward(w, r, key, kebab, rest, body, placement{node: owned.Node}) {
			return
		}
		in, err = h.rt.acquire(r.Context(), c, name)
	}
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	defer h.rt.release(in)
	if upgrade {
		h.serveWS(w, r, in)
		return
	}
	rh, ok := in.obj.(RequestHandler)
	if !ok {
		http.Error(w, fmt.Sprintf("agent class %s does not serve HTTP requests", c.name), http.StatusNotFound)
		return
	}
	r = withBody(r.WithContext(context.WithValue(r.Context(), restKey{}, rest)), body) // anew: the hook may have read it
	if err := in.run(r.Context(), func() error { rh.OnRequest(r.Context(), w, r); return nil }); err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return // the client (or the node that forwarded it) left while it waited for the instance
		}
		in.reportError(r.Context(), err)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

// readBody reads r's body whole, up to MaxBodyBytes.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *HTTPError) {
	limit := h.o.MaxBodyBytes
	tooLarge := &HTTPError{Status: http.StatusRequestEntityTooLarge,
		Message: fmt.Sprintf("request body too large: the limit is %d bytes", limit)}
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	if r.Body == nil { // a request made with http.NewRequest, served directly
		return nil, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, tooLarge
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return nil, &HTTPError{Status: http.StatusRequestTimeout, Message: "the request body did not arrive in time"}
	}
	if err != nil {
		return nil, &HTTPError{Status: http.StatusBadRequest, Message: "reading the request body: " + err.Error()}
	}
	return body, nil
}

// withBody returns a shallow copy of r whose body reads body from memory.
func withBody(r *http.Request, body []byte) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	r2.ContentLength = int64(len(body))
	r2.Body = http.NoBody
	if len(body) > 0 {
		r2.Body = io.NopCloser(bytes.NewReader(body))
	}
	return r2
}

// statusOf maps a runtime error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrAgentElsewhere):
		return http.StatusConflict
	case errors.Is(err, ErrStopped), errors.Is(err, ErrLeaseLapsed), errors.Is(err, ErrNodeUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrUnknownClass), errors.Is(err, ErrInvalidName):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// cors writes the CORS headers and reports whether the request was a
// preflight, which it has answered.
func (h *handler) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	c := h.o.CORS
	any := slices.Contains(c.AllowedOrigins, "*")
	if !any && !slices.Contains(c.AllowedOrigins, origin) {
		return false
	}
	hd := w.Header()
	if any && !c.AllowCredentials {
		hd.Set("Access-Control-Allow-Origin", "*")
	} else {
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Add("Vary", "Origin")
	}
	if c.AllowCredentials {
		hd.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	headers := c.AllowedHeaders
	if len(headers) == 0 {
		headers = []string{"Content-Type", "Authorization"}
	}
	hd.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
	hd.Set("Access-Control-Allow-Headers", strings.Join(headers, ", "))
	if c.MaxAgeSeconds > 0 {
		hd.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAgeSeconds))
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// acceptOptions lets WebSocket clients connect from the CORS origins;
// without CORS, only same-origin browsers (and clients that send no
// Origin, like Node's) may connect.
func (h *handler) acceptOptions() *websocket.AcceptOptions {
	o := &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled}
	if c := h.o.CORS; c != nil {
		for _, origin := range c.AllowedOrigins {
			if origin == "*" {
				o.InsecureSkipVerify = true
				continue
			}
			if u, err := url.Parse(origin); err == nil && u.Host != "" {
				o.OriginPatterns = append(o.OriginPatterns, u.Host)
			}
		}
	}
	return o
}

// statusWriter notes the status code of a traced request's response. It
// unwraps to the server's writer, so that http.ResponseController — and
// through it hijacking, for WebSockets and the cluster's splice, and
// flushing — reaches the real one.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
