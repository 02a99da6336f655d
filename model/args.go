package model

import (
	"bytes"
	"encoding/json"
)

// NormalizeArguments turns a tool call's streamed arguments into the
// arguments of EventToolCallEnd. Empty (or all-space) arguments and a JSON
// null become {}. Anything else must be a complete JSON object; when it is
// not (typically a stream cut off mid-argument) the arguments are nil and
// invalid says why — such a call must never be executed.
func NormalizeArguments(raw string) (args json.RawMessage, invalid string) {
	b := bytes.TrimSpace([]byte(raw))
	if len(b) == 0 || string(b) == "null" {
		return json.RawMessage("{}"), ""
	}
	if !json.Valid(b) {
		return nil, "arguments are not valid JSON (truncated?)"
	}
	if b[0] != '{' {
		return nil, "arguments are not a JSON object"
	}
	return json.RawMessage(b), ""
}
