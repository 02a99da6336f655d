package sqlstore

import (
	"agentflow/store"
)

// Wakes (store.Wake) tell the processes sharing the store that a write made
// work due now that another process may be the one to do: an instance
// queued unowned for a service, a schedule due at once for an agent class
// (a workflow's notice), a Think outbox message. A write publishes them
// after it committed, never inside its transaction; writes whose work the
// writing process does itself (claims, checkpoints, suspensions, a
// schedule's next run) publish none — except a wait's suspension that finds
// its event already buffered and makes the instance due at once, which its
// engine does not know of (it scheduled the wait's deadline). See
// internal/wakebus.

// wake publishes ws, if the store has wakes.
func (s *Store) wake(ws ...store.Wake) {
	if s.wakes != nil {
		s.wakes.Publish(ws...)
	}
}

// wakeQueued publishes the services of the instances inserted unowned and
// due at their creation.
func (s *Store) wakeQueued(insts ...*store.Instance) {
	if s.wakes == nil {
		return
	}
	var ws []store.Wake
	for _, in := range insts {
		if in.Owner == "" && !in.WakeAt.IsZero() && !in.WakeAt.After(in.CreatedAt) {
			w := store.Wake{Kind: store.WakeInstances, Key: in.Service}
			if len(ws) == 0 || ws[len(ws)-1] != w {
				ws = append(ws, w)
			}
		}
	}
	s.wake(ws...)
}
