package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"agentflow/store"
)

// This file is the cluster: every node (an engine and its runtime in one
// process) advertises where other nodes reach its agents handler, and a
// request or call for an agent live on another node is sent there.
//
//   - A plain HTTP request or a WebSocket for an agent live elsewhere is
//     forwarded to the owner's handler as it came (the body already read
//     and bounded here), marked with the cluster secret and this node's id;
//     a forwarded request is served where it lands and never forwarded
//     again. A WebSocket is spliced byte for byte once the owner has
//     accepted it, so frames and close codes pass through and TCP's flow
//     control is the backpressure.
//   - A call by name (Ref.Call, the typed helpers, a workflow's
//     Origin.Call, the runtime's own named calls) goes to the owner's
//     /_cluster/call endpoint as JSON; the answer streams back as
//     newline-delimited JSON (chunks, then the result or an error).
//   - An agent live nowhere is activated here when this process has its
//     class, and otherwise on a node that advertises the class.
//
// A landing node that finds the agent live on a third node (it moved in
// between) answers 421 naming the owner, and the sender tries once more.

// Headers of requests between nodes.
const (
	secretHeader    = "Agentflow-Cluster-Secret" // the cluster secret
	forwardedHeader = "Agentflow-Forwarded-By"   // the sending node's id
	ownerHeader     = "Agentflow-Owner"          // on a 421: the node the agent is live on
)

// callPath is the named-call endpoint, under the handler's prefix.
const callPath = "_cluster/call"

// ErrNodeUnavailable: the node an agent is live on did not answer. The call
// did not start there; it may be retried, and succeeds once the node
// answers again or the agent is taken over after its lease.
var ErrNodeUnavailable = errors.New("the agent's node is unavailable")

// ErrOutcomeUnknown: a call reached the agent's node but the connection
// broke before the answer: the call may or may not have run.
var ErrOutcomeUnknown = errors.New("the call's outcome is unknown: the connection to the agent's node broke")

// ErrClusterAuth: a request between nodes came without the cluster secret,
// or with a wrong one.
var ErrClusterAuth = errors.New("cluster secret missing or wrong")

// RemoteError is an error a method returned on the node the agent is live
// on, as that node reported it.
type RemoteError struct {
	Node    string // the node's id
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// cluster is a runtime's view of the other nodes.
type cluster struct {
	rt      *Runtime
	address string // this node's AdvertiseURL ("" when it serves none)
	secret  string
	sum     [sha256.Size]byte // of secret
	client  *http.Client

	mu        sync.Mutex
	nodes     map[string]store.Node // by id, as of the last refresh
	refreshed time.Time
	refreshMu sync.Mutex // one refresh at a time

	// owners caches the node an agent was last found live on (see place),
	// for ownerTTL.
	ownersMu sync.Mutex
	owners   map[store.AgentKey]cachedOwner
}

// cachedOwner is where place last found an agent live.
type cachedOwner struct {
	node string
	at   time.Time
}

// ownerTTL is how long place trusts where it last found an agent live
// before reading its row again, and maxOwners how many agents it keeps
// that for. A stale entry costs a hop, not correctness: the node it names
// serves the agent if it is still or again live there or free, answers
// 421 naming the owner if it is live elsewhere, and a node that does not
// answer is looked up again (see lost); every such miss drops the entry.
const (
	ownerTTL  = time.Second
	maxOwners = 1 << 16
)

func newCluster(rt *Runtime, o Options) *cluster {
	c := &cluster{rt: rt, address: strings.TrimSuffix(o.AdvertiseURL, "/"), secret: o.ClusterSecret,
		sum: sha256.Sum256([]byte(o.ClusterSecret)), nodes: map[string]store.Node{},
		owners: map[store.AgentKey]cachedOwner{}}
	c.client = o.ClusterClient
	if c.client == nil {
		c.client = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false,
		}}
	}
	return c
}

// enabled reports whether this runtime may talk to other nodes.
func (c *cluster) enabled() bool { return c.secret != "" }

