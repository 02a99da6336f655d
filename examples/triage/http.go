package triage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"agentflow/agent"
)

// StateView is what GET /agents/triage-agent/<name>/state answers.
type StateView struct {
	State     State         `json:"state"`
	Workflows []TrackedView `json:"workflows"` // newest first
}

// TrackedView is one tracked triage workflow in a StateView.
type TrackedView struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Status  string `json:"status"`
	Issue   int    `json:"issueNumber"`
	// Waiting says that no worker of the workflow's service is running.
	Waiting string `json:"waiting,omitempty"`
}

// OnRequest serves the agent over plain HTTP, below its own path
// (/agents/triage-agent/<name>), for clients without a WebSocket:
//
//	POST issues/<n>                    TriageIssue(n): {"workflowId": …}
//	POST workflows/<id>/approve|reject Review(id, …): {"ok": true}
//	GET  state                         the state and the tracked workflows (a StateView)
func (a *TriageAgent) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(agent.Rest(r), "/"), "/")
	method := http.MethodPost
	switch {
	case len(parts) == 1 && parts[0] == "state":
		method = http.MethodGet
	case len(parts) == 2 && parts[0] == "issues":
	case len(parts) == 3 && parts[0] == "workflows" && (parts[2] == "approve" || parts[2] == "reject"):
	default:
		http.Error(w, "not found: the agent serves POST issues/<n>, POST workflows/<id>/approve or reject, and GET state below its path", http.StatusNotFound)
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		http.Error(w, r.Method+" not allowed: "+method+" only", http.StatusMethodNotAllowed)
		return
	}
	switch parts[0] {
	case "state":
		v, err := a.view(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, v)
	case "issues":
		n, err := strconv.Atoi(parts[1])
		if err != nil || n <= 0 {
			http.Error(w, fmt.Sprintf("%q is not an issue number", parts[1]), http.StatusBadRequest)
			return
		}
		id, err := a.TriageIssue(ctx, n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		a.tell("triaging issue #%d in %s %s", n, Binding, id)
		writeJSON(w, map[string]string{"workflowId": id})
	case "workflows":
		approved := parts[2] == "approve"
		if err := a.Review(ctx, parts[1], approved); err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, agent.ErrNotTracked) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		a.tell("sent %s %s: approved %v", parts[1], ApprovalEvent, approved)
		writeJSON(w, map[string]bool{"ok": true})
	}
}

func (a *TriageAgent) view(ctx context.Context) (StateView, error) {
	v := StateView{State: a.State(), Workflows: []TrackedView{}}
	page, err := a.GetWorkflows(ctx, agent.WorkflowQuery{Workflow: WorkflowClass})
	if err != nil {
		return v, err
	}
	for _, wf := range page.Workflows {
		var p Params
		_ = json.Unmarshal(wf.Metadata, &p)
		v.Workflows = append(v.Workflows, TrackedView{ID: wf.ID, Service: wf.Service, Status: string(wf.Status),
			Issue: p.IssueNumber, Waiting: wf.Waiting})
	}
	return v, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
