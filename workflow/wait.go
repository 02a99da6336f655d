package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrTerminated is what Result returns for an instance that was terminated.
var ErrTerminated = errors.New("workflow instance was terminated")

// InstanceError is what Result returns for an instance that ended errored:
// the error's name and message as the engine stored them.
type InstanceError struct {
	InstanceID string
	Name       string
	Message    string
}

func (e *InstanceError) Error() string {
	return fmt.Sprintf("workflow instance %s errored: %s: %s", e.InstanceID, e.Name, e.Message)
}

// ErrorName is the name of the error the instance ended with.
func (e *InstanceError) ErrorName() string { return e.Name }

// Wait blocks until the instance finishes (complete, errored or terminated)
// or ctx ends, and returns its final status. An instance finishing on this
// engine wakes Wait at once; one finishing elsewhere (another engine or
// process on the store) is seen at the next look at the store, every
// Options.PollInterval of the engine.
func (i *Instance) Wait(ctx context.Context) (InstanceStatus, error) {
	for {
		woken, unwatch := i.e.waits.watch(i.ID)
		s, err := i.Status(ctx)
		if err != nil || s.Status.Finished() {
			unwatch()
			return s, err
		}
		t := i.e.clock.NewTimer(i.e.opts.PollInterval)
		select {
		case <-woken:
		case <-t.Chan():
		case <-ctx.Done():
			t.Stop()
			unwatch()
			return s, fmt.Errorf("workflow: wait for instance %s: %w", i.ID, ctx.Err())
		}
		t.Stop()
		unwatch()
	}
}

// Result waits for the instance to finish and decodes its output into O.
// An instance that ended errored returns an *InstanceError, a terminated
// one ErrTerminated.
func Result[O any](ctx context.Context, i *Instance) (O, error) {
	var out O
	s, err := i.Wait(ctx)
	if err != nil {
		return out, err
	}
	switch s.Status {
	case StatusErrored:
		ie := &InstanceError{InstanceID: i.ID}
		if s.Error != nil {
			ie.Name, ie.Message = s.Error.Name, s.Error.Message
		}
		return out, ie
	case StatusTerminated:
		return out, fmt.Errorf("workflow: instance %s: %w", i.ID, ErrTerminated)
	}
	if err := json.Unmarshal(s.Output, &out); err != nil {
		return out, fmt.Errorf("workflow: decode output of instance %s into %T: %w", i.ID, out, err)
	}
	return out, nil
}

// waiters wakes the Waits of instances that finish on this engine. With no
// Wait in progress, notify costs one atomic load.
type waiters struct {
	n  atomic.Int64
	mu sync.Mutex
	by map[string]map[chan struct{}]struct{}
}

// watch registers interest in id; woken is closed when it finishes here.
// unwatch must be called once the caller stops waiting.
func (w *waiters) watch(id string) (woken chan struct{}, unwatch func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.by == nil {
		w.by = map[string]map[chan struct{}]struct{}{}
	}
	set := w.by[id]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		w.by[id] = set
	}
	set[ch] = struct{}{}
	w.n.Add(1)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if set, ok := w.by[id]; ok {
			if _, ok := set[ch]; ok {
				delete(set, ch)
				w.n.Add(-1)
				if len(set) == 0 {
					delete(w.by, id)
				}
			}
		}
	}
}

// notify wakes every Wait on id.
func (w *waiters) notify(id string) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.by[id] {
		close(ch)
		delete(w.by[id], ch)
		w.n.Add(-1)
	}
	delete(w.by, id)
}
