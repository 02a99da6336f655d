package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"agentflow/internal/ids"
	"agentflow/internal/telemetry"
	"agentflow/store"
)

// Options configure an Engine. Only Store is required.
type Options struct {
	Store store.Store
	// Clock is the engine's only source of time; default the real clock.
	// Tests pass a clockwork.FakeClock (see package workflowtest).
	Clock clockwork.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Service names the group of engines that run this engine's classes;
	// instances are queued per service. Default "".
	Service string
	// NodeID identifies this engine in the store; default a random id.
	NodeID string
	// MaxConcurrent caps instances executing at once; default 256.
	MaxConcurrent int
	// Lease is how long a node's claim on its executing instances outlives
	// its last heartbeat; another node takes them over after that. Default
	// 10 s; heartbeats go out every Lease/3.
	Lease time.Duration
	// TimerHorizon is how far ahead wake-up times are loaded into memory;
	// default 5 s. PollInterval is how often the store is asked for them,
	// which is also how soon work made by other processes is noticed when
	// the store does not signal it (store.Waker); default 1 s.
	TimerHorizon time.Duration
	PollInterval time.Duration
	// ClaimAhead is how long before its wake-up time a sleeping, retrying
	// or timing-out instance is claimed: its checkpoints are read and its
	// replay reaches the pending step early, then waits in memory (holding
	// an execution slot) for the time, so that the claim and the read do
	// not make the step after the timer late. Default 250 ms when Clock is
	// unset (the real clock), and none when a Clock is given (a virtual
	// clock moves only when a test advances it); negative: none.
	ClaimAhead time.Duration
	// Retention is how long finished instances are kept; default 30 days.
	Retention time.Duration
	Limits    Limits
	Hooks     Hooks

	// TracerProvider and MeterProvider turn on OpenTelemetry traces and
	// metrics (see README "Observability"). Nil, the default, turns each
	// off at no cost: the engine never reads the OpenTelemetry globals, so
	// pass otel.GetTracerProvider() to use them.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// GaugeInterval is how often the gauges computed from the store
	// (instances by status, the due backlog) query it at most, however
	// often they are scraped; default 15 s. Counting instances by status
	// takes about 100-400 ms per million rows.
	GaugeInterval time.Duration
}

// DefaultClaimAhead is Options.ClaimAhead's default with the real clock.
//
// It is longer than a burst's claims and checkpoint reads take on a loaded
// store (tens of milliseconds on SQLite, up to a few hundred on PostgreSQL),
// so that they are done before the first of the burst is due; the instances
// claimed ahead hold execution slots while they wait, so at most
// MaxConcurrent are ever waiting.
const DefaultClaimAhead = 250 * time.Millisecond

// engineStore is the part of the store the engine runs on.
type engineStore interface {
	store.InstanceStore
	store.NodeStore
}

// Engine runs workflow instances from a store.
type Engine struct {
	store   engineStore
	shared  store.Store // the whole store, for the agent runtime that shares it
	clock   clockwork.Clock
	log     *slog.Logger
	service string
	nodeID  string
	limits  Limits
	hooks   Hooks
	opts    Options
	tel     *telemetry.T
	gauges  func() // unregisters the store gauges

	mu      sync.RWMutex
	classes map[string]*class

	sched    *scheduler
	slots    chan struct{}
	started  atomic.Bool // Start was called
	running  atomic.Bool // Start finished: executions may be launched
	stopping atomic.Bool
	quit     chan struct{}   // closed when Stop begins
	ctx      context.Context // executions run under it; cancelled by Stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup // executions
	// launchMu orders launches against Stop: a launch checks stopping and
	// adds to wg under it, so that Stop, having set stopping, can pass it
	// once and then wait for wg with no Add racing the Wait.
	launchMu sync.Mutex
	loops    sync.WaitGroup // background loops
	nodeMu   sync.Mutex
	node     store.Node
	// leaseUntil is when this node's claims lapse, in Unix nanoseconds of
	// the engine's clock, as of its last successful heartbeat. Past it,
	// other nodes may take its instances over, so it starts no more steps.
	leaseUntil atomic.Int64
	renew      chan struct{} // asks nodeLoop to heartbeat now
	unsubWakes func()        // ends the store's wakes' subscription, if any

	finishedMu sync.RWMutex
	finished   []func(instanceID string, origin store.AgentKey) // see seam.OnFinished
	waits      waiters                                          // Instance.Wait's
}

