package agent

import (
	"context"
	"slices"

	"agentflow/store"
)

// wakeLoop subscribes, at once, to the store's wakes (store.Waker) and
// returns the loop that ends the subscription when the runtime stops.
// While subscribed, the schedule queue claims at once when the store
// signals that a schedule of one of this runtime's classes is due: a
// workflow's notice sent from another process, the finish notice of a
// workflow another service ran. Without such a store, or when a signal is
// lost, the poll every PollInterval finds them.
func (rt *Runtime) wakeLoop() func(context.Context) {
	w, ok := rt.store.(store.Waker)
	if !ok {
		return func(context.Context) {}
	}
	cancel := w.Subscribe(func(wk store.Wake) {
		if wk.Kind == store.WakeAll || wk.Kind == store.WakeSchedules && slices.Contains(rt.classNames(), wk.Key) {
			rt.sched.Poke()
		}
	})
	return func(ctx context.Context) {
		defer cancel()
		<-ctx.Done()
	}
}
