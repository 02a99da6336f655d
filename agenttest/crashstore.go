package agenttest

// Code below the hand-written part was generated from store.Store's method
// set: each method fails once the incarnation has crashed, and otherwise
// calls the store. TestCrashStoreCoversStore checks that none is missing.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/internal/agentseam"
	"agentflow/store"
)

// ErrCrashed is what every store call of a crashed engine and runtime
// returns, and what the work stopped at a crash point is told.
var ErrCrashed = errors.New("agenttest: this runtime and engine crashed (simulated kill -9): nothing they do reaches the store any more")

// crashStore is one incarnation's view of the store: the process's
// connection to it. After a crash every call fails, so that nothing the
// crashed engine, runtime or their goroutines still do is durable, as if
// the process had been killed. It also counts the outbox messages being
// delivered, and tells the incarnation's engine that crashed nodes' processes
// are gone, as the operating system would after kill -9. It is also where
// the incarnation's runtime gets its probe (agentseam.ProbeSource), which is
// how the Env sees that runtime's background work.
type crashStore struct {
	store.Store // embedded for methods added after this file; every method is overridden below
	base        store.Store
	env         *Env

	dead  atomic.Bool
	probe atomic.Pointer[agentseam.Probe] // the incarnation's runtime's; nil until it is created

	mu       sync.Mutex
	claiming int            // ClaimOutbox calls under way
	outbox   map[int64]bool // messages claimed and not yet delivered, failed or retried
}

func newCrashStore(base store.Store, env *Env) *crashStore {
	return &crashStore{Store: base, base: base, env: env, outbox: map[int64]bool{}}
}

// AgentProbe implements agentseam.ProbeSource: agent.NewRuntime calls it
// when the incarnation's runtime is created over this store's engine. Each
// incarnation has one store and one runtime; should a second runtime be
// created over the same engine, it keeps a probe of its own and the Env goes
// on watching the first.
func (cs *crashStore) AgentProbe(classes func() []string) *agentseam.Probe {
	p := agentseam.NewProbe(classes)
	if !cs.probe.CompareAndSwap(nil, p) {
		return nil
	}
	return p
}

func (cs *crashStore) check() error {
	if cs.dead.Load() {
		return ErrCrashed
	}
	return nil
}

// delivering returns how many outbox messages are claimed or being claimed
// by this incarnation and not settled yet.
func (cs *crashStore) delivering() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.claiming + len(cs.outbox)
}

func (cs *crashStore) settled(id int64) {
	cs.mu.Lock()
	delete(cs.outbox, id)
	cs.mu.Unlock()
}

// ClaimOutbox counts the call from before it claims, so that a message is
// never seen neither due nor being delivered.
func (cs *crashStore) ClaimOutbox(ctx context.Context, owner string, now time.Time, limit int) ([]store.OutboxMessage, error) {
	if err := cs.check(); err != nil {
		return nil, err
	}
	cs.mu.Lock()
	cs.claiming++
	cs.mu.Unlock()
	msgs, err := cs.base.ClaimOutbox(ctx, owner, now, limit)
	cs.mu.Lock()
	cs.claiming--
	for _, m := range msgs {
		cs.outbox[m.ID] = true
	}
	cs.mu.Unlock()
	return msgs, err
}

func (cs *crashStore) DeliveredOutbox(ctx context.Context, id int64, owner string, now time.Time) error {
	if err := cs.check(); err != nil {
		return err
	}
	defer cs.settled(id)
	return cs.base.DeliveredOutbox(ctx, id, owner, now)
}

func (cs *crashStore) FailedOutbox(ctx context.Context, id int64, owner string, now time.Time, reason string) error {
	if err := cs.check(); err != nil {
		return err
	}
	defer cs.settled(id)
	return cs.base.FailedOutbox(ctx, id, owner, now, reason)
}

func (cs *crashStore) RetryOutbox(ctx context.Context, id int64, owner string, next time.Time, lastError string) error {
	if err := cs.check(); err != nil {
		return err
	}
	defer cs.settled(id)
	return cs.base.RetryOutbox(ctx, id, owner, next, lastError)
}

// ListNodes gives the nodes of crashed incarnations a process identity no
// live process has: the engine's reaper then finds them dead on this host
// and removes them at once, as after a real kill -9 and restart.
func (cs *crashStore) ListNodes(ctx context.Context) ([]store.Node, error) {
	if err := cs.check(); err != nil {
		return nil, err
	}
	nodes, err := cs.base.ListNodes(ctx)
	for i := range nodes {
		if cs.env.isCrashed(nodes[i].ID) {
			nodes[i].Process = "agenttest:crashed"
		}
	}
	return nodes, err
}

