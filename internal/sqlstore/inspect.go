package sqlstore

import (
	"context"
	"errors"

	"agentflow/store"
)

// The operators' queries (store.InspectStore).

var errNotYet = errors.New("sqlstore: not implemented yet")

// ListInstances implements store.InspectStore.
func (s *Store) ListInstances(ctx context.Context, f store.InstanceFilter) ([]store.Instance, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return nil, errNotYet
}

// CountInstances implements store.InspectStore.
func (s *Store) CountInstances(ctx context.Context, f store.InstanceFilter) (map[store.Status]int, error) {
	if err := f.ValidateCount(); err != nil {
		return nil, err
	}
	return nil, errNotYet
}

// ListStepAttempts implements store.InspectStore.
func (s *Store) ListStepAttempts(ctx context.Context, instanceID string) ([]store.StepAttempt, error) {
	return nil, errNotYet
}

// ListAgents implements store.InspectStore.
func (s *Store) ListAgents(ctx context.Context, f store.AgentFilter) ([]store.AgentSummary, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return nil, errNotYet
}

// ListOutboxes implements store.InspectStore.
func (s *Store) ListOutboxes(ctx context.Context, f store.OutboxFilter) ([]store.OutboxMessage, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return nil, errNotYet
}
