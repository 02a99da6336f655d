package agent_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/examples/counter"
	"agentflow/store"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		rule string // "" when valid
	}{
		{"Plain", "alice", ""},
		{"Unicode", "名前-ünïcödé 🙂", ""},
		{"SpacesAndSlashes", "a b/c?d", ""},
		{"MaxLength", strings.Repeat("x", agent.MaxNameBytes), ""},
		{"MaxLengthMultibyte", strings.Repeat("é", agent.MaxNameBytes/2), ""},
		{"Empty", "", "must not be empty"},
		{"OneByteTooLong", strings.Repeat("x", agent.MaxNameBytes+1), "must be at most 256 bytes, not 257"},
		{"OneMiB", strings.Repeat("x", 1<<20), "must be at most 256 bytes, not 1048576"},
		{"InvalidUTF8", "a\xffb", "must be valid UTF-8"},
		{"TruncatedRune", "caf\xc3", "must be valid UTF-8"},
		{"NUL", "a\x00b", "must not contain control characters (U+0000 at byte 1)"},
		{"Newline", "a\nb", "must not contain control characters (U+000A at byte 1)"},
		{"Tab", "\tab", "must not contain control characters (U+0009 at byte 0)"},
		{"DEL", "ab\x7f", "must not contain control characters (U+007F at byte 2)"},
		{"C1", "a\u0085", "must not contain control characters (U+0085 at byte 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := agent.ValidateName(tc.in)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("ValidateName: %v, want nil", err)
				}
				return
			}
			ne, ok := errors.AsType[*agent.NameError](err)
			if !ok || !errors.Is(err, agent.ErrInvalidName) || ne.Rule != tc.rule {
				t.Fatalf("ValidateName = %v (%T); want a *NameError matching ErrInvalidName with rule %q", err, err, tc.rule)
			}
			if len(err.Error()) > 200 {
				t.Errorf("the error quotes the whole name: %d bytes", len(err.Error()))
			}
		})
	}
}

// TestInvalidNamesAreRefusedEverywhere asks for agents by invalid names
// through every entry point: HTTP and WebSocket (400, before the hooks run),
// Ref and typed calls, and a schedule written straight into the store. Each
// is refused with an error naming the rule, and no agent row is stored.
func TestInvalidNamesAreRefusedEverywhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{setup: func(rt *agent.Runtime) {
		counter.Register(rt)
		agent.MustRegister[Hooked](rt, "Hooked", agent.ClassOptions{})
	}})
	var hooked atomic.Int32
	hook := func(*http.Request, store.AgentKey) error { hooked.Add(1); return nil }
	base := serve(t, e, agent.HandlerOptions{BeforeRequest: hook, BeforeConnect: hook})
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		in   string
		rule string
		http bool // a request line can carry it
	}{
		{"Empty", "", "must not be empty", false},
		{"TooLong", strings.Repeat("n", 300), "must be at most 256 bytes", true},
		{"OneMiB", strings.Repeat("n", 1<<20), "must be at most 256 bytes", false},
		{"NUL", "x\x00y", "control characters", true},
		{"Newline", "x\ny", "control characters", true},
		{"InvalidUTF8", "x\xfe\xffy", "must be valid UTF-8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantRefused := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, agent.ErrInvalidName) || !strings.Contains(err.Error(), tc.rule) {
					t.Errorf("%s: %v; want ErrInvalidName naming the rule %q", what, err, tc.rule)
				}
			}
			_, err := e.rt.Ref(counter.Name, tc.in).Call(ctx, "increment", 1)
			wantRefused("Ref.Call", err)
			_, err = agent.Call(ctx, e.rt, tc.in, (*counter.Counter).Increment, 1)
			wantRefused("agent.Call", err)
			_, err = e.rt.Ref(counter.Name, tc.in).State(ctx)
			wantRefused("Ref.State", err)

			if tc.http {
				for _, upgrade := range []bool{false, true} {
					req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/agents/hooked/"+url.PathEscape(tc.in), nil)
					if err != nil {
						t.Fatal(err)
					}
					if upgrade {
						req.Header.Set("Upgrade", "websocket")
						req.Header.Set("Connection", "Upgrade")
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.rule) {
						t.Errorf("GET (upgrade %v): %d %q; want 400 naming the rule %q", upgrade, resp.StatusCode, body, tc.rule)
					}
				}
			}

			for _, class := range []string{counter.Name, "Hooked"} {
				if _, err := e.store.GetAgent(ctx, store.AgentKey{Class: class, Name: tc.in}); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetAgent(%s, the name): %v; want ErrNotFound: nothing stored", class, err)
				}
			}
		})
	}
	if n := hooked.Load(); n != 0 {
		t.Errorf("the handler's hooks ran %d times for invalid names", n)
	}

	// A schedule of an agent with an invalid name (written by something
	// other than the runtime) runs once, is refused and is gone; no agent
	// row appears.
	bad := store.AgentKey{Class: counter.Name, Name: "s\x00"}
	now := e.clock.Now()
	if _, _, err := e.store.CreateSchedule(ctx, &store.Schedule{ID: "sch-bad", AgentKey: bad, Method: "Increment",
		Payload: []byte("1"), Kind: store.ScheduleDelayed, NextRunAt: now, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	e.rt.WakeSchedules()
	eventually(t, 10*time.Second, "the schedule of the invalid name to be run and removed", func() bool {
		_, err := e.store.GetSchedule(ctx, bad, "sch-bad")
		return errors.Is(err, store.ErrNotFound)
	})
	if _, err := e.store.GetAgent(ctx, bad); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAgent after the schedule ran: %v; want ErrNotFound", err)
	}
}
