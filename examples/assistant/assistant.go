// Package assistant is the example Think agent the dev server serves: an
// Assistant with two small, deterministic tools (get_time, which reads the
// clock in an IANA zone from the tzdata embedded in the binary, and add),
// answering with whichever model the environment configures — or, when
// none is, with a scripted model that plays a tool round, and says so.
//
//	p, desc, err := assistant.Provider(os.Getenv) // desc: "scripted model (no provider configured)"
//	err = assistant.Register(rt, assistant.Options{Model: p})
//	res, err := agent.Call(ctx, rt, "ada", (*assistant.Assistant).Ask, "What time is it in Asia/Tokyo?")
package assistant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	_ "time/tzdata" // get_time resolves any IANA zone, whatever the host has installed

	"agentflow/agent"
	"agentflow/model"
	"agentflow/store"
	"agentflow/think"
)

// Name is the class name; its URL form is "assistant".
const Name = "Assistant"

// System is the Assistant's system prompt.
const System = "You are a concise assistant. Use the get_time tool for the current time anywhere " +
	"and the add tool for sums; do not guess either. Answer in one or two sentences."

// State is the Assistant's state.
type State struct {
	// Zone is the user's IANA time zone ("Europe/Oslo"); when set, each
	// turn's system prompt tells the model (see BeforeTurn).
	Zone string `json:"zone,omitempty"`
}

// Assistant is a Think agent.
type Assistant struct {
	think.Agent[State]
}

// Options configure Register.
type Options struct {
	// Model is the provider turns stream from (see Provider). Required.
	Model model.Provider
	// Now is get_time's clock; default the runtime's clock.
	Now func() time.Time
	// MaxSteps caps the model calls of one turn; default 10.
	MaxSteps int
}

// Register registers the Assistant on rt. WebSocket clients may call ask,
// submitMessages, inspectSubmission, cancelSubmission and conversation, and
// set the state ({"zone": …}).
func Register(rt *agent.Runtime, o Options) error {
	if o.Now == nil {
		o.Now = rt.Clock().Now
	}
	tools, err := Tools(o.Now)
	if err != nil {
		return err
	}
	return think.Register[Assistant](rt, Name, think.Options{
		Model:    o.Model,
		System:   System,
		Tools:    tools,
		MaxSteps: o.MaxSteps,
		Class: agent.ClassOptions{Callable: []string{
			"ask", "submitMessages", "inspectSubmission", "cancelSubmission", "conversation",
		}},
	})
}

// TimeArgs are get_time's arguments.
type TimeArgs struct {
	Zone string `json:"zone" jsonschema:"an IANA time zone such as Europe/London, America/New_York or UTC"`
}

// TimeResult is get_time's result.
type TimeResult struct {
	Zone    string `json:"zone"`
	Time    string `json:"time"` // RFC 3339, in the zone
	Weekday string `json:"weekday"`
}

// AddArgs are add's arguments.
type AddArgs struct {
	Numbers []float64 `json:"numbers" jsonschema:"the numbers to add"`
}

// Tools returns the Assistant's tools, get_time reading now.
func Tools(now func() time.Time) ([]think.Tool, error) {
	getTime, err := think.NewTool("get_time", "The current date and time in an IANA time zone",
		func(ctx context.Context, a TimeArgs) (TimeResult, error) {
			loc, err := loadZone(a.Zone)
			if err != nil {
				return TimeResult{}, err
			}
			t := now().In(loc)
			return TimeResult{Zone: loc.String(), Time: t.Format(time.RFC3339), Weekday: t.Weekday().String()}, nil
		})
	if err != nil {
		return nil, err
	}
	add, err := think.NewTool("add", "The sum of a list of numbers",
		func(ctx context.Context, a AddArgs) (float64, error) {
			if len(a.Numbers) == 0 {
				return 0, errors.New("add: give at least one number")
			}
			var sum float64
			for _, n := range a.Numbers {
				sum += n
			}
			return sum, nil
		})
	if err != nil {
		return nil, err
	}
	return []think.Tool{getTime, add}, nil
}

// loadZone loads an IANA zone, refusing the empty name (which
// time.LoadLocation takes for UTC) and "Local" (the host's, not the user's).
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("get_time: %q is not an IANA time zone (e.g. Europe/London, UTC)", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("get_time: unknown time zone %q (want an IANA name such as Europe/London)", name)
	}
	return loc, nil
}

// Asked is what Ask returns.
type Asked struct {
	SubmissionID string                 `json:"submissionId"`
	Accepted     bool                   `json:"accepted"`
	Status       store.SubmissionStatus `json:"status"`
}

// Ask submits one user message; the turn runs in the background and
// streams to the agent's WebSocket clients as cf_agent_think frames, ending
// with a "done" frame. InspectSubmission returns its result.
func (a *Assistant) Ask(ctx context.Context, text string) (Asked, error) {
	if strings.TrimSpace(text) == "" {
		return Asked{}, errors.New("ask: the message is empty")
	}
	r, err := a.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: text}}, think.SubmitOptions{})
	if err != nil {
		return Asked{}, err
	}
	return Asked{SubmissionID: r.Submission.ID, Accepted: r.Accepted, Status: r.Submission.Status}, nil
}

// BeforeTurn tells the model the user's time zone when the state has one.
func (a *Assistant) BeforeTurn(_ context.Context, _ think.SubmissionInfo, c *think.TurnConfig) error {
	if z := a.State().Zone; z != "" {
		c.System += " The user's time zone is " + z + "."
	}
	return nil
}

// ValidateState refuses a zone that is not an IANA time zone.
func (a *Assistant) ValidateState(_ context.Context, next State, _ *agent.Conn) error {
	if next.Zone == "" {
		return nil
	}
	_, err := loadZone(next.Zone)
	return err
}

// MaxMessageBytes bounds a message POSTed to OnRequest.
const MaxMessageBytes = 64 << 10

// OnRequest serves plain HTTP at the instance's path
// (/agents/assistant/<name>): POST with the message as the body submits it
// and answers {"submissionId", "accepted", "status"} (202), or 413 when it
// is over MaxMessageBytes; GET
// ?submission=<id> answers that submission (its status, output, error and
// token usage); GET without it answers the conversation. GET
// /agents/assistant/<name>/get-messages answers it as AI SDK UI messages,
// as useAgentChat asks for it (think.Agent.ServeChat).
func (a *Assistant) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if a.ServeChat(ctx, w, r) { // GET …/get-messages, for useAgentChat
		return
	}
	if rest := agent.Rest(r); rest != "" {
		http.Error(w, "not found: "+rest, http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxMessageBytes+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > MaxMessageBytes {
			http.Error(w, fmt.Sprintf("message too large: the limit is %d bytes", MaxMessageBytes), http.StatusRequestEntityTooLarge)
			return
		}
		res, err := a.Ask(ctx, string(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusAccepted, res)
	case http.MethodGet:
		if id := r.URL.Query().Get("submission"); id != "" {
			s, err := a.InspectSubmission(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				http.Error(w, "no submission "+id, http.StatusNotFound)
				return
			} else if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"id": s.ID, "status": s.Status, "output": s.Output,
				"error": s.Error, "usage": s.Usage})
			return
		}
		conv, err := a.Conversation(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, conv)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
