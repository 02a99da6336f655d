// Package engineseam is the seam between the workflow engine and the agent
// runtime that shares it: what the runtime needs of the engine and a user
// of package workflow does not (the whole store, rows to insert in the
// runtime's own transactions, finishes of agents' workflows, the node's
// lease).
//
// workflow.Engine.Seam hands it out. Seam's argument is a Key, which only
// packages of this module can make: other modules can neither call Seam
// nor name what it returns, so none of this is public API.
package engineseam

import (
	"context"
	"encoding/json"

	"agentflow/internal/telemetry"
	"agentflow/store"
)

// Key is the argument of workflow.Engine.Seam. Its zero value is the only
// one; it has a field so that no type outside this package is assignable
// to it.
type Key struct{ _ struct{} }

// Engine is the agent runtime's view of the workflow engine it shares.
type Engine interface {
	// Store returns the whole store the engine was given, which the
	// runtime and the packages built on it run on too.
	Store() store.Store

	// Prepare validates an instance of workflowName for service ("" is
	// the engine's service) and returns its row, queued and due now, for
	// the runtime's RunWorkflow, which inserts it together with its
	// tracking row in one transaction and then, unless Claim claimed the
	// row for this engine, calls Engine.Wake. A class
	// of the engine's service must be registered and params must decode
	// into its params type; a class of another service is not known to
	// the engine, so its params are only checked to be within the size
	// limit. id is empty for a generated one.
	Prepare(workflowName, service, id string, params json.RawMessage, origin store.AgentKey) (*store.Instance, error)

	// Claim takes, when it can, one of the engine's execution slots for
	// row, a row Prepare returned for the engine's own service, and marks
	// the row claimed by this node and running, so that its insert is its
	// claim too and it starts at once, as Engine.Create's instances do. It
	// reports whether it did, and returns the function to call once the
	// insert has ended: with created true it starts the instance, with
	// false it gives the slot back. Without a free slot, or with the
	// engine not running, the row stays queued and the function does
	// nothing.
	Claim(row *store.Instance) (claimed bool, inserted func(created bool))

	// OnFinished registers fn to be called, in the finishing goroutine,
	// after an instance an agent started (one with an origin) finished on
	// this engine, so that the runtime delivers the store's finish notice
	// at once instead of at its next poll. fn must not block.
	OnFinished(fn func(instanceID string, origin store.AgentKey))

	// ReapIfGone removes node n, as the engine's reaper would, when it ran
	// on the engine's host in a process that no longer exists, and
	// reports whether it did. The runtime calls it when an agent it is
	// asked for is live on a node of this host, which may have died
	// since the engine last reaped. It does nothing before the engine's
	// Start has returned.
	ReapIfGone(ctx context.Context, n store.Node) (bool, error)

	// LeaseLapsed reports whether the engine is running and its node's
	// last successful heartbeat is older than its lease. Other nodes may
	// then take its work over, so the engine claims nothing and the
	// runtime serves no agent until a heartbeat succeeds again (which a
	// true answer asks for at once).
	LeaseLapsed() bool

	// Telemetry returns the engine's tracer and instruments (off when the
	// engine has no providers), which the runtime uses unless its own
	// options name providers.
	Telemetry() *telemetry.T

	// MaxEventBytes is the engine's limit on an event's payload
	// (workflow.Limits.MaxEventBytes): a store write that delivers an
	// event itself, bypassing Instance.SendEvent, delivers none larger.
	MaxEventBytes() int

	// Reserve takes one of the engine's execution slots for an instance
	// that a write of the runtime is about to claim for this node (see
	// store.Delivery), and returns the node and the service to claim
	// for. It fails (ok false) unless the engine is running, not
	// stopping, its lease valid and a slot free. The caller passes the
	// slot on, once: to Launch with the instance it claimed, or to
	// Release.
	Reserve() (owner, service string, ok bool)
	// Launch executes inst, claimed for this node by the caller's write,
	// in the slot Reserve took, as the engine executes an instance it
	// claimed itself.
	Launch(inst *store.Instance)
	// Release gives back the slot Reserve took.
	Release()
}
