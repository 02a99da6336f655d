package agent

import (
	"context"
	"sync"
)

// acks are the acknowledgements of an agent's notices being written after
// the agent's lock was released (see Runtime.deliver). A notice's hook runs
// under the lock; the write that records what the hook was told (the
// tracking row and the notice's deletion, AckWorkflowNotice) does not, so
// that the agent's next call does not wait a commit for it. Whatever reads
// or changes a workflow's tracking row on the agent's behalf waits first
// for that workflow's acknowledgement, and so sees the row as the hook left
// it, as when the write was made under the lock.
type acks struct {
	mu      sync.Mutex
	pending map[string]chan struct{} // workflow id → closed when its write ended
}

// begin registers the acknowledgement of workflow id and returns the
// function that ends it. The caller holds the agent's lock.
func (a *acks) begin(id string) func() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = make(map[string]chan struct{})
	}
	ch := make(chan struct{})
	a.pending[id] = ch
	return func() {
		a.mu.Lock()
		if a.pending[id] == ch {
			delete(a.pending, id)
		}
		a.mu.Unlock()
		close(ch)
	}
}

// wait waits for the acknowledgement of workflow id being written, if
// there is one.
func (a *acks) wait(ctx context.Context, id string) error {
	a.mu.Lock()
	ch := a.pending[id]
	a.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitAll waits for every acknowledgement being written.
func (a *acks) waitAll(ctx context.Context) error {
	a.mu.Lock()
	chs := make([]chan struct{}, 0, len(a.pending))
	for _, ch := range a.pending {
		chs = append(chs, ch)
	}
	a.mu.Unlock()
	for _, ch := range chs {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