// NewEngine returns an engine over opts.Store. Register classes, then Start.
func NewEngine(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("workflow: Options.Store is required")
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
		if opts.ClaimAhead == 0 {
			opts.ClaimAhead = DefaultClaimAhead
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.NodeID == "" {
		opts.NodeID = "node_" + ids.Random()
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 256
	}
	if opts.Lease <= 0 {
		opts.Lease = 10 * time.Second
	}
	if opts.TimerHorizon <= 0 {
		opts.TimerHorizon = 5 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	opts.ClaimAhead = max(opts.ClaimAhead, 0)
	if opts.Retention <= 0 {
		opts.Retention = 30 * 24 * time.Hour
	}
	if opts.GaugeInterval <= 0 {
		opts.GaugeInterval = 15 * time.Second
	}
	tel, err := telemetry.New(opts.TracerProvider, opts.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("workflow: %w", err)
	}
	e := &Engine{
		tel:     tel,
		store:   opts.Store,
		shared:  opts.Store,
		clock:   opts.Clock,
		log:     opts.Logger.With("node", opts.NodeID),
		service: opts.Service,
		nodeID:  opts.NodeID,
		limits:  opts.Limits.withDefaults(),
		hooks:   opts.Hooks,
		opts:    opts,
		classes: make(map[string]*class),
		slots:   make(chan struct{}, opts.MaxConcurrent),
		renew:   make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	e.sched = newScheduler(e)
	return e, nil
}

// NodeID returns the id this engine claims instances under.
func (e *Engine) NodeID() string { return e.nodeID }

// Executing returns how many instances this engine is executing (or
// claiming) right now.
func (e *Engine) Executing() int { return len(e.slots) }

// Wake makes the engine look for due instances now instead of at its next
// timer or poll. Use it after advancing a virtual clock or changing the
// store from outside the engine.
func (e *Engine) Wake() { e.sched.add(e.clock.Now()) }

// Clock returns the engine's clock.
func (e *Engine) Clock() clockwork.Clock { return e.clock }

func (e *Engine) register(c *class) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.classes[c.name]; dup {
		return fmt.Errorf("workflow: class %q is already registered", c.name)
	}
	e.classes[c.name] = c
	return nil
}

func (e *Engine) class(name string) (*class, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	c, ok := e.classes[name]
	return c, ok
}

// Start registers the node, takes over instances of dead nodes, and starts
// executing due instances in the background until Stop.
func (e *Engine) Start(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("workflow: engine already started")
	}
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	host, _ := os.Hostname()
	now := e.clock.Now()
	e.node = store.Node{ID: e.nodeID, Service: e.service, Host: host, PID: os.Getpid(), StartedAt: now, ExpiresAt: now.Add(e.opts.Lease)}
	e.node.Process = processIdentity(e.node.PID)
	if err := e.store.Heartbeat(ctx, e.node); err != nil {
		e.cancel()
		e.started.Store(false)
		return fmt.Errorf("workflow: start: %w", err)
	}
	e.leaseUntil.Store(e.node.ExpiresAt.UnixNano())
	if err := e.registerGauges(); err != nil {
		e.cancel()
		e.started.Store(false)
		return fmt.Errorf("workflow: start: %w", err)
	}
	e.reapNodes(ctx)
	e.goLoop(e.nodeLoop)
	e.goLoop(e.sched.q.Run)
	e.goLoop(e.retentionLoop)
	e.running.Store(true)
	e.subscribeWakes()
	e.sched.poke()
	return nil
}

// subscribeWakes has the scheduler claim at once when the store signals
// that instances of this engine's service are due, e.g. queued by another
// process; without such a store (or such a signal, which may be lost) the
// poll every PollInterval finds them.
func (e *Engine) subscribeWakes() {
	w, ok := e.store.(store.Waker)
	if !ok {
		return
	}
	e.unsubWakes = w.Subscribe(func(wk store.Wake) {
		if wk.Kind == store.WakeAll || wk.Kind == store.WakeInstances && wk.Key == e.service {
			e.sched.poke()
		}
	})
}

func (e *Engine) goLoop(f func(ctx context.Context)) {
	e.loops.Add(1)
	go func() {
		defer e.loops.Done()
		f(e.ctx)
	}()
}

// Stop stops claiming work, lets executing instances reach their next step
// boundary (or ctx's end, whichever is first), then releases whatever this
// node still owns so another engine can continue it at once.
func (e *Engine) Stop(ctx context.Context) error {
	if !e.started.Load() || !e.stopping.CompareAndSwap(false, true) {
		return nil
	}
	close(e.quit)
	// Every launch from here on sees stopping and starts nothing.
	e.launchMu.Lock()
	e.launchMu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if e.unsubWakes != nil {
		e.unsubWakes()
	}
	e.cancel()
	e.loops.Wait()
	e.gauges()
	_, err := e.store.RemoveNode(context.WithoutCancel(ctx), e.nodeID, e.clock.Now())
	if err != nil {
		return fmt.Errorf("workflow: stop: %w", err)
	}
	return nil
}

// retryWrite runs a fenced write, retrying store failures with backoff while
// the engine runs. It returns the error that ends the execution: a lost
// lease, or the engine stopping.
func (e *Engine) retryWrite(ctx context.Context, id string, fn func(ctx context.Context) error) error {
	delay := 50 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrLeaseLost) {
			e.log.Info("instance taken over or ended elsewhere; abandoning execution", "instance", id, "err", err)
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.log.Warn("store write failed; retrying", "instance", id, "err", err, "retry_in", delay)
		select {
		case <-e.clock.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// leaseValid reports whether this node's claims are still its own at now.
// When they are not, it asks for a heartbeat at once rather than at the
// next tick: after a stall (or a jump of a virtual clock) the node resumes
// as soon as the store confirms it is alive.
func (e *Engine) leaseValid(now time.Time) bool {
	if now.UnixNano() < e.leaseUntil.Load() {
		return true
	}
	select {
	case e.renew <- struct{}{}:
	default:
	}
	return false
}

// tryAcquire takes an execution slot if one is free.
func (e *Engine) tryAcquire() bool {
	select {
	case e.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (e *Engine) freeSlots() int { return cap(e.slots) - len(e.slots) }

// launch executes a claimed instance in the background; the caller holds a
// slot. Unless fresh (a first claim, which has none), its checkpoints are
// read first.
func (e *Engine) launch(inst *store.Instance, fresh bool) { e.launchWith(inst, nil, !fresh, false) }

// launchClaimed launches the instances one ClaimDue took; the caller holds a
// slot for each. The checkpoints of those claimed before are read for all of
// them with one query (ListStepsOf) rather than one per instance, so that a
// burst of timers costs a round trip per claim, not per instance. If that
// read fails, each instance reads its own, as launch does.
func (e *Engine) launchClaimed(insts []*store.Instance) {
	var ids []string
	for _, in := range insts {
		if in.Fence == 1 {
			e.launch(in, true)
		} else {
			ids = append(ids, in.ID)
		}
	}
	if len(ids) <= 1 {
		for _, in := range insts {
			if in.Fence != 1 {
				e.launch(in, false)
			}
		}
		return
	}
	e.launchMu.Lock()
	defer e.launchMu.Unlock()
	if e.stopping.Load() {
		for range ids {
			<-e.slots
		}
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		histories, err := e.store.ListStepsOf(e.ctx, ids)
		if err != nil {
			e.log.Debug("reading the checkpoints of claimed instances failed; each reads its own", "instances", len(ids), "err", err)
		}
		for _, in := range insts {
			if in.Fence != 1 {
				e.launchWith(in, histories[in.ID], err != nil, false)
			}
		}
	}()
}

// launchWith executes a claimed instance in the background, the caller
// holding a slot: with history as its checkpoints, or, with read, those it
// reads first.
// launchWith runs inst in a goroutine, reading its checkpoints first when
// read is set. delivered says the write that claimed it also completed its
// current wait with the event (a Think prompt's answer; see Step.delivered).
func (e *Engine) launchWith(inst *store.Instance, history []store.Step, read, delivered bool) {
	e.launchMu.Lock()
	defer e.launchMu.Unlock()
	if e.stopping.Load() {
		// Claimed as Stop began: it stays this node's until Stop's
		// RemoveNode releases it for another engine.
		<-e.slots
		return
	}
	e.wg.Add(1)
	go func() {
		defer func() {
			<-e.slots
			e.wg.Done()
			e.sched.slotFreed()
		}()
		if read {
			err := e.retryWrite(e.ctx, inst.ID, func(ctx context.Context) (err error) {
				history, err = e.store.ListSteps(ctx, inst.ID)
				return err
			})
			if err != nil {
				return
			}
		}
		e.execute(inst, history, delivered)
	}()
}

// execute runs Run once: to its end, or until the instance suspends.
func (e *Engine) execute(inst *store.Instance, history []store.Step, delivered bool) {
	lease := store.Lease{InstanceID: inst.ID, Owner: e.nodeID, Fence: inst.Fence}
	ctx, seg := e.tel.StartSegment(e.ctx, telemetry.Segment{Workflow: inst.Workflow, InstanceID: inst.ID,
		Fence: inst.Fence, Restarts: inst.Restarts, Traceparent: inst.TraceParent})
	c, ok := e.class(inst.Workflow)
	if !ok {
		err := fmt.Errorf("%w %q: not registered in service %q", ErrUnknownWorkflow, inst.Workflow, e.service)
		e.finish(ctx, seg, lease, inst.Origin, nil, err)
		return
	}
	st := &Step{e: e, ctx: ctx, inst: inst, lease: lease, history: history, delivered: delivered}
	out, err, u := invoke(c, st)
	if u != nil {
		switch u.kind {
		case unwindSuspend:
			telemetry.EndSegment(seg, "suspended", nil, "")
			return
		case unwindAbandon:
			e.log.Debug("execution abandoned", "instance", inst.ID, "err", u.err)
			telemetry.EndSegment(seg, "abandoned", u.err, "")
			return
		case unwindFail:
			out, err = nil, u.err
		}
	}
	if err == nil && len(out) > e.limits.MaxResultBytes {
		err = fmt.Errorf("output is %d bytes: %w: the limit is %d bytes", len(out), ErrTooLarge, e.limits.MaxResultBytes)
	}
	e.finish(ctx, seg, lease, inst.Origin, out, err)
}

func invoke(c *class, st *Step) (out []byte, err error, u *unwind) {
	defer func() {
		if r := recover(); r != nil {
			if uw, ok := r.(unwind); ok {
				u = &uw
				return
			}
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
		if u == nil && st.unwound != nil { // workflow code swallowed the unwind
			u = st.unwound
		}
	}()
	out, err = c.run(st.ctx, st.inst, st)
	return out, err, nil
}

// finish records the instance's outcome and ends its segment's span seg.
func (e *Engine) finish(ctx context.Context, seg trace.Span, lease store.Lease, origin store.AgentKey, out []byte, runErr error) {
	o := store.Outcome{Status: store.StatusComplete, Output: out}
	if runErr != nil {
		o = store.Outcome{Status: store.StatusErrored, ErrorName: ErrorName(runErr), ErrorMessage: runErr.Error()}
		var se *StepError
		if errors.As(runErr, &se) {
			o.ErrorName, o.ErrorMessage = se.Name, se.Message
		}
	}
	err := e.retryWrite(ctx, lease.InstanceID, func(ctx context.Context) error {
		return e.store.Finish(ctx, lease, o, e.clock.Now())
	})
	switch {
	case err != nil:
		telemetry.EndSegment(seg, "abandoned", err, "")
	case runErr != nil:
		telemetry.EndSegment(seg, string(o.Status), runErr, o.ErrorName)
	default:
		telemetry.EndSegment(seg, string(o.Status), nil, "")
	}
	if err == nil {
		e.waits.notify(lease.InstanceID)
	}
	if err == nil && origin != (store.AgentKey{}) {
		e.finishedMu.RLock()
		fns := e.finished
		e.finishedMu.RUnlock()
		for _, fn := range fns {
			fn(lease.InstanceID, origin)
		}
	}
}

// idPattern is the rule for instance ids.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$`)

// NewInstanceID returns a fresh generated id, "wf_" and 24 characters: the
// creation time in milliseconds (48 bits) followed by 72 random bits. The
// time prefix makes ids generated later sort later, so new instances are
// inserted at the end of the store's indexes and the rows being worked on
// share few pages, which makes each group commit write less.
func NewInstanceID() string { return "wf_" + ids.Sortable(time.Now()) }

// CreateOptions describe one instance to create.
type CreateOptions struct {
	// ID must match ^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$; empty generates one.
	ID string
	// Params is encoded as JSON and must decode into the class's params type.
	Params any
}

// Create creates an instance of the registered class and queues it. If the
// engine is started and has a free slot, the instance is claimed in the
// same write and starts at once.
func (e *Engine) Create(ctx context.Context, workflowName string, opts CreateOptions) (*Instance, error) {
	insts, err := e.create(ctx, workflowName, []CreateOptions{opts})
	if err != nil {
		return nil, err
	}
	return insts[0], nil
}

// CreateBatch creates up to Limits.MaxBatch instances atomically: all of
// them or, on any error, none.
func (e *Engine) CreateBatch(ctx context.Context, workflowName string, batch []CreateOptions) ([]*Instance, error) {
	if len(batch) > e.limits.MaxBatch {
		return nil, invalid(ErrBatchTooLarge, "batch", "", "has %d instances; at most %d may be created at once", len(batch), e.limits.MaxBatch)
	}
	return e.create(ctx, workflowName, batch)
}

func (e *Engine) create(ctx context.Context, workflowName string, batch []CreateOptions) (_ []*Instance, err error) {
	c, ok := e.class(workflowName)
	if !ok {
		return nil, invalid(ErrUnknownWorkflow, "workflow", workflowName, "is not registered")
	}
	if e.tel.Tracing() {
		var span trace.Span
		ctx, span = e.tel.Start(ctx, "create_workflow "+workflowName, trace.WithAttributes(
			telemetry.KeyWorkflow.String(workflowName), attribute.Int("agentflow.workflow.batch_size", len(batch))))
		defer func() { telemetry.End(span, err, "") }()
	}
	traceparent := telemetry.Traceparent(ctx)
	now := e.clock.Now()
	rows := make([]*store.Instance, len(batch))
	seen := make(map[string]bool, len(batch))
	for i, o := range batch {
		in, err := e.newRow(c, o, store.AgentKey{}, now)
		if err != nil {
			return nil, err
		}
		in.TraceParent = traceparent
		if seen[in.ID] {
			return nil, &store.InstanceError{ID: in.ID, Op: "create", Err: store.ErrDuplicateID}
		}
		seen[in.ID] = true
		rows[i] = in
	}
	// Claim what we can run now in the same write; queue the rest.
	claimed := 0
	if e.running.Load() && !e.stopping.Load() {
		for claimed < len(rows) && e.tryAcquire() {
			rows[claimed].Owner, rows[claimed].WakeAt, rows[claimed].Status = e.nodeID, time.Time{}, store.StatusRunning
			claimed++
		}
	}
	if err := e.store.CreateInstances(ctx, rows); err != nil {
		for range claimed {
			<-e.slots
		}
		return nil, fmt.Errorf("workflow: %w", err)
	}
	out := make([]*Instance, len(rows))
	for i, in := range rows {
		out[i] = &Instance{ID: in.ID, e: e}
		if i < claimed {
			e.launch(in, true)
		}
	}
	if claimed < len(rows) {
		e.sched.add(now)
	}
	return out, nil
}

// newRow validates o and returns the instance row, started by the agent
// origin (zero for none); c is nil for a class of another service, whose
// params cannot be checked here.
func (e *Engine) newRow(c *class, o CreateOptions, origin store.AgentKey, now time.Time) (*store.Instance, error) {
	id := o.ID
	if id == "" {
		id = NewInstanceID()
	} else if !idPattern.MatchString(id) {
		return nil, invalid(ErrInvalidID, "id", id, "must match %s", idPattern)
	}
	params, err := json.Marshal(o.Params)
	if err != nil {
		return nil, &ValidationError{Field: "params", Value: fmt.Sprintf("of type %T", o.Params), Rule: err.Error(), Err: ErrNotJSON}
	}
	if len(params) > e.limits.MaxParamsBytes {
		return nil, invalid(ErrTooLarge, "params", "", "are %d bytes; the limit is %d bytes", len(params), e.limits.MaxParamsBytes)
	}
	in := &store.Instance{
		ID: id, Service: e.service, Params: params, Origin: origin,
		Status: store.StatusQueued, CreatedAt: now, WakeAt: now,
	}
	if c != nil {
		if err := c.checkParams(params); err != nil {
			return nil, err
		}
		in.Workflow = c.name
	}
	return in, nil
}

// Get returns a handle on an existing instance, or an error matching ErrNotFound.
func (e *Engine) Get(ctx context.Context, id string) (*Instance, error) {
	if _, err := e.store.GetInstance(ctx, id); err != nil {
		return nil, fmt.Errorf("workflow: %w", err)
	}
	return &Instance{ID: id, e: e}, nil
}

// ErrorInfo is the error an instance ended with.
type ErrorInfo struct {
	Name    string
	Message string
}

// InstanceStatus is what Instance.Status reports.
type InstanceStatus struct {
	Status Status
	Error  *ErrorInfo      // set when errored
	Output json.RawMessage // set when complete
}

// Instance is a handle on one workflow instance.
type Instance struct {
	ID string
	e  *Engine
}

// Status returns the instance's current status.
func (i *Instance) Status(ctx context.Context) (InstanceStatus, error) {
	in, err := i.e.store.GetInstance(ctx, i.ID)
	if err != nil {
		return InstanceStatus{Status: StatusUnknown}, fmt.Errorf("workflow: %w", err)
	}
	s := InstanceStatus{Status: statusOf(in.Status), Output: in.Output}
	if in.ErrorName != "" || in.ErrorMessage != "" {
		s.Error = &ErrorInfo{Name: in.ErrorName, Message: in.ErrorMessage}
	}
	return s, nil
}

// Steps returns the instance's step checkpoints in the order Run reached them.
func (i *Instance) Steps(ctx context.Context) ([]StepInfo, error) {
	steps, err := i.e.store.ListSteps(ctx, i.ID)
	if err != nil {
		return nil, fmt.Errorf("workflow: %w", err)
	}
	out := make([]StepInfo, len(steps))
	for j, st := range steps {
		out[j] = stepInfo(st)
	}
	return out, nil
}

// Pause pauses the instance: at once if it is not executing, otherwise
// after its current step (waitingForPause until then). Pausing a finished
// instance fails with ErrFinished.
func (i *Instance) Pause(ctx context.Context) error {
	if _, err := i.e.store.Pause(ctx, i.ID, i.e.clock.Now()); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	return nil
}

// Resume resumes a paused instance; its pending sleep, wait and retry
// timers are shifted by the time it was paused.
func (i *Instance) Resume(ctx context.Context) error {
	if err := i.e.store.Resume(ctx, i.ID, i.e.clock.Now()); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	i.e.sched.add(i.e.clock.Now())
	return nil
}

// Terminate ends the instance as terminated. Terminating a finished
// instance fails with ErrFinished.
func (i *Instance) Terminate(ctx context.Context) error {
	if err := i.e.store.Terminate(ctx, i.ID, i.e.clock.Now()); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	i.e.waits.notify(i.ID)
	return nil
}

// Restart discards the instance's progress and runs it again from the start.
func (i *Instance) Restart(ctx context.Context) error {
	if err := i.e.store.Restart(ctx, i.ID, i.e.clock.Now()); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	i.e.sched.add(i.e.clock.Now())
	return nil
}

// SendEvent delivers an event to the instance; a WaitForEvent of that type
// receives it, now or when it next waits. Sending to a finished instance
// fails with ErrFinished.
func (i *Instance) SendEvent(ctx context.Context, typ string, payload any) error {
	if err := checkEventType(typ); err != nil {
		return err
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return &ValidationError{Field: "event payload", Value: fmt.Sprintf("of type %T", payload), Rule: err.Error(), Err: ErrNotJSON}
	}
	if len(b) > i.e.limits.MaxEventBytes {
		return invalid(ErrTooLarge, "event payload", "", "is %d bytes; the limit is %d bytes", len(b), i.e.limits.MaxEventBytes)
	}
	now := i.e.clock.Now()
	if err := i.e.store.SendEvent(ctx, store.Event{InstanceID: i.ID, Type: typ, Payload: b, CreatedAt: now}); err != nil {
		return fmt.Errorf("workflow: %w", err)
	}
	i.e.sched.add(now)
	return nil
}

// nodeLoop heartbeats this node and removes dead ones.
func (e *Engine) nodeLoop(ctx context.Context) {
	// A timer re-armed each round, not a ticker: a virtual clock's ticker
	// fires once per period inside a single Advance, so advancing a year
	// would spin through millions of ticks.
	t := e.clock.NewTimer(e.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-e.renew: // Reset below replaces the pending tick; a stale one only means an early heartbeat
		}
		t.Reset(e.opts.Lease / 3)
		now := e.clock.Now()
		n := e.node
		n.ExpiresAt = now.Add(e.opts.Lease)
		if err := e.store.Heartbeat(ctx, n); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("heartbeat failed", "err", err)
			}
		} else {
			lapsed := !e.leaseValid(now)
			e.leaseUntil.Store(n.ExpiresAt.UnixNano())
			if lapsed {
				e.log.Warn("lease renewed after it had lapsed; claiming again")
				e.sched.add(now)
			}
		}
		e.reapNodes(ctx)
	}
}

// reapNodes removes nodes whose lease ran out, and nodes on this host
// whose process is gone (so a restarted process recovers its own work at
// once), releasing their instances to be claimed.
func (e *Engine) reapNodes(ctx context.Context) {
	nodes, err := e.store.ListNodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("list nodes failed", "err", err)
		}
		return
	}
	now := e.clock.Now()
	for _, n := range nodes {
		if n.ID == e.nodeID {
			continue
		}
		expired := n.ExpiresAt.Before(now)
		gone := processGone(n, e.node)
		if !expired && !gone {
			continue
		}
		_ = e.removeDead(ctx, n, now, expired)
	}
	released, err := e.store.ReleaseOrphans(ctx, now)
	if err != nil {
		e.log.Warn("release orphaned instances failed", "err", err)
	} else if released > 0 {
		e.log.Info("released instances claimed by removed nodes", "released", released)
		e.sched.add(now)
	}
}

// removeDead removes the dead node n, releasing its instances to be claimed.
func (e *Engine) removeDead(ctx context.Context, n store.Node, now time.Time, expired bool) error {
	released, err := e.store.RemoveNode(ctx, n.ID, now)
	if err != nil {
		e.log.Warn("remove dead node failed", "dead_node", n.ID, "err", err)
		return err
	}
	e.log.Info("took over a dead node's instances", "dead_node", n.ID, "released", released, "expired", expired)
	if released > 0 {
		e.sched.add(now)
	}
	return nil
}

// processGone reports whether node n ran on self's host in a process that
// no longer exists: its pid is free, or now belongs to another process.
func processGone(n, self store.Node) bool {
	if n.Host != self.Host {
		return false
	}
	id := processIdentity(n.PID)
	if id == "" {
		return true
	}
	if n.Process == "" { // a row from before identities were kept
		return n.PID == self.PID && n.ID != self.ID
	}
	return id != n.Process
}

// retentionLoop removes finished instances older than the retention.
func (e *Engine) retentionLoop(ctx context.Context) {
	const batch = 1000
	every := max(min(e.opts.Retention/10, time.Hour), time.Second)
	for {
		for {
			n, err := e.store.DeleteFinished(ctx, e.clock.Now().Add(-e.opts.Retention), batch)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("retention sweep failed", "err", err)
				}
				break
			}
			if n > 0 {
				e.log.Info("removed finished instances past retention", "removed", n)
			}
			if n < batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(every):
		}
	}
}

