package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/agentseam"
	"agentflow/internal/engineseam"
	"agentflow/internal/telemetry"
	"agentflow/internal/wakeq"
	"agentflow/store"
	"agentflow/workflow"
)

// Options configure a Runtime. Only Engine is required.
type Options struct {
	// Engine is the workflow engine of this process. The runtime shares
	// its store, its clock and its node identity: an agent is live on the
	// engine's node, and a node the engines reap as dead frees its agents.
	Engine *workflow.Engine
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// IdleTimeout is how long an instance with no call in progress, no
	// connection and no running fiber stays in memory; default 1 minute.
	IdleTimeout time.Duration
	// MaxMessageBytes caps one WebSocket message from a client; a larger
	// one is discarded and answered with an error frame. Default 1 MiB.
	MaxMessageBytes int
	// PingInterval and ReadTimeout find WebSocket clients that vanished
	// without closing (a dead peer, a sleeping laptop), whose connections
	// would otherwise keep their agents in memory. A connection the
	// client has sent nothing on for PingInterval (default 30 s) gets a
	// ping, which clients answer with a pong (browsers do so by
	// themselves); one it has sent nothing on, pongs included, for
	// ReadTimeout (default twice PingInterval) is closed without a close
	// handshake, with code 1006 for OnClose, which releases its reference
	// on the instance. A client is not held to the timeout while its own
	// message is being handled, since the connection is not read then, nor
	// while a message of its is still arriving. ReadTimeout must be longer
	// than PingInterval. A negative PingInterval turns both off.
	PingInterval time.Duration
	ReadTimeout  time.Duration
	// ScheduleRetry is how a failing schedule callback is retried in
	// place; default 3 attempts with jittered backoff from 100 ms to 3 s.
	ScheduleRetry Retry
	// ScheduleHorizon is how far ahead schedule times are held in memory
	// (default 5 s); PollInterval is how often the store is asked for
	// them and for fibers to recover (default 1 s).
	ScheduleHorizon time.Duration
	PollInterval    time.Duration

	// AdvertiseURL is where the other nodes of the cluster reach this
	// process's agents: the URL of its Handler, prefix included, such as
	// "http://10.0.0.5:8787/agents". It is kept with the node's row. With
	// it and ClusterSecret, a request or call for an agent live on another
	// node is sent there (see Handler and Ref.Call). Without it no node
	// can send this one anything, and a request for an agent live here
	// that reaches another node fails there with an AgentOwnedError.
	AdvertiseURL string
	// ClusterSecret is shared by every node of the cluster: requests
	// between nodes carry it, and a node refuses the internal ones that
	// do not (compared in constant time). A process that serves no agents
	// but calls them (a workflow service whose workflows call their
	// agents) needs it too, and no AdvertiseURL.
	ClusterSecret string
	// ClusterClient sends requests to other nodes; by default one with a
	// 2 s connect timeout that keeps connections open between calls.
	ClusterClient *http.Client

	// TracerProvider and MeterProvider turn on OpenTelemetry traces and
	// metrics for agents (and Think agents). When both are nil, the
	// default, the runtime uses the engine's (workflow.Options), which are
	// off unless set there; the OpenTelemetry globals are never read.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Retry is a retry policy with jittered exponential backoff.
type Retry struct {
	Attempts int           // total attempts, including the first
	MinDelay time.Duration // backoff before the second attempt
	MaxDelay time.Duration // cap on the backoff
}

// Runtime hosts agent classes: it activates instances on first use, evicts
// idle ones, serves them over HTTP and WebSocket (Handler), and runs their
// schedules and fibers.
type Runtime struct {
	opts   Options
	engine *workflow.Engine
	seam   engineseam.Engine // the engine's side the runtime alone uses
	store  runtimeStore
	host   *agentseam.Host // the runtime's side bases such as think.Agent use
	clock  clockwork.Clock
	log    *slog.Logger
	node   string

	classMu  sync.RWMutex
	classes  map[string]*class // by name
	names    []string          // sorted; replaced, never changed in place
	byKebab  map[string]*class
	byType   map[reflect.Type]*class // by *T
	bindings map[string]Binding

	mu       sync.Mutex
	live     map[store.AgentKey]*activation
	livePeak int // the most entries live has had since it was last copied
	stopped  bool

	cluster *cluster

	sched  *wakeq.Queue
	ctx    context.Context // background work runs under it; cancelled by Stop
	cancel context.CancelFunc
	loops  sync.WaitGroup
	work   sync.WaitGroup // schedule runs and fibers
	probe  *agentseam.Probe
	tel    *telemetry.T
	gauges func() // unregisters the live-agents gauge
}

// activation is an instance being activated or live.
type activation struct {
	done chan struct{} // closed when inst or err is set
	inst *instance
	err  error
}

// NewRuntime returns a runtime over opts.Engine. Register classes, then
// Start.
func NewRuntime(opts Options) (*Runtime, error) {
	if opts.Engine == nil {
		return nil, errors.New("agent: Options.Engine is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Minute
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 1 << 20
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = 30 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 2 * opts.PingInterval
	}
	if opts.PingInterval > 0 && opts.ReadTimeout <= opts.PingInterval {
		return nil, fmt.Errorf("agent: Options.ReadTimeout (%s) must be longer than PingInterval (%s)", opts.ReadTimeout, opts.PingInterval)
	}
	if opts.ScheduleRetry.Attempts <= 0 {
		opts.ScheduleRetry.Attempts = 3
	}
	if opts.ScheduleRetry.MinDelay <= 0 {
		opts.ScheduleRetry.MinDelay = 100 * time.Millisecond
	}
	if opts.ScheduleRetry.MaxDelay <= 0 {
		opts.ScheduleRetry.MaxDelay = 3 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	e := opts.Engine
	seam := e.Seam(engineseam.Key{})
	rt := &Runtime{
		opts:     opts,
		engine:   e,
		seam:     seam,
		store:    seam.Store(),
		clock:    e.Clock(),
		log:      opts.Logger.With("node", e.NodeID()),
		node:     e.NodeID(),
		classes:  map[string]*class{},
		byKebab:  map[string]*class{},
		byType:   map[reflect.Type]*class{},
		bindings: map[string]Binding{},
		live:     map[store.AgentKey]*activation{},
	}
	rt.tel = seam.Telemetry()
	if opts.TracerProvider != nil || opts.MeterProvider != nil {
		t, err := telemetry.New(opts.TracerProvider, opts.MeterProvider)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		rt.tel = t
	}
	unreg, err := rt.tel.ObserveGauge(telemetry.MetricAgentsLive, "{agent}", "Agent instances live in this runtime's memory.",
		0, rt.clock.Now, func(context.Context) ([]telemetry.Gauge, error) {
			return []telemetry.Gauge{{Value: int64(rt.Live()), Attrs: []attribute.KeyValue{telemetry.KeyNode.String(rt.node)}}}, nil
		})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	rt.gauges = unreg
	rt.host = agentseam.NewHost(seam.Store(), rt.log, opts.PollInterval)
	rt.host.SetTelemetry(rt.tel)
	if err := rt.host.HandleCall(stateMethod, stateHandler); err != nil {
		return nil, err
	}
	// Background work runs under rt.ctx, which carries the probe so that
	// code below it (a scripted model, a task's retries) can park. A test
	// harness's store may supply the probe (see seam.go).
	rt.probe = agentseam.ProbeFor(seam.Store(), rt.classNames)
	rt.ctx, rt.cancel = context.WithCancel(agentseam.WithProbe(context.Background(), rt.probe))
	if opts.AdvertiseURL != "" {
		u, err := url.Parse(opts.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("agent: Options.AdvertiseURL %q: must be an http:// or https:// URL with a host, such as http://10.0.0.5:8787/agents", opts.AdvertiseURL)
		}
		if opts.ClusterSecret == "" {
			return nil, errors.New("agent: Options.AdvertiseURL needs a ClusterSecret: other nodes must prove they belong to the cluster")
		}
	}
	rt.cluster = newCluster(rt, opts)
	rt.sched = wakeq.New(wakeq.Options{
		Clock:        rt.clock,
		Horizon:      opts.ScheduleHorizon,
		PollInterval: opts.PollInterval,
		Load: func(ctx context.Context, until time.Time) ([]time.Time, error) {
			return rt.store.NextScheduleTimes(ctx, rt.classNames(), until, 10_000)
		},
		Claim:       rt.claimSchedules,
		OnLoadError: func(err error) { rt.log.Warn("loading schedule times failed", "err", err) },
	})
	// A workflow this runtime's agent started finished here: its notice is
	// due now, so claim it now rather than at the next poll.
	seam.OnFinished(func(string, store.AgentKey) { rt.sched.Poke() })
	return rt, nil
}

func (rt *Runtime) register(c *class) error {
	rt.classMu.Lock()
	defer rt.classMu.Unlock()
	if _, dup := rt.classes[c.name]; dup {
		return fmt.Errorf("agent: register %s: a class of that name is already registered", c.name)
	}
	if other, dup := rt.byKebab[c.kebab]; dup {
		return fmt.Errorf("agent: register %s: its URL name %q is already %s's", c.name, c.kebab, other.name)
	}
	if other, dup := rt.byType[reflect.PointerTo(c.typ)]; dup {
		return fmt.Errorf("agent: register %s: type %s is already registered as %s", c.name, c.typ, other.name)
	}
	rt.classes[c.name] = c
	rt.names = append(slices.Clone(rt.names), c.name)
	slices.Sort(rt.names)
	rt.byKebab[c.kebab] = c
	rt.byType[reflect.PointerTo(c.typ)] = c
	return nil
}

// classNames returns the names of the registered classes, whose schedules
// and fibers this runtime looks after.
func (rt *Runtime) classNames() []string {
	rt.classMu.RLock()
	defer rt.classMu.RUnlock()
	return rt.names
}

func (rt *Runtime) class(name string) (*class, error) {
	rt.classMu.RLock()
	c := rt.classes[name]
	rt.classMu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("agent class %q: %w", name, ErrUnknownClass)
	}
	return c, nil
}

// Start starts the runtime's background work: schedules, eviction of idle
// instances and recovery of fibers cut off by a crash. The engine should be
// started too, since its node heartbeat is what keeps this runtime's
// agents placed here.
func (rt *Runtime) Start(ctx context.Context) error {
	rt.mu.Lock()
	stopped := rt.stopped
	rt.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	loops := []func(context.Context){rt.sched.Run, rt.evictLoop, rt.recoverLoop, rt.wakeLoop()}
	if rt.cluster.enabled() {
		// Advertised before Start returns, so that other nodes can send
		// requests here from the first one on.
		if err := rt.cluster.advertise(ctx); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("agent: advertise this node: %w", err)
		}
		loops = append(loops, rt.cluster.loop)
	}
	loops = append(loops, rt.host.Loops()...)
	for _, loop := range loops {
		rt.loops.Go(func() { loop(rt.ctx) })
	}
	rt.sched.Poke()
	return nil
}

// Stop closes every connection, stops background work and releases every
// live instance, so that another node may activate them at once. Fibers
// still running are left as they are in the ledger: once this node is gone
// they are recovered like fibers of a crashed node.
func (rt *Runtime) Stop(ctx context.Context) error {
	rt.mu.Lock()
	if rt.stopped {
		rt.mu.Unlock()
		return nil
	}
	rt.stopped = true
	var insts []*instance
	for _, a := range rt.live {
		select {
		case <-a.done:
			if a.inst != nil {
				insts = append(insts, a.inst)
			}
		default:
		}
	}
	rt.mu.Unlock()
	for _, in := range insts {
		in.closeConns(1001, "server is stopping")
	}
	// Let the close handshakes finish before cancelling the reads they
	// need, so that clients get the close frame.
	deadline := time.Now().Add(2 * time.Second)
	for _, in := range insts {
		for len(in.connections()) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	rt.cancel()
	rt.gauges()
	done := make(chan struct{})
	go func() {
		rt.loops.Wait()
		rt.work.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("agent: stop: %w", ctx.Err())
	}
	for _, in := range insts {
		if err := in.releaseLease(ctx); err != nil {
			rt.log.Warn("releasing agent failed", "agent", in.key, "err", err)
		}
	}
	return nil
}

// Live returns how many instances are in memory on this node.
func (rt *Runtime) Live() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.live)
}

