package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The WebSocket protocol's JSON frames, as the `agents` JavaScript client
// (agents/client: AgentClient, useAgent) sends and expects them.
const (
	frameIdentity   = "cf_agent_identity"
	frameState      = "cf_agent_state"
	frameStateError = "cf_agent_state_error"
	frameRPC        = "rpc"
	// frameError answers a message the server could not take (too large,
	// malformed, not a protocol frame and no OnMessage hook). The
	// JavaScript client ignores frame types it does not know.
	frameError = "cf_agent_error"
)

// frame is a decoded client frame: a state push or an RPC request.
type frame struct {
	Type   string
	ID     string            // rpc
	Method string            // rpc
	Args   []json.RawMessage // rpc
	State  json.RawMessage   // cf_agent_state
}

// errNotProtocol: the message is not a protocol frame; it goes to the
// class's OnMessage hook.
var errNotProtocol = errors.New("not a protocol frame")

// wireFrame is the shape frames are read with; fields are raw so that a
// wrong type is reported by name.
type wireFrame struct {
	Type   json.RawMessage `json:"type"`
	ID     json.RawMessage `json:"id"`
	Method json.RawMessage `json:"method"`
	Args   json.RawMessage `json:"args"`
	State  json.RawMessage `json:"state"`
}

// decodeFrame reads a client message. A message that is not a JSON object
// with a string type of cf_agent_state or rpc fails with errNotProtocol.
// A protocol frame with a missing or mistyped field fails with an error
// naming the field; for an rpc frame whose id could be read, the returned
// frame carries it so the error can be answered to that call.
func decodeFrame(msg []byte) (frame, error) {
	var f frame
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return f, errNotProtocol
	}
	var w wireFrame
	if err := json.Unmarshal(trimmed, &w); err != nil {
		return f, errNotProtocol
	}
	if err := json.Unmarshal(w.Type, &f.Type); err != nil || (f.Type != frameState && f.Type != frameRPC) {
		f.Type = ""
		return f, errNotProtocol
	}
	if f.Type == frameState {
		if len(w.State) == 0 {
			return f, errors.New(`cf_agent_state frame: field "state" is missing`)
		}
		f.State = w.State
		return f, nil
	}
	if err := stringField(w.ID, "id", &f.ID); err != nil {
		return f, err
	}
	if err := stringField(w.Method, "method", &f.Method); err != nil {
		return f, err
	}
	if len(w.Args) == 0 || string(w.Args) == "null" {
		return f, nil
	}
	if err := json.Unmarshal(w.Args, &f.Args); err != nil {
		return f, fmt.Errorf(`rpc frame: field "args" must be an array`)
	}
	return f, nil
}

func stringField(raw json.RawMessage, name string, dst *string) error {
	if len(raw) == 0 {
		return fmt.Errorf("rpc frame: field %q is missing", name)
	}
	if err := json.Unmarshal(raw, dst); err != nil || *dst == "" {
		*dst = ""
		return fmt.Errorf("rpc frame: field %q must be a non-empty string", name)
	}
	return nil
}

// rpcReply is the server's answer to an rpc frame.
type rpcReply struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Success bool            `json:"success"`
	Result  json.RawMessage `json:"result,omitempty"`
	Done    *bool           `json:"done,omitempty"`
	Error   string          `json:"error,omitempty"`
}

var (
	doneTrue  = true
	doneFalse = false
)

func encodeReply(r rpcReply) []byte {
	r.Type = frameRPC
	b, err := json.Marshal(r)
	if err != nil { // only a result that is not valid JSON gets here
		b, _ = json.Marshal(rpcReply{Type: frameRPC, ID: r.ID, Error: "result is not valid JSON: " + err.Error()})
	}
	return b
}

func errorFrame(typ, msg string) []byte {
	b, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Error string `json:"error"`
	}{typ, msg})
	return b
}

func identityFrame(name, agent string) []byte {
	b, _ := json.Marshal(struct {
		Type         string `json:"type"`
		Name         string `json:"name"`
		Agent        string `json:"agent"`
		StateFollows bool   `json:"stateFollows"`
	}{frameIdentity, name, agent, true})
	return b
}
