package sqlstore

import "agentflow/store"

// ActiveSubmissionStatements returns, by name, the statements of a store on
// d that look for an agent's pending or running submissions.
func ActiveSubmissionStatements(d *Dialect) map[string]string {
	s := New(Config{Dialect: d})
	pending, _ := s.listSubmissions(store.AgentKey{Class: "c", Name: "n"},
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}, Limit: 1})
	running, _ := s.listSubmissions(store.AgentKey{Class: "c", Name: "n"},
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
	return map[string]string{
		"ListSubmissions(pending)":         pending,
		"ListSubmissions(pending,running)": running,
		"StartSubmission":                  s.tq.startSubmission,
		"RecoverSubmissions":               s.tq.recoverSubmissions,
	}
}
