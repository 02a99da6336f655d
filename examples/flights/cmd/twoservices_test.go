//go:build linux

// The flights example's two binaries as real processes sharing one store.
package cmd_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"agentflow/examples/flights"
	"agentflow/examples/flights/email"
	"agentflow/examples/internal/proctest"
	"agentflow/store"
)

// agentsArgs are the agent service's flags: a short delay and check-in
// wait, so that the story takes a second or two.
func agentsArgs(b proctest.Backend) []string {
	return append([]string{"--addr", "127.0.0.1:0", "--delay", "200ms", "--check-in-wait", "100ms"}, b.Args...)
}

var addrRE = `flights-agents: serving http://(127\.0\.0\.1:\d+)/agents/my-agent/<name>`

// trigger sends the seed's request with the user-id header and returns
// the task id, after checking that one without the header is refused.
func trigger(t *testing.T, addr, name, user string) string {
	t.Helper()
	post := func(h http.Header) (int, []byte) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/agents/my-agent/"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, body := post(http.Header{}); code != http.StatusBadRequest {
		t.Errorf("request without user-id: %d %s, want 400", code, body)
	}
	code, body := post(http.Header{"User-Id": {user}})
	var answer struct {
		TaskID string `json:"taskId"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &answer) != nil || answer.TaskID == "" {
		t.Fatalf("request: %d %s, want 200 with a taskId", code, body)
	}
	return answer.TaskID
}

// view reads the agent's state and tracked workflows over HTTP.
func view(t *testing.T, addr, name string) flights.StateView {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/agents/my-agent/" + name + "/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v flights.StateView
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET state: %d %s", resp.StatusCode, b)
	}
	return v
}

// waitView polls the agent's view until cond holds.
func waitView(t *testing.T, addr, name, what string, d time.Duration, cond func(flights.StateView) bool) flights.StateView {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := view(t, addr, name)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; the agent shows %+v", what, d, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func find(v flights.StateView, binding string) (flights.TrackedView, bool) {
	for _, w := range v.Workflows {
		if w.Binding == binding {
			return w, true
		}
	}
	return flights.TrackedView{}, false
}

// bothComplete holds when the agent tracks the flight and the email, both
// complete, and recorded the booking.
func bothComplete(v flights.StateView) bool {
	f, ok1 := find(v, flights.FlightBinding)
	e, ok2 := find(v, flights.EmailBinding)
	return ok1 && ok2 && len(v.Workflows) == 2 && f.Status == "complete" && e.Status == "complete" &&
		e.ID == "email-"+f.ID && e.Service == email.Service && v.State.Emails == 1 && v.State.Workflows[f.ID] == "complete"
}

// emailRE matches the email the email-workflows process prints, with the
// flight's id in its idempotency key.
func emailRE(user string) string {
	return `email email-(flight_sch_\w+):send:0 to ` + user + `:\nTo: ` + user + `\nSubject: You are booked on DL264\n\nConfirmation (DL264-2025-02-23-\w+), seat 14C\.`
}

// TestTwoServices runs the flights example as two processes — the agent
// service and the email-workflows service — sharing one SQLite file, and
// again one PostgreSQL schema; and shows an email workflow queued while no
// email-workflows process runs, then run once one starts.
func TestTwoServices(t *testing.T) {
	t.Parallel()
	bins := proctest.Build(t, "agentflow/examples/flights/cmd/flights-agents", "agentflow/examples/flights/cmd/email-workflows")
	agentsBin, emailsBin := bins[0], bins[1]

	story := func(t *testing.T, b proctest.Backend) {
		began := time.Now()
		emails := proctest.Start(t, emailsBin, nil, b.Args...)
		emails.WaitFor(`email-workflows: engine \S+ of service "email-workflows"`, 30*time.Second)
		agents := proctest.Start(t, agentsBin, nil, agentsArgs(b)...)
		addr := agents.WaitFor(addrRE, 30*time.Second)[1]

		trigger(t, addr, "trip", "u1")
		m := emails.WaitFor(emailRE("u1"), 15*time.Second)
		v := waitView(t, addr, "trip", "flight and email tracked complete", 10*time.Second, bothComplete)
		f, _ := find(v, flights.FlightBinding)
		if m[1] != f.ID {
			t.Errorf("the email is for flight %s, the agent tracks %s", m[1], f.ID)
		}
		if n := strings.Count(emails.Output(), "\nTo: u1\n"); n != 1 {
			t.Errorf("%d emails printed, want 1", n)
		}
		agents.WaitFor(`MyAgent trip: flight `+f.ID+` complete: confirmation `+m[2]+`, seat 14C`, time.Second)
		agents.WaitFor(`MyAgent trip: EMAIL_WORKFLOW workflow email-`+f.ID+` \(service email-workflows\) complete`, time.Second)

		// The instances agree, in the shared store.
		st, err := b.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for _, id := range []string{f.ID, "email-" + f.ID} {
			in, err := st.GetInstance(t.Context(), id)
			if err != nil || in.Status != store.StatusComplete || in.Origin != (store.AgentKey{Class: flights.AgentClass, Name: "trip"}) {
				t.Errorf("instance %s = %+v, %v; want complete, started by MyAgent trip", id, in, err)
			}
		}
		// How long the email workflow waited for the other process, by
		// the store's times (one host, one clock): from its creation by
		// the agents' process to its first checkpoint by the emails'
		// process, and from its finish there to the agent's learning of it.
		// Both were about a poll interval (1 s) before the stores' wakes.
		if in, err := st.GetInstance(t.Context(), "email-"+f.ID); err == nil {
			steps, serr := st.ListSteps(t.Context(), in.ID)
			tr, terr := st.GetAgentWorkflow(t.Context(), store.AgentKey{Class: flights.AgentClass, Name: "trip"}, in.ID)
			if serr == nil && terr == nil && len(steps) > 0 {
				t.Logf("email workflow: first step done %s after it was queued; its completion reached the agent %s after it finished",
					steps[0].UpdatedAt.Sub(in.CreatedAt).Round(100*time.Microsecond), tr.CompletedAt.Sub(in.FinishedAt).Round(100*time.Microsecond))
			}
		}
		t.Logf("request to email and tracking: %s", time.Since(began).Round(time.Millisecond))
		agents.Stop()
		emails.Stop()
	}

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		story(t, proctest.SQLite(t, "flights.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		story(t, proctest.Postgres(t))
	})

	// A binding whose service has no running workers: the email workflow
	// stays queued, for that service, and the agent lists it as waiting,
	// until an email-workflows process starts and runs it.
	t.Run("no email workers yet", func(t *testing.T) {
		t.Parallel()
		b := proctest.SQLite(t, "flights.db")
		agents := proctest.Start(t, agentsBin, nil, agentsArgs(b)...)
		addr := agents.WaitFor(addrRE, 30*time.Second)[1]
		trigger(t, addr, "later", "u2")
		v := waitView(t, addr, "later", "a queued email workflow", 10*time.Second, func(v flights.StateView) bool {
			_, ok := find(v, flights.EmailBinding)
			return ok
		})
		e, _ := find(v, flights.EmailBinding)
		if e.Status != "queued" || e.Service != email.Service || !strings.Contains(e.Waiting, `no running workers of service "email-workflows"`) {
			t.Fatalf("email workflow tracked as %+v, want queued and waiting for email-workflows", e)
		}
		st, err := b.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		queued := func() {
			t.Helper()
			in, err := st.GetInstance(t.Context(), e.ID)
			if err != nil || in.Status != store.StatusQueued || in.Service != email.Service || in.Workflow != email.Workflow || in.Owner != "" {
				t.Fatalf("email instance = %+v, %v; want queued for service %s, unclaimed", in, err, email.Service)
			}
		}
		queued()
		time.Sleep(1500 * time.Millisecond) // more than a poll interval of the agent service's engine
		queued()
		if v := view(t, addr, "later"); v.State.Emails != 1 {
			t.Fatalf("state = %+v, want the email started once", v.State)
		}

		emails := proctest.Start(t, emailsBin, nil, b.Args...)
		m := emails.WaitFor(emailRE("u2"), 15*time.Second)
		v = waitView(t, addr, "later", "flight and email tracked complete", 10*time.Second, bothComplete)
		if e, _ := find(v, flights.EmailBinding); e.Waiting != "" || m[1] != strings.TrimPrefix(e.ID, "email-") {
			t.Errorf("email workflow tracked as %+v after the email %s", e, m[0])
		}
		in, err := st.GetInstance(t.Context(), e.ID)
		if err != nil || in.Status != store.StatusComplete {
			t.Errorf("email instance = %+v, %v; want complete", in, err)
		}
		agents.Stop()
		emails.Stop()
	})
}