// String describes the engine for logs.
func (e *Engine) String() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	names := make([]string, 0, len(e.classes))
	for n := range e.classes {
		names = append(names, n)
	}
	return fmt.Sprintf("engine %s (service %q, classes %s)", e.nodeID, e.service, strings.Join(names, ", "))
}

// registerGauges registers the gauges computed from the store: instances
// by status and the backlog of instances due but not claimed, each queried
// at most every GaugeInterval.
func (e *Engine) registerGauges() error {
	e.gauges = func() {}
	if !e.tel.Metrics() {
		return nil
	}
	unInst, err := e.tel.ObserveInstances(e.opts.GaugeInterval, e.clock.Now, func(ctx context.Context) (map[string]int, error) {
		return telemetry.CountByStatus(ctx, e.shared)
	})
	if err != nil {
		return err
	}
	const backlogCap = 10000
	unBacklog, err := e.tel.ObserveGauge(telemetry.MetricBacklog, "{instance}",
		"Instances of this engine's service due now but not claimed (counted up to 10000).", e.opts.GaugeInterval, e.clock.Now,
		func(ctx context.Context) ([]telemetry.Gauge, error) {
			due, err := e.store.NextWakeTimes(ctx, e.service, e.clock.Now(), backlogCap)
			if err != nil {
				return nil, err
			}
			return []telemetry.Gauge{{Attrs: []attribute.KeyValue{attribute.String("agentflow.service", e.service)}, Value: int64(len(due))}}, nil
		})
	if err != nil {
		unInst()
		return err
	}
	e.gauges = func() { unInst(); unBacklog() }
	return nil
}