// Close does not close the store, which the Env owns.
func (cs *crashStore) Close() error { return nil }

// Generated.

func (cs *crashStore) AbortFiber(ctx context.Context, key store.AgentKey, id string, now time.Time) (r0 store.FiberStatus, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.AbortFiber(ctx, key, id, now)
}

func (cs *crashStore) ActivateAgent(ctx context.Context, key store.AgentKey, owner string, now time.Time) (r0 *store.Agent, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ActivateAgent(ctx, key, owner, now)
}

func (cs *crashStore) AdvertiseNode(ctx context.Context, id string, address string, classes []string) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.AdvertiseNode(ctx, id, address, classes)
}

func (cs *crashStore) AppendConversation(ctx context.Context, key store.AgentKey, id string, owner string, msgs [][]byte, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.AppendConversation(ctx, key, id, owner, msgs, now)
}

func (cs *crashStore) ApplySubmission(ctx context.Context, key store.AgentKey, id string, owner string, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ApplySubmission(ctx, key, id, owner, now)
}

func (cs *crashStore) CancelSubmission(ctx context.Context, key store.AgentKey, id string, now time.Time) (r0 store.SubmissionStatus, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CancelSubmission(ctx, key, id, now)
}

func (cs *crashStore) ClaimDue(ctx context.Context, owner string, service string, now time.Time, limit int) (r0 []*store.Instance, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ClaimDue(ctx, owner, service, now, limit)
}

func (cs *crashStore) ClaimDueSchedules(ctx context.Context, owner string, classes []string, now time.Time, limit int) (r0 []*store.Schedule, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ClaimDueSchedules(ctx, owner, classes, now, limit)
}

func (cs *crashStore) ClaimFiber(ctx context.Context, key store.AgentKey, id string, owner string, now time.Time) (r0 *store.Fiber, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ClaimFiber(ctx, key, id, owner, now)
}

func (cs *crashStore) ClearConversation(ctx context.Context, key store.AgentKey) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ClearConversation(ctx, key)
}

func (cs *crashStore) CreateFiber(ctx context.Context, f *store.Fiber) (r0 *store.Fiber, r1 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CreateFiber(ctx, f)
}

func (cs *crashStore) CreateInstances(ctx context.Context, insts []*store.Instance) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CreateInstances(ctx, insts)
}

func (cs *crashStore) CreateSchedule(ctx context.Context, s *store.Schedule) (r0 *store.Schedule, r1 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CreateSchedule(ctx, s)
}

func (cs *crashStore) CreateSubmission(ctx context.Context, s *store.Submission) (r0 *store.Submission, r1 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CreateSubmission(ctx, s)
}

func (cs *crashStore) CreateTrackedInstance(ctx context.Context, inst *store.Instance, wf *store.AgentWorkflow) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CreateTrackedInstance(ctx, inst, wf)
}

func (cs *crashStore) DeleteAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string) (r0 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.DeleteAgentWorkflow(ctx, key, workflowID)
}

func (cs *crashStore) DeleteFiber(ctx context.Context, key store.AgentKey, id string) (r0 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.DeleteFiber(ctx, key, id)
}

func (cs *crashStore) DeleteFinished(ctx context.Context, before time.Time, limit int) (r0 int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.DeleteFinished(ctx, before, limit)
}

func (cs *crashStore) DeleteSchedule(ctx context.Context, key store.AgentKey, id string) (r0 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.DeleteSchedule(ctx, key, id)
}

func (cs *crashStore) DeleteSubmissions(ctx context.Context, key store.AgentKey, ids []string) (r0 int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.DeleteSubmissions(ctx, key, ids)
}

func (cs *crashStore) Finish(ctx context.Context, l store.Lease, o store.Outcome, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Finish(ctx, l, o, now)
}

func (cs *crashStore) FinishPendingSubmission(ctx context.Context, key store.AgentKey, id string, status store.SubmissionStatus, errMsg string, now time.Time) (r0 store.SubmissionStatus, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.FinishPendingSubmission(ctx, key, id, status, errMsg, now)
}

func (cs *crashStore) FinishSubmission(ctx context.Context, key store.AgentKey, id string, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.FinishSubmission(ctx, key, id, owner, status, errMsg, output, usage, now)
}