// authorized reports whether r carries the cluster secret, comparing in
// constant time.
func (c *cluster) authorized(r *http.Request) bool {
	if !c.enabled() {
		return false
	}
	got := sha256.Sum256([]byte(r.Header.Get(secretHeader)))
	return subtle.ConstantTimeCompare(got[:], c.sum[:]) == 1
}

// advertise records this node's address and classes in its node row.
func (c *cluster) advertise(ctx context.Context) error {
	if c.address == "" {
		return nil
	}
	return c.rt.store.AdvertiseNode(ctx, c.rt.node, c.address, c.rt.classNames())
}

// loop keeps the view of the other nodes fresh and this node's row
// advertised (a heartbeat that recreated the row after it was reaped
// leaves the address out until then).
func (c *cluster) loop(ctx context.Context) {
	t := c.rt.clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		t.Reset(c.rt.opts.PollInterval)
		c.pruneOwners()
		nodes, err := c.refresh(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.rt.log.Warn("listing the cluster's nodes failed", "err", err)
			}
			continue
		}
		if self, ok := nodes[c.rt.node]; c.address != "" && (!ok || self.Address != c.address ||
			!slices.Equal(self.AgentClasses, c.rt.classNames())) {
			if err := c.advertise(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				c.rt.log.Warn("advertising this node failed", "err", err)
			}
		}
	}
}

// refresh reads the node rows.
func (c *cluster) refresh(ctx context.Context) (map[string]store.Node, error) {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	list, err := c.rt.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	nodes := make(map[string]store.Node, len(list))
	for _, n := range list {
		nodes[n.ID] = n
	}
	c.mu.Lock()
	c.nodes, c.refreshed = nodes, time.Now()
	c.mu.Unlock()
	return nodes, nil
}

// view returns the nodes, read again if the last read is older than a
// second or fresh is set (and the last read is older than 50 ms).
func (c *cluster) view(ctx context.Context, fresh bool) map[string]store.Node {
	c.mu.Lock()
	nodes, age := c.nodes, time.Since(c.refreshed)
	c.mu.Unlock()
	if age > time.Second || (fresh && age > 50*time.Millisecond) {
		if n, err := c.refresh(ctx); err == nil {
			return n
		}
	}
	return nodes
}

// hostOf picks the node that activates an agent of a class this process
// does not have: one advertising the class, chosen by the agent's name so
// that the nodes share the agents and one agent keeps going to one node.
func (c *cluster) hostOf(ctx context.Context, key store.AgentKey) (store.Node, bool) {
	pick := func(nodes map[string]store.Node) (store.Node, bool) {
		var ids []string
		for id, n := range nodes {
			if n.Address != "" && slices.Contains(n.AgentClasses, key.Class) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return store.Node{}, false
		}
		slices.Sort(ids)
		h := fnv.New32a()
		h.Write([]byte(key.Name))
		return nodes[ids[int(h.Sum32()%uint32(len(ids)))]], true
	}
	if n, ok := pick(c.view(ctx, false)); ok {
		return n, true
	}
	return pick(c.view(ctx, true))
}

// hostsKebab returns the class name a node of the cluster hosts under the
// URL name kebab.
func (c *cluster) hostsKebab(ctx context.Context, kebab string) (string, bool) {
	find := func(nodes map[string]store.Node) (string, bool) {
		for _, n := range nodes {
			if n.Address == "" {
				continue
			}
			for _, cls := range n.AgentClasses {
				if Kebab(cls) == kebab {
					return cls, true
				}
			}
		}
		return "", false
	}
	if cls, ok := find(c.view(ctx, false)); ok {
		return cls, true
	}
	return find(c.view(ctx, true))
}

// cachedOwnerOf returns the node key was last found live on, if that was
// less than ownerTTL ago.
func (c *cluster) cachedOwnerOf(key store.AgentKey) (string, bool) {
	c.ownersMu.Lock()
	o, ok := c.owners[key]
	c.ownersMu.Unlock()
	if !ok || time.Since(o.at) > ownerTTL {
		return "", false
	}
	return o.node, true
}

// remember notes that key was found live on node.
func (c *cluster) remember(key store.AgentKey, node string) {
	c.ownersMu.Lock()
	if len(c.owners) < maxOwners {
		c.owners[key] = cachedOwner{node: node, at: time.Now()}
	}
	c.ownersMu.Unlock()
}

