// Package agent runs agents: stateful objects addressed by class and name
// that live forever in the store, are activated in memory on first use and
// evicted when idle, talk to clients over HTTP and WebSocket, schedule their
// own methods and run background fibers (DESIGN §3).
//
// # Classes
//
// A class is a struct embedding Agent[S], where S is its state type:
//
//	type CounterState struct{ Count int `json:"count"` }
//
//	type Counter struct{ agent.Agent[CounterState] }
//
//	func (c *Counter) Increment(ctx context.Context, by int) (int, error) {
//		s := c.State()
//		s.Count += by
//		return s.Count, c.SetState(ctx, s)
//	}
//
//	agent.MustRegister[Counter](rt, "Counter", agent.ClassOptions{Callable: []string{"increment"}})
//
// Any exported method with the signature
//
//	func (a *T) M([ctx context.Context,] [s *agent.Stream,] args...) ([R,] [error])
//
// can be called by name from Go (Ref.Call) with JSON-compatible arguments;
// the ones listed in ClassOptions.Callable can also be called by WebSocket
// clients. A method taking a *Stream streams: each Stream.Send reaches a
// WebSocket caller as a chunk before the final reply. Agent[S]'s own
// methods and the hook methods below are never callable by name.
//
// Calls on one instance never run concurrently: every call, HTTP request,
// WebSocket message and schedule run holds the instance's lock. Fibers run
// in the background, outside it.
//
// # Hooks
//
// A class implements any of these small interfaces to be told of events:
// Starter (activation), RequestHandler (HTTP), ConnectHook, MessageHandler,
// CloseHook (WebSocket), ErrorHook, InitialStater, StateValidator,
// StateChangedHook and FiberRecoverer.
//
// # Placement
//
// An instance is live on at most one node of the cluster: activation claims
// its row in the store for this runtime's node (the workflow engine's), with
// a fence that every state write carries. Nodes that share a
// Options.ClusterSecret, and advertise where their Handler is
// (Options.AdvertiseURL), send each other what is not theirs: an HTTP
// request or WebSocket for an agent live on another node is forwarded there,
// and calls by name (Ref.Call, Call, Call0, Ref.State, a workflow's
// Origin.Call, the prompt step) go there with JSON arguments. An agent live
// nowhere is activated here if this runtime has its class, else on a node
// that has it. Ref.Do and With run Go functions and so work only where the
// agent is live; elsewhere they fail with an error matching
// ErrAgentElsewhere, as every call does without a cluster
// (store.AgentOwnedError names the node). A node the engines reap as dead
// frees its agents; a node whose lease lapsed serves none (ErrLeaseLapsed)
// until it renews.
//
// # Workflows
//
// An agent starts workflows through bindings (Runtime.Bind) with
// RunWorkflow, which records the agent as the instance's origin and inserts
// the agent's tracking row in the same transaction. Inside the workflow,
// OriginOf returns the agent's handle: Call, ReportProgress,
// ReportComplete, ReportError, SendEvent, SetState, MergeState,
// ResetState, Broadcast and WaitForApproval, each a durable step. The agent
// hears back through WorkflowProgressHook, WorkflowCompleteHook,
// WorkflowErrorHook and WorkflowEventHook, and keeps the tracking rows with
// GetWorkflow, GetWorkflows, GetWorkflowStatus, SendWorkflowEvent,
// ApproveWorkflow, RejectWorkflow, Pause/Resume/Terminate/RestartWorkflow
// and DeleteWorkflow. Returning from Run reports completion by itself.
//
// # Wire protocol
//
// Handler serves /agents/<class-kebab>/<name>[/rest] with the JSON frames
// of the `agents` JavaScript client (AgentClient, useAgent): on connect a
// cf_agent_identity frame and a cf_agent_state frame; {"type":"rpc"}
// requests answered with {"type":"rpc","id","success","result","done"}
// replies, streaming ones as done:false chunks; cf_agent_state pushes from
// a client, persisted and broadcast to the other connections, or refused
// with cf_agent_state_error. A message the server cannot take (too large,
// malformed) is answered with a cf_agent_error frame and the connection
// stays open.
package agent
