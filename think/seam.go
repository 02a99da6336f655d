package think

import (
	"agentflow/agent"
	"agentflow/internal/agentseam"
	"agentflow/store"
)

// host returns the part of rt that packages built on the runtime use and
// users do not (internal/agentseam): the whole store, the loop, finder,
// notice and call registrations think adds to the runtime.
func host(rt *agent.Runtime) *agentseam.Host { return rt.Seam(agentseam.Key{}) }

// store returns the store the agent's Think ledger lives in.
func (a *Agent[S]) store() store.Store { return host(a.Runtime()).Store() }
