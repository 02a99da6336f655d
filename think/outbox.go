package think

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"

	"agentflow/agent"
	"agentflow/internal/engineseam"
	"agentflow/internal/telemetry"
	"agentflow/internal/wakeq"
	"agentflow/store"
	"agentflow/workflow"
)

// The outbox tells a waiting prompt step that its submission ended. The
// store writes each message in the same transaction as the submission's
// end. A runner's end of a turn delivers it in that transaction when it
// can (Agent.finish, store FinishSubmissionAndDeliver); this loop
// delivers the others as workflow events, retrying a transient
// failure with backoff up to OutboxMaxBackoff, clears its payload once
// delivered, and prunes delivered messages after OutboxRetention.
//
// A failure that would recur on every attempt is not retried. When the
// engine refuses the event itself (over the workflow event size limit,
// say), a small failure notice of the same type goes instead, which the
// prompt's wait turns into a *DeliveryError at once; when the instance is
// gone or finished, nobody waits. Either way the message is given up on
// (store FailedOutbox, which records why) and the failure logged.

// Outbox delivery settings.
const (
	OutboxMaxBackoff = 5 * time.Minute
	OutboxRetention  = 7 * 24 * time.Hour
	outboxBatch      = 64
)

// outbox delivers the runtime's outbox messages.
type outbox struct {
	rt  *agent.Runtime
	st  store.Store
	log *slog.Logger
	q   *wakeq.Queue
	// maxEvent is the engine's event payload limit: a submission's end
	// delivers its outcome itself up to it (Agent.finish).
	maxEvent int
}

// outboxOf returns the runtime's outbox, made (and added as the runtime's
// loop "think-outbox") by the first Think class registered on it.
func outboxOf(rt *agent.Runtime) *outbox {
	return host(rt).Extension("think-outbox", func() any { return newOutbox(rt) }).(*outbox)
}

func newOutbox(rt *agent.Runtime) *outbox {
	h := host(rt)
	st := h.Store()
	o := &outbox{rt: rt, st: st, log: h.Logger(), maxEvent: rt.Engine().Seam(engineseam.Key{}).MaxEventBytes()}
	o.q = wakeq.New(wakeq.Options{
		Clock:        rt.Clock(),
		PollInterval: h.PollInterval(),
		Load: func(ctx context.Context, until time.Time) ([]time.Time, error) {
			return st.NextOutboxTimes(ctx, until, 10_000)
		},
		Claim: o.claim,
	})
	h.AddLoop("think-outbox", o.run)
	return o
}

func (o *outbox) run(ctx context.Context) {
	rt := o.rt
	unreg, err := host(rt).Telemetry().ObserveGauge(telemetry.MetricOutboxBacklog, "{message}",
		"Think outbox messages due now and not delivered (counted up to 10000).", 15*time.Second, rt.Clock().Now,
		func(ctx context.Context) ([]telemetry.Gauge, error) {
			due, err := o.st.NextOutboxTimes(ctx, rt.Clock().Now(), 10_000)
			return []telemetry.Gauge{{Value: int64(len(due))}}, err
		})
	if err != nil {
		o.log.Warn("registering the outbox backlog gauge failed", "err", err)
	} else {
		defer unreg()
	}
	done := make(chan struct{})
	go func() { o.prune(ctx); close(done) }()
	// A message written by another process (its agent's runner) is
	// claimed when the store signals it, without waiting for the poll.
	if w, ok := o.st.(store.Waker); ok {
		cancel := w.Subscribe(func(wk store.Wake) {
			if wk.Kind == store.WakeOutbox || wk.Kind == store.WakeAll {
				o.q.Poke()
			}
		})
		defer cancel()
	}
	o.q.Poke()
	o.q.Run(ctx)
	<-done
}

// claim claims due messages and delivers each.
func (o *outbox) claim(ctx context.Context) {
	rt := o.rt
	for ctx.Err() == nil {
		msgs, err := o.st.ClaimOutbox(ctx, rt.NodeID(), rt.Clock().Now(), outboxBatch)
		if err != nil {
			return
		}
		// Each delivery is two commits (the event, then the mark): deliver
		// a claimed batch concurrently so that they group-commit.
		var wg sync.WaitGroup
		for _, m := range msgs {
			wg.Go(func() { o.deliver(ctx, m) })
		}
		wg.Wait()
		if len(msgs) < outboxBatch {
			return
		}
	}
}

