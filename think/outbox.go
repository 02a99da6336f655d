package think

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/internal/wakeq"
	"agentflow/store"
)

// The outbox tells a waiting prompt step that its submission ended. The
// store writes each message in the same transaction as the submission's
// end; this loop delivers it as a workflow event until delivery succeeds,
// with backoff up to OutboxMaxBackoff, clears its payload once delivered,
// and prunes delivered messages after OutboxRetention.

// Outbox delivery settings.
const (
	OutboxMaxBackoff = 5 * time.Minute
	OutboxRetention  = 7 * 24 * time.Hour
	outboxBatch      = 64
)

// outbox delivers the runtime's outbox messages.
type outbox struct {
	rt *agent.Runtime
	q  *wakeq.Queue
}

// outboxOf returns the runtime's outbox, made (and added as the runtime's
// loop "think-outbox") by the first Think class registered on it.
func outboxOf(rt *agent.Runtime) *outbox {
	return rt.Extension("think-outbox", func() any { return newOutbox(rt) }).(*outbox)
}

func newOutbox(rt *agent.Runtime) *outbox {
	o := &outbox{rt: rt}
	st := rt.Store()
	o.q = wakeq.New(wakeq.Options{
		Clock: rt.Clock(),
		Load: func(ctx context.Context, until time.Time) ([]time.Time, error) {
			return st.NextOutboxTimes(ctx, until, 10_000)
		},
		Claim: o.claim,
	})
	rt.AddLoop("think-outbox", o.run)
	return o
}

func (o *outbox) run(ctx context.Context) {
	done := make(chan struct{})
	go func() { o.prune(ctx); close(done) }()
	o.q.Poke()
	o.q.Run(ctx)
	<-done
}

// claim claims due messages and delivers each.
func (o *outbox) claim(ctx context.Context) {
	rt := o.rt
	for ctx.Err() == nil {
		msgs, err := rt.Store().ClaimOutbox(ctx, rt.NodeID(), rt.Clock().Now(), outboxBatch)
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

// deliver sends one message as a workflow event. An instance that is gone
// or finished has nothing left to tell: the message counts as delivered.
func (o *outbox) deliver(ctx context.Context, m store.OutboxMessage) {
	rt := o.rt
	st := rt.Store()
	inst, err := rt.Engine().Get(ctx, m.InstanceID)
	if err == nil {
		err = inst.SendEvent(ctx, m.EventType, json.RawMessage(m.Payload))
	}
	now := rt.Clock().Now()
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrFinished) {
		_ = st.DeliveredOutbox(ctx, m.ID, rt.NodeID(), now)
		return
	}
	if ctx.Err() != nil {
		return // stopping: the claim frees when the node goes
	}
	d := min(time.Second<<min(m.Attempts, 16), OutboxMaxBackoff)
	next := now.Add(d/2 + rand.N(d/2+1))
	if rerr := st.RetryOutbox(ctx, m.ID, rt.NodeID(), next, err.Error()); rerr == nil {
		o.q.Add(next)
	}
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
			n, err := rt.Store().PruneOutbox(ctx, rt.Clock().Now().Add(-OutboxRetention), 1000)
			if err != nil || n < 1000 {
				break
			}
		}
		t.Reset(time.Hour)
	}
}