func (cs *crashStore) FinishSubmissionAndDeliver(ctx context.Context, key store.AgentKey, id string, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time, d store.Delivery) (delivered bool, claimed *store.Instance, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.FinishSubmissionAndDeliver(ctx, key, id, owner, status, errMsg, output, usage, now, d)
}

func (cs *crashStore) GetAgent(ctx context.Context, key store.AgentKey) (r0 *store.Agent, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetAgent(ctx, key)
}

func (cs *crashStore) GetAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string) (r0 *store.AgentWorkflow, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetAgentWorkflow(ctx, key, workflowID)
}

func (cs *crashStore) GetFiber(ctx context.Context, key store.AgentKey, id string) (r0 *store.Fiber, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetFiber(ctx, key, id)
}

func (cs *crashStore) GetInstance(ctx context.Context, id string) (r0 *store.Instance, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetInstance(ctx, id)
}

func (cs *crashStore) GetOutbox(ctx context.Context, key store.AgentKey, submissionID string) (r0 []store.OutboxMessage, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetOutbox(ctx, key, submissionID)
}

func (cs *crashStore) GetSchedule(ctx context.Context, key store.AgentKey, id string) (r0 *store.Schedule, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetSchedule(ctx, key, id)
}

func (cs *crashStore) GetSubmission(ctx context.Context, key store.AgentKey, id string) (r0 *store.Submission, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetSubmission(ctx, key, id)
}

func (cs *crashStore) Heartbeat(ctx context.Context, n store.Node) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Heartbeat(ctx, n)
}

func (cs *crashStore) InterruptFibers(ctx context.Context, key store.AgentKey, owner string, now time.Time) (r0 []store.Fiber, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.InterruptFibers(ctx, key, owner, now)
}

func (cs *crashStore) ListAgentWorkflows(ctx context.Context, key store.AgentKey, f store.WorkflowFilter) (r0 []store.AgentWorkflow, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListAgentWorkflows(ctx, key, f)
}

func (cs *crashStore) ListConversation(ctx context.Context, key store.AgentKey) (r0 []store.ConversationMessage, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListConversation(ctx, key)
}

func (cs *crashStore) ListConversationFrom(ctx context.Context, key store.AgentKey, seq int64) (r0 []store.ConversationMessage, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListConversationFrom(ctx, key, seq)
}

func (cs *crashStore) ListEvents(ctx context.Context, id string) (r0 []store.Event, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListEvents(ctx, id)
}

func (cs *crashStore) ListFibers(ctx context.Context, key store.AgentKey, f store.FiberFilter) (r0 []store.Fiber, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListFibers(ctx, key, f)
}

func (cs *crashStore) ListSchedules(ctx context.Context, key store.AgentKey, f store.ScheduleFilter) (r0 []store.Schedule, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListSchedules(ctx, key, f)
}

func (cs *crashStore) ListSteps(ctx context.Context, id string) (r0 []store.Step, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListSteps(ctx, id)
}

func (cs *crashStore) ListStepsOf(ctx context.Context, ids []string) (r0 map[string][]store.Step, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListStepsOf(ctx, ids)
}

func (cs *crashStore) ListSubmissions(ctx context.Context, key store.AgentKey, f store.SubmissionFilter) (r0 []store.Submission, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListSubmissions(ctx, key, f)
}

func (cs *crashStore) NextOutboxTimes(ctx context.Context, until time.Time, limit int) (r0 []time.Time, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.NextOutboxTimes(ctx, until, limit)
}

func (cs *crashStore) NextScheduleTimes(ctx context.Context, classes []string, until time.Time, limit int) (r0 []time.Time, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.NextScheduleTimes(ctx, classes, until, limit)
}

func (cs *crashStore) NextWakeTimes(ctx context.Context, service string, until time.Time, limit int) (r0 []time.Time, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.NextWakeTimes(ctx, service, until, limit)
}

func (cs *crashStore) OrphanedFiberAgents(ctx context.Context, classes []string, limit int) (r0 []store.AgentKey, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.OrphanedFiberAgents(ctx, classes, limit)
}

func (cs *crashStore) Pause(ctx context.Context, id string, now time.Time) (r0 store.Status, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Pause(ctx, id, now)
}

func (cs *crashStore) PendingSubmissionAgents(ctx context.Context, classes []string, limit int) (r0 []store.AgentKey, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.PendingSubmissionAgents(ctx, classes, limit)
}