// deliver sends one message as a workflow event, or gives it up.
func (o *outbox) deliver(ctx context.Context, m store.OutboxMessage) {
	rt := o.rt
	tel := host(rt).Telemetry()
	ctx, span := tel.StartDelivery(ctx, m.InstanceID, m.EventType)
	outcome, err := o.attempt(ctx, m)
	if outcome != "" {
		tel.EndDelivery(ctx, span, outcome, err)
	} else if span != nil {
		span.End()
	}
}

// attempt sends one message as a workflow event, or gives it up, and
// returns the outcome (telemetry.Outcome*, "" when stopping) and the
// delivery's error.
func (o *outbox) attempt(ctx context.Context, m store.OutboxMessage) (string, error) {
	rt := o.rt
	log := o.log.With("outbox", m.ID, "submission", m.SubmissionID, "agent", m.AgentKey, "instance", m.InstanceID)
	err := o.send(ctx, m, json.RawMessage(m.Payload))
	if err == nil {
		_ = o.st.DeliveredOutbox(ctx, m.ID, rt.NodeID(), rt.Clock().Now())
		return telemetry.OutcomeSucceeded, nil
	}
	if ctx.Err() != nil {
		return "", err // stopping: the claim frees when the node goes
	}
	reason := err.Error()
	switch {
	case refused(err):
		nerr := o.send(ctx, m, failureNotice(m, reason))
		switch {
		case nerr == nil:
			log.Error("a prompt's outcome cannot be delivered to its workflow; sent a failure notice instead", "err", err)
		case ctx.Err() != nil:
			return "", err
		case refused(nerr) || gone(nerr):
			reason += "; its failure notice cannot be delivered either: " + nerr.Error()
			log.Error("a prompt's outcome cannot be delivered to its workflow, nor a failure notice", "err", err, "notice_err", nerr)
		default:
			o.retry(ctx, m, nerr)
			return telemetry.OutcomeRetrying, nerr
		}
	case gone(err):
		log.Warn("a prompt's outcome has nobody to tell: its workflow instance is gone or finished", "err", err)
	default:
		o.retry(ctx, m, err)
		return telemetry.OutcomeRetrying, err
	}
	if ferr := o.st.FailedOutbox(ctx, m.ID, rt.NodeID(), rt.Clock().Now(), reason); ferr != nil && ctx.Err() == nil {
		log.Warn("giving up an outbox message failed", "err", ferr)
	}
	return telemetry.OutcomeFailed, err
}

// send sends payload to the message's instance as an event of its type.
func (o *outbox) send(ctx context.Context, m store.OutboxMessage, payload any) error {
	inst, err := o.rt.Engine().Get(ctx, m.InstanceID)
	if err != nil {
		return err
	}
	return inst.SendEvent(ctx, m.EventType, payload)
}

// retry gives the message up for now and tries again after a backoff.
func (o *outbox) retry(ctx context.Context, m store.OutboxMessage, err error) {
	rt := o.rt
	d := min(time.Second<<min(m.Attempts, 16), OutboxMaxBackoff)
	next := rt.Clock().Now().Add(d/2 + rand.N(d/2+1))
	if rerr := o.st.RetryOutbox(ctx, m.ID, rt.NodeID(), next, err.Error()); rerr == nil {
		o.q.Add(next)
	}
}

// refused reports whether the engine refused the event itself (its type,
// its payload, or the payload's size): sending it again fails the same way.
func refused(err error) bool {
	var ve *workflow.ValidationError
	return errors.As(err, &ve)
}

// gone reports whether the instance is gone or finished: nothing waits.
func gone(err error) bool {
	return errors.Is(err, workflow.ErrNotFound) || errors.Is(err, workflow.ErrFinished)
}

// maxNoticeText bounds each text a failure notice carries.
const maxNoticeText = 1024

// failureNotice is the event sent instead of a message the instance
// refused: the submission and how it ended, without its output, and why
// the outcome could not be delivered.
func failureNotice(m store.OutboxMessage, reason string) promptEvent {
	var ended promptEvent
	_ = json.Unmarshal(m.Payload, &ended) // the status, if the payload says it
	return promptEvent{SubmissionID: m.SubmissionID, Status: ended.Status,
		Error: clip(ended.Error, maxNoticeText), DeliveryError: clip(reason, maxNoticeText)}
}

// clip shortens s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// prune deletes delivered messages older than the retention, hourly.
func (o *outbox) prune(ctx context.Context) {
	rt := o.rt
	t := rt.Clock().NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		for {
			n, err := o.st.PruneOutbox(ctx, rt.Clock().Now().Add(-OutboxRetention), 1000)
			if err != nil || n < 1000 {
				break
			}
		}
		t.Reset(time.Hour)
	}
}