// forget drops what is cached of where key is live.
func (c *cluster) forget(key store.AgentKey) {
	c.ownersMu.Lock()
	delete(c.owners, key)
	c.ownersMu.Unlock()
}

// pruneOwners drops the cache's stale entries.
func (c *cluster) pruneOwners() {
	c.ownersMu.Lock()
	defer c.ownersMu.Unlock()
	for key, o := range c.owners {
		if time.Since(o.at) > ownerTTL {
			delete(c.owners, key)
		}
	}
}

// placement is where a request or call for an agent goes.
type placement struct {
	local bool       // serve it here
	node  store.Node // otherwise: the node to send it to
}

// place decides where key is served: here if it is live here, on its
// owner if that is another live node with an address, here if this
// process has the class, else on a node that hosts the class. c is the
// class if this process has it. The owner found is cached for ownerTTL.
func (c *cluster) place(ctx context.Context, cls *class, key store.AgentKey) (placement, error) {
	if cls != nil && (!c.enabled() || c.rt.liveHere(key)) {
		return placement{local: true}, nil
	}
	if !c.enabled() {
		return placement{}, fmt.Errorf("agent class %q: %w", key.Class, ErrUnknownClass)
	}
	if id, ok := c.cachedOwnerOf(key); ok {
		if n, ok := c.view(ctx, false)[id]; ok && n.Address != "" {
			return placement{node: n}, nil
		}
	}
	a, err := c.rt.store.GetAgent(ctx, key)
	switch {
	case err == nil && a.Owner != "" && a.Owner != c.rt.node:
		if n, ok := c.view(ctx, false)[a.Owner]; ok && n.Address != "" {
			c.remember(key, n.ID)
			return placement{node: n}, nil
		}
		if n, ok := c.view(ctx, true)[a.Owner]; ok {
			if n.Address == "" && cls != nil {
				return placement{}, &store.AgentOwnedError{Key: key, Node: n}
			}
			if n.Address != "" {
				return placement{node: n}, nil
			}
		}
		// Its owner has no row: the agent is free.
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return placement{}, fmt.Errorf("agent %s: find where it is live: %w", key, err)
	}
	if cls != nil {
		return placement{local: true}, nil
	}
	if n, ok := c.hostOf(ctx, key); ok {
		return placement{node: n}, nil
	}
	return placement{}, fmt.Errorf("agent class %q: %w: no node of the cluster hosts it", key.Class, ErrUnknownClass)
}

// misdirectedError is a landing node's answer that the agent is live on
// another node.
type misdirectedError struct{ owner string }

func (e *misdirectedError) Error() string {
	return fmt.Sprintf("the agent moved to node %s", e.owner)
}

// retarget finds the node named by a 421 answer.
func (c *cluster) retarget(ctx context.Context, key store.AgentKey, owner string) (placement, error) {
	if owner == c.rt.node {
		return placement{local: true}, nil
	}
	if n, ok := c.view(ctx, true)[owner]; ok && n.Address != "" {
		return placement{node: n}, nil
	}
	return c.place(ctx, nil, key)
}

// lost reports whether node n, which did not answer, is gone for good, so
// that the agents it held are free: it ran on this host in a process that
// has died (it is reaped now, rather than at the next heartbeat), or its
// row has been removed (its lease lapsed and a node reaped it). The view
// of the nodes is read again either way.
func (c *cluster) lost(ctx context.Context, n store.Node) bool {
	reaped, err := c.rt.seam.ReapIfGone(ctx, n)
	if err != nil {
		c.rt.log.Warn("reaping a node that did not answer failed", "dead_node", n.ID, "err", err)
	}
	if reaped {
		_, _ = c.refresh(ctx)
		return true
	}
	_, ok := c.view(ctx, true)[n.ID]
	return !ok
}

// replace places key again, after the node it was sent to was lost.
func (c *cluster) replace(ctx context.Context, key store.AgentKey) (placement, error) {
	cls, _ := c.rt.class(key.Class)
	return c.place(ctx, cls, key)
}