func (cs *crashStore) PruneOutbox(ctx context.Context, before time.Time, limit int) (r0 int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.PruneOutbox(ctx, before, limit)
}

func (cs *crashStore) RecoverSubmissions(ctx context.Context, key store.AgentKey, owner string, errMsg string, now time.Time) (r0 []store.Submission, r1 []store.Submission, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.RecoverSubmissions(ctx, key, owner, errMsg, now)
}

func (cs *crashStore) ReleaseAgent(ctx context.Context, l store.AgentLease, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ReleaseAgent(ctx, l, now)
}

func (cs *crashStore) ReleaseOrphans(ctx context.Context, now time.Time) (r0 int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ReleaseOrphans(ctx, now)
}

func (cs *crashStore) RemoveNode(ctx context.Context, id string, now time.Time) (r0 int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.RemoveNode(ctx, id, now)
}

func (cs *crashStore) RescheduleSchedule(ctx context.Context, id string, owner string, next time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.RescheduleSchedule(ctx, id, owner, next)
}

func (cs *crashStore) Restart(ctx context.Context, id string, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Restart(ctx, id, now)
}

func (cs *crashStore) Resume(ctx context.Context, id string, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Resume(ctx, id, now)
}

func (cs *crashStore) SaveAgentState(ctx context.Context, l store.AgentLease, state []byte, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.SaveAgentState(ctx, l, state, now)
}

func (cs *crashStore) SaveStep(ctx context.Context, l store.Lease, s store.Step, now time.Time) (r0 store.Status, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.SaveStep(ctx, l, s, now)
}

func (cs *crashStore) SendEvent(ctx context.Context, e store.Event) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.SendEvent(ctx, e)
}

func (cs *crashStore) StartSubmission(ctx context.Context, key store.AgentKey, owner string, now time.Time) (r0 *store.Submission, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.StartSubmission(ctx, key, owner, now)
}

func (cs *crashStore) StashFiber(ctx context.Context, key store.AgentKey, id string, owner string, stash []byte, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.StashFiber(ctx, key, id, owner, stash, now)
}

func (cs *crashStore) Suspend(ctx context.Context, l store.Lease, sus store.Suspension, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Suspend(ctx, l, sus, now)
}

func (cs *crashStore) TakeEvent(ctx context.Context, l store.Lease, typ string, s store.Step, now time.Time) (r0 *store.Event, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.TakeEvent(ctx, l, typ, s, now)
}

func (cs *crashStore) Terminate(ctx context.Context, id string, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.Terminate(ctx, id, now)
}

func (cs *crashStore) UpdateAgentWorkflow(ctx context.Context, key store.AgentKey, workflowID string, u store.TrackingUpdate, now time.Time) (r0 *store.AgentWorkflow, r1 bool, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.UpdateAgentWorkflow(ctx, key, workflowID, u, now)
}

func (cs *crashStore) UpdateFiber(ctx context.Context, key store.AgentKey, id string, owner string, status store.FiberStatus, errMsg string, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.UpdateFiber(ctx, key, id, owner, status, errMsg, now)
}

func (cs *crashStore) ListInstances(ctx context.Context, f store.InstanceFilter) (r0 []store.Instance, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListInstances(ctx, f)
}

func (cs *crashStore) CountInstances(ctx context.Context, f store.InstanceFilter) (r0 map[store.Status]int, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.CountInstances(ctx, f)
}

func (cs *crashStore) ListStepAttempts(ctx context.Context, instanceID string) (r0 []store.StepAttempt, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListStepAttempts(ctx, instanceID)
}

func (cs *crashStore) ListAgents(ctx context.Context, f store.AgentFilter) (r0 []store.AgentSummary, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListAgents(ctx, f)
}

func (cs *crashStore) ListOutboxes(ctx context.Context, f store.OutboxFilter) (r0 []store.OutboxMessage, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.ListOutboxes(ctx, f)
}

func (cs *crashStore) GetWorkflowOutcome(ctx context.Context, key store.AgentKey, workflowID string) (r0 *store.WorkflowOutcome, err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.GetWorkflowOutcome(ctx, key, workflowID)
}

func (cs *crashStore) AckWorkflowNotice(ctx context.Context, a store.NoticeAck, now time.Time) (err error) {
	if err = cs.check(); err != nil {
		return
	}
	return cs.base.AckWorkflowNotice(ctx, a, now)
}
