package store

// This file is the optional half of a store that tells the processes
// sharing it that work became due, so that they claim it at once rather
// than at their next poll. It is not part of Store: a store without it
// (a test's wrapper, a store of another kind) is polled, as every store
// still is, and polling alone is always correct. A wake is only a hint:
// one may be lost (a process crashed between its commit and the signal, a
// listener's connection broke), arrive twice, or arrive for work another
// node has claimed already.

// WakeKind says what a Wake is about.
type WakeKind uint8

// Kinds of wake.
const (
	// WakeAll: wakes may have been lost (a listener reconnected); every
	// subscriber should look for due work once.
	WakeAll WakeKind = iota
	// WakeInstances: instances of service Key are due and unowned (created
	// queued, an event woke one, resumed, restarted).
	WakeInstances
	// WakeSchedules: a schedule of agent class Key is due now (a notice
	// from a workflow, a workflow's finish notice, a schedule due at once).
	WakeSchedules
	// WakeOutbox: a Think outbox message is due.
	WakeOutbox
)

// Wake is one thing that became due.
type Wake struct {
	Kind WakeKind
	Key  string // the service for WakeInstances, the agent class for WakeSchedules
}

// Waker is implemented by stores that signal wakes across the processes
// sharing them (store/postgres with LISTEN/NOTIFY, store/sqlite with local
// datagram sockets); users find it with a type assertion.
type Waker interface {
	// Subscribe calls fn with every wake signalled by a write through any
	// handle on the store, this one included, until cancel is called. fn
	// runs on the goroutine of this handle's write that published the wake
	// (after its commit) or on the store's own goroutines, possibly
	// concurrently, and must not block or call the store: it should only
	// note that work is due (wakeq.Queue.Poke).
	Subscribe(fn func(Wake)) (cancel func())
}