// NodeID returns the node the runtime's agents are live on.
func (rt *Runtime) NodeID() string { return rt.node }

// runtimeStore is the part of the store the runtime runs on.
type runtimeStore interface {
	store.AgentStore
	store.AgentWorkflowStore
	store.NodeStore
	GetInstance(ctx context.Context, id string) (*store.Instance, error)
}

// Clock returns the runtime's clock (the engine's).
func (rt *Runtime) Clock() clockwork.Clock { return rt.clock }

// Engine returns the workflow engine the runtime shares.
func (rt *Runtime) Engine() *workflow.Engine { return rt.engine }

// WakeSchedules makes the runtime look for due schedules now instead of at
// its next timer or poll. Use it after advancing a virtual clock or
// changing the store from outside the runtime.
func (rt *Runtime) WakeSchedules() { rt.sched.Poke() }

// acquire returns the live instance of key, activating it if need be, and
// holds a reference that keeps it from eviction until release.
func (rt *Runtime) acquire(ctx context.Context, c *class, name string) (*instance, error) {
	// Every way to an instance comes through here: a name no rule allows
	// is refused before it reaches the map or the store.
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("agent %s: %w", c.name, err)
	}
	key := store.AgentKey{Class: c.name, Name: name}
	if err := rt.awaitLease(ctx); err != nil {
		return nil, fmt.Errorf("agent %s: %w", key, err)
	}
	for {
		rt.mu.Lock()
		if rt.stopped {
			rt.mu.Unlock()
			return nil, ErrStopped
		}
		a := rt.live[key]
		if a == nil {
			a = &activation{done: make(chan struct{})}
			rt.live[key] = a
			rt.mu.Unlock()
			rt.activate(ctx, c, key, a)
		} else {
			rt.mu.Unlock()
		}
		select {
		case <-a.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if a.err == errReleasing {
			continue // evicted: released now, activate again
		}
		if a.err != nil {
			return nil, a.err
		}
		rt.mu.Lock()
		in := a.inst
		if in.gone {
			rt.mu.Unlock()
			continue // evicted after activation; activate again
		}
		in.refs++
		rt.mu.Unlock()
		return in, nil
	}
}

