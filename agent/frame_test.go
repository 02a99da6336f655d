package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"rpc","id":"1","method":"increment","args":[2]}`,
		`{"type":"cf_agent_state","state":{"count":1}}`,
		`{"type":"rpc","id":1}`, `{"type":null}`, `[]`, `"x"`, ``,
		`{"type":"rpc","id":"a","method":"m","args":null}`,
		`{"type":"rpc","id":"a","method":"m","args":{"x":1}}`,
		` {"type":"cf_agent_state","state":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, err := decodeFrame(msg)
		switch {
		case errors.Is(err, errNotProtocol):
			if fr.ID != "" || fr.Method != "" || fr.State != nil {
				t.Fatalf("non-protocol message %q decoded fields: %+v", msg, fr)
			}
		case err != nil:
			if fr.Type != frameRPC && fr.Type != frameState {
				t.Fatalf("protocol error %v for frame type %q", err, fr.Type)
			}
		case fr.Type == frameState:
			if !json.Valid(fr.State) {
				t.Fatalf("state %q is not valid JSON", fr.State)
			}
		case fr.Type == frameRPC:
			if fr.ID == "" || fr.Method == "" {
				t.Fatalf("rpc frame %q decoded without id or method: %+v", msg, fr)
			}
			for _, a := range fr.Args {
				if !json.Valid(a) {
					t.Fatalf("argument %q is not valid JSON", a)
				}
			}
			// A reply to it is valid JSON that names the id.
			var r rpcReply
			if err := json.Unmarshal(encodeReply(rpcReply{ID: fr.ID, Error: "x"}), &r); err != nil || r.ID != fr.ID {
				t.Fatalf("reply to id %q: %+v, %v", fr.ID, r, err)
			}
		default:
			t.Fatalf("frame of type %q decoded without error", fr.Type)
		}
	})
}

func TestDecodeFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		msg     string
		typ     string
		id      string
		wantErr string
	}{
		{`{"type":"rpc","id":"1","method":"m","args":[1,"a"]}`, frameRPC, "1", ""},
		{`{"type":"rpc","id":"1","method":"m"}`, frameRPC, "1", ""},
		{`{"type":"cf_agent_state","state":{}}`, frameState, "", ""},
		{`{"type":"rpc","id":2,"method":"m"}`, frameRPC, "", `"id" must be a non-empty string`},
		{`{"type":"rpc","id":"x","method":5}`, frameRPC, "x", `"method" must be a non-empty string`},
		{`{"type":"rpc","id":"x","method":"m","args":"a"}`, frameRPC, "x", `"args" must be an array`},
		{`{"type":"cf_agent_state"}`, frameState, "", `"state" is missing`},
		{`{"type":"other"}`, "", "", errNotProtocol.Error()},
		{`{"type":"rpc",`, "", "", errNotProtocol.Error()},
	} {
		fr, err := decodeFrame([]byte(tc.msg))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("decodeFrame(%s): err = %v, want %q", tc.msg, err, tc.wantErr)
		}
		if fr.Type != tc.typ || fr.ID != tc.id {
			t.Errorf("decodeFrame(%s) = %+v, want type %q id %q", tc.msg, fr, tc.typ, tc.id)
		}
	}
}