// unavailable builds the error for a node that did not answer.
func unavailable(key store.AgentKey, n store.Node, err error) error {
	return fmt.Errorf("agent %s is live on node %s at %s, which did not answer (%v): %w; retry: it is taken over once the node's lease lapses",
		key, n.ID, n.Address, err, ErrNodeUnavailable)
}

// ---- Calls by name ----------------------------------------------------

// callRequest is the body of a named call between nodes.
type callRequest struct {
	Class  string            `json:"class"`
	Name   string            `json:"name"`
	Method string            `json:"method"`
	Args   []json.RawMessage `json:"args"`
}

// callLine is one line of a named call's answer.
type callLine struct {
	Chunk  json.RawMessage `json:"chunk,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Done   bool            `json:"done,omitempty"`
	Error  *callError      `json:"error,omitempty"`
}

// callError is an error as it crosses between nodes: a code for the
// errors callers match, and the message.
type callError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Method  string `json:"method,omitempty"`
	Class   string `json:"class,omitempty"`
}

// The codes of callError, each one of the runtime's sentinel errors.
var callCodes = []struct {
	code string
	err  error
}{
	{"method_not_found", ErrMethodNotFound},
	{"not_callable", ErrNotCallable},
	{"bad_arguments", ErrBadArguments},
	{"unknown_class", ErrUnknownClass},
	{"invalid_name", ErrInvalidName},
	{"state_rejected", ErrStateRejected},
	{"stopped", ErrStopped},
	{"elsewhere", ErrAgentElsewhere},
	{"unavailable", ErrNodeUnavailable},
}

func encodeCallError(err error) *callError {
	ce := &callError{Code: "error", Message: err.Error()}
	if me, ok := errors.AsType[*MethodError](err); ok {
		ce.Method, ce.Class, ce.Message = me.Method, me.Class, me.Detail
	}
	for _, c := range callCodes {
		if errors.Is(err, c.err) {
			ce.Code = c.code
			break
		}
	}
	return ce
}

func (ce *callError) decode(node string) error {
	for _, c := range callCodes {
		if c.code != ce.Code {
			continue
		}
		if ce.Method != "" {
			return &MethodError{Class: ce.Class, Method: ce.Method, Err: c.err, Detail: ce.Message}
		}
		return fmt.Errorf("node %s: %s: %w", node, ce.Message, c.err)
	}
	return &RemoteError{Node: node, Message: ce.Message}
}

// call runs a named call on the node p names, following one 421, or
// placing the agent again once if that node is gone (see lost).
func (c *cluster) call(ctx context.Context, p placement, key store.AgentKey, method string, args []json.RawMessage, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	for try := 0; ; try++ {
		res, err := c.callOnce(ctx, p.node, key, method, args, onChunk)
		if _, moved := errors.AsType[*misdirectedError](err); moved || errors.Is(err, ErrNodeUnavailable) ||
			errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrStopped) {
			c.forget(key)
		}
		if errors.Is(err, ErrNodeUnavailable) && try == 0 && c.lost(ctx, p.node) {
			if p, err = c.replace(ctx, key); err != nil {
				return nil, err
			}
			if p.local {
				return nil, errRunHere
			}
			continue
		}
		me, ok := errors.AsType[*misdirectedError](err)
		if !ok || try > 0 {
			return res, err
		}
		if p, err = c.retarget(ctx, key, me.owner); err != nil {
			return nil, err
		}
		if p.local {
			return nil, errRunHere
		}
	}
}

// errRunHere: a 421 named this node; the caller runs the call here.
var errRunHere = errors.New("run here")

func (c *cluster) callOnce(ctx context.Context, n store.Node, key store.AgentKey, method string, args []json.RawMessage, onChunk func(json.RawMessage) error) (json.RawMessage, error) {
	if args == nil {
		args = []json.RawMessage{}
	}
	body, err := json.Marshal(callRequest{Class: key.Class, Name: key.Name, Method: method, Args: args})
	if err != nil {
		return nil, fmt.Errorf("call %s.%s: encode arguments: %w", key, method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.Address+"/"+callPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("call %s.%s on node %s: %w", key, method, n.ID, err)
	}
	c.sign(req)
	c.rt.tel.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if sentNothing(err) {
			return nil, unavailable(key, n, err)
		}
		return nil, fmt.Errorf("call %s.%s on node %s: %v: %w", key, method, n.ID, err, ErrOutcomeUnknown)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusMisdirectedRequest:
		return nil, &misdirectedError{owner: resp.Header.Get(ownerHeader)}
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("call %s.%s on node %s: %s: %s", key, method, n.ID, resp.Status, strings.TrimSpace(string(msg)))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			err = fmt.Errorf("%w: %w", err, ErrClusterAuth)
		}
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, maxCallBytes) // from 4 KiB, grown as lines need
	for sc.Scan() {
		var l callLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("call %s.%s on node %s: malformed answer: %w", key, method, n.ID, err)
		}
		switch {
		case l.Error != nil:
			return nil, l.Error.decode(n.ID)
		case l.Done:
			if l.Result == nil {
				l.Result = json.RawMessage("null")
			}
			return l.Result, nil
		case onChunk != nil:
			if err := onChunk(l.Chunk); err != nil {
				return nil, err
			}
		}
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("call %s.%s on node %s: %v: %w", key, method, n.ID, err, ErrOutcomeUnknown)
}

// maxCallBytes bounds a named call's request and each line of its answer.
const maxCallBytes = 16 << 20

// sign marks req as coming from this node of the cluster.
func (c *cluster) sign(req *http.Request) {
	req.Header.Set(secretHeader, c.secret)
	req.Header.Set(forwardedHeader, c.rt.node)
}

// sentNothing reports whether a failed request never reached the server
// (the connection could not be made), so that it certainly did not run.
func sentNothing(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// serveCall answers a named call from another node: it runs the method
// on the agent live here (activating it here), never forwarding again.
func (h *handler) serveCall(w http.ResponseWriter, r *http.Request) {
	rt := h.rt
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "named calls are POSTed", http.StatusMethodNotAllowed)
		return
	}
	var req callRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCallBytes))
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "malformed named call: "+err.Error(), http.StatusBadRequest)
		return
	}
	key := store.AgentKey{Class: req.Class, Name: req.Name}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	var mu sync.Mutex // chunks and the answer from one goroutine at a time
	write := func(l callLine) error {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(l); err != nil {
			return err
		}
		return rc.Flush()
	}
	res, err := rt.callHere(r.Context(), key, req.Method, req.Args, func(chunk json.RawMessage) error {
		return write(callLine{Chunk: chunk})
	})
	if owned, ok := errors.AsType[*store.AgentOwnedError](err); ok {
		w.Header().Set(ownerHeader, owned.Node.ID)
		http.Error(w, err.Error(), http.StatusMisdirectedRequest)
		return
	}
	if err != nil {
		_ = write(callLine{Error: encodeCallError(err)})
		return
	}
	_ = write(callLine{Done: true, Result: res})
}

// ---- Forwarding HTTP and WebSocket -------------------------------------

// hopHeaders are the headers of one connection, not passed on.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends r (whose body, when not a WebSocket, is body) to the node
// p names and copies the answer back, following one 421, or placing the
// agent again once if that node is gone (see lost). It reports whether it
// answered; when the agent is to be served here, it answers nothing and
// the caller serves the request.
func (h *handler) forward(w http.ResponseWriter, r *http.Request, key store.AgentKey, kebab, rest string, body []byte, p placement) bool {
	cl := h.rt.cluster
	for try := 0; ; try++ {
		owner, err := h.forwardOnce(w, r, key, kebab, rest, body, p.node)
		if err == nil && owner == "" {
			return true
		}
		cl.forget(key)
		if errors.Is(err, ErrNodeUnavailable) && try == 0 && cl.lost(r.Context(), p.node) {
			if p, err = cl.replace(r.Context(), key); err != nil {
				http.Error(w, err.Error(), statusOf(err))
				return true
			}
			if p.local {
				return false
			}
			continue
		}
		if err != nil {
			status := http.StatusBadGateway
			if errors.Is(err, ErrNodeUnavailable) {
				status = http.StatusServiceUnavailable
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, err.Error(), status)
			return true
		}
		if try > 0 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("agent %s moved between nodes while this request was sent; retry", key), http.StatusServiceUnavailable)
			return true
		}
		if p, err = cl.retarget(r.Context(), key, owner); err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return true
		}
		if p.local {
			return false
		}
	}
}

// forwardOnce sends r to node n. It returns the owner a 421 named, or an
// error when the node did not answer; otherwise it has answered w.
func (h *handler) forwardOnce(w http.ResponseWriter, r *http.Request, key store.AgentKey, kebab, rest string, body []byte, n store.Node) (owner string, err error) {
	cl := h.rt.cluster
	u := n.Address + "/" + url.PathEscape(kebab) + "/" + url.PathEscape(key.Name) + rest
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	upgrade := isWebSocket(r)
	ctx := r.Context()
	if upgrade {
		// The spliced connection outlives the request's context.
		ctx = context.WithoutCancel(ctx)
	}
	var rb io.Reader
	if body != nil {
		rb = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, u, rb)
	if err != nil {
		return "", fmt.Errorf("forward to node %s: %w", n.ID, err)
	}
	out.Header = r.Header.Clone()
	for _, hh := range hopHeaders {
		out.Header.Del(hh)
	}
	if upgrade {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", "websocket")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		out.Header.Add("X-Forwarded-For", ip)
	}
	out.Host = r.Host
	cl.sign(out)
	resp, err := cl.client.Do(out)
	if err != nil {
		if sentNothing(err) {
			return "", unavailable(key, n, err)
		}
		return "", fmt.Errorf("forward to node %s: %w", n.ID, err)
	}
	if resp.StatusCode == http.StatusMisdirectedRequest && resp.Header.Get(ownerHeader) != "" {
		resp.Body.Close()
		return resp.Header.Get(ownerHeader), nil
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return "", splice(w, resp)
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if slices.Contains(hopHeaders, k) {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return "", nil // the client left
			}
			_ = rc.Flush() // a streamed answer reaches the client as it comes
		}
		if rerr != nil {
			return "", nil
		}
	}
}

// copyBufs hold the buffers forwardOnce copies answers through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// splice answers the client's WebSocket upgrade with the owner's 101 and
// copies bytes both ways until either side closes.
func splice(w http.ResponseWriter, resp *http.Response) error {
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return errors.New("forward WebSocket: the node's answer is not a connection")
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		back.Close()
		return fmt.Errorf("forward WebSocket: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(&head)
	head.WriteString("\r\n")
	if _, err := conn.Write(head.Bytes()); err != nil {
		conn.Close()
		back.Close()
		return nil
	}
	done := make(chan struct{}, 2)
	go func() { // owner → client
		_, _ = io.Copy(conn, back)
		conn.Close()
		done <- struct{}{}
	}()
	go func() { // client → owner, starting with what the server buffered
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Reader.Peek(n)
			_, _ = back.Write(b)
		}
		_, _ = io.Copy(back, conn)
		back.Close()
		done <- struct{}{}
	}()
	<-done
	<-done
	return nil
}

// retryAfter formats d for a Retry-After header.
func retryAfter(d time.Duration) string { return strconv.Itoa(max(1, int(d.Seconds()+0.5))) }

// liveHere reports whether key is live in this runtime (or being
// activated here).
func (rt *Runtime) liveHere(key store.AgentKey) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	_, ok := rt.live[key]
	return ok
}

// ErrLeaseLapsed: this node's heartbeat has not reached the store within
// its lease, so other nodes may be taking its agents over; it serves no
// agent until a heartbeat succeeds again.
var ErrLeaseLapsed = errors.New("this node's lease lapsed: it serves no agent until its heartbeat reaches the store again")

// leaseWait is how long a call waits for a lapsed lease to be renewed.
const leaseWait = time.Second

// awaitLease returns at once while the engine's lease holds; otherwise it
// waits up to leaseWait for a heartbeat (which the engine was asked for).
func (rt *Runtime) awaitLease(ctx context.Context) error {
	if !rt.seam.LeaseLapsed() {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(leaseWait)
	for rt.seam.LeaseLapsed() {
		if time.Now().After(deadline) {
			return ErrLeaseLapsed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