// release drops a reference acquire took.
func (rt *Runtime) release(in *instance) {
	rt.mu.Lock()
	in.refs--
	if in.refs == 0 {
		in.idleSince = rt.clock.Now()
	}
	rt.mu.Unlock()
}

// activate makes key live here: the store's claim, the state, OnStart, and
// recovery of the fibers a crash cut off.
func (rt *Runtime) activate(ctx context.Context, c *class, key store.AgentKey, a *activation) {
	defer close(a.done)
	actx, span := rt.tel.StartActivation(context.WithoutCancel(ctx), c.name, key.Name)
	in, err := rt.newInstance(actx, c, key)
	rt.tel.EndActivation(actx, span, c.name, err)
	if err != nil {
		rt.mu.Lock()
		if rt.live[key] == a {
			delete(rt.live, key)
		}
		rt.mu.Unlock()
		a.err = err
		return
	}
	a.inst = in
}

func (rt *Runtime) newInstance(ctx context.Context, c *class, key store.AgentKey) (*instance, error) {
	row, err := rt.store.ActivateAgent(ctx, key, rt.node, rt.clock.Now())
	if owned, ok := errors.AsType[*store.AgentOwnedError](err); ok {
		// Live on a node of this host whose process has died since the
		// engine last looked: reap it now rather than at the next
		// heartbeat, and take the agent over.
		if reaped, rerr := rt.seam.ReapIfGone(ctx, owned.Node); rerr != nil {
			rt.log.Warn("reaping the dead node an agent is live on failed", "agent", key, "dead_node", owned.Node.ID, "err", rerr)
		} else if reaped {
			row, err = rt.store.ActivateAgent(ctx, key, rt.node, rt.clock.Now())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("activate agent %s: %w", key, err)
	}
	in := &instance{
		rt:    rt,
		cls:   c,
		key:   key,
		log:   rt.log.With("agent", key.String()),
		lease: store.AgentLease{AgentKey: key, Owner: rt.node, Fence: row.Fence},
		lock:  make(chan struct{}, 1),
	}
	in.obj = c.newInst()
	in.obj.bind(in, in.obj)
	fail := func(err error) (*instance, error) {
		if rerr := in.releaseLease(ctx); rerr != nil {
			rt.log.Warn("releasing agent after failed activation", "agent", key, "err", rerr)
		}
		return nil, fmt.Errorf("activate agent %s: %w", key, err)
	}
	if err := in.obj.loadState(row.State); err != nil {
		return fail(err)
	}
	if s, ok := in.obj.(Activator); ok {
		if err := in.guard(func() error { return s.OnActivate(ctx) }); err != nil {
			return fail(fmt.Errorf("OnActivate: %w", err))
		}
	}
	if s, ok := in.obj.(Starter); ok {
		if err := in.guard(func() error { return s.OnStart(ctx) }); err != nil {
			return fail(fmt.Errorf("OnStart: %w", err))
		}
	}
	if row.UnfinishedFibers {
		if err := in.recoverFibers(ctx); err != nil {
			return fail(err)
		}
	}
	return in, nil
}

// evictLoop evicts instances idle for longer than IdleTimeout.
func (rt *Runtime) evictLoop(ctx context.Context) {
	every := min(max(rt.opts.IdleTimeout/4, 10*time.Millisecond), time.Second)
	t := rt.clock.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		rt.EvictIdle(ctx)
		t.Reset(every)
	}
}

// EvictIdle evicts now every instance that has been idle for IdleTimeout,
// and returns how many it evicted. The runtime calls it periodically;
// tests and benchmarks may call it to evict at once.
func (rt *Runtime) EvictIdle(ctx context.Context) int {
	cutoff := rt.clock.Now().Add(-rt.opts.IdleTimeout)
	var evict []evicted
	rt.mu.Lock()
	for key, a := range rt.live {
		select {
		case <-a.done:
		default:
			continue // activating
		}
		in := a.inst
		if in == nil || in.refs > 0 || in.idleSince.After(cutoff) {
			continue
		}
		// Until its release is written, the key holds a placeholder that
		// makes callers wait: activated here again meanwhile, the agent
		// would take its own row over (fence 2), which its release then
		// could not delete when it has stored nothing.
		in.gone = true
		ph := &activation{done: make(chan struct{}), err: errReleasing}
		rt.live[key] = ph
		evict = append(evict, evicted{in, ph})
	}
	rt.livePeak = max(rt.livePeak, len(rt.live))
	rt.mu.Unlock()
	if len(evict) == 0 {
		return 0
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, ev := range evict {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := ev.in.releaseLease(ctx); err != nil && ctx.Err() == nil {
				rt.log.Warn("releasing idle agent failed", "agent", ev.in.key, "err", err)
			}
			rt.mu.Lock()
			if rt.live[ev.in.key] == ev.placeholder {
				delete(rt.live, ev.in.key)
			}
			rt.mu.Unlock()
			close(ev.placeholder.done)
		})
	}
	wg.Wait()
	// Go maps never shrink: after a peak of activity, copy the survivors
	// into a map of their size so that evicted agents leave no memory.
	rt.mu.Lock()
	if len(rt.live) < rt.livePeak/4 {
		live := make(map[store.AgentKey]*activation, len(rt.live)) // not maps.Clone: it keeps the capacity
		maps.Copy(live, rt.live)
		rt.live, rt.livePeak = live, len(live)
	}
	rt.mu.Unlock()
	return len(evict)
}

// evicted is an instance EvictIdle releases, and the placeholder that
// stands for it in the live map until the release is written.
type evicted struct {
	in          *instance
	placeholder *activation
}

// errReleasing is the outcome of a placeholder: acquire waits for it, then
// activates the agent anew.
var errReleasing = errors.New("agent is being released")

// drop forgets an instance whose activation was lost to another node, so
// that the next call activates it again (and learns where it lives).
func (rt *Runtime) drop(in *instance) {
	rt.mu.Lock()
	if a := rt.live[in.key]; a != nil && a.inst == in {
		delete(rt.live, in.key)
	}
	in.gone = true
	rt.mu.Unlock()
	in.closeConns(1012, "agent moved to another node")
}

// reportError hands an error that has no caller to the class's error hook,
// and logs it.
func (in *instance) reportError(ctx context.Context, err error) {
	in.log.Warn("agent error", "err", err)
	if h, ok := in.obj.(ErrorHook); ok {
		_ = in.guard(func() error { h.OnError(ctx, err); return nil })
	}
}
