package sqlstore

import (
	"fmt"
	"reflect"

	"agentflow/store"
)

// ActiveSubmissionStatements returns, by name, the statements of a store on
// d that look for an agent's pending or running submissions.
func ActiveSubmissionStatements(d *Dialect) map[string]string {
	s := New(Config{Dialect: d})
	pending, _ := s.listSubmissions(store.AgentKey{Class: "c", Name: "n"},
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}, Limit: 1})
	active, _ := s.listSubmissions(store.AgentKey{Class: "c", Name: "n"},
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
	return map[string]string{
		"ListSubmissions(pending)":         pending,
		"ListSubmissions(pending,running)": active,
		"StartSubmission":                  s.tq.startSubmission,
		"RecoverSubmissions":               s.tq.recoverSubmissions,
	}
}

// Statements returns, by field path, every non-empty string of the query
// sets of a store on d: its statements, and the fragments some are put
// together from.
func Statements(d *Dialect) map[string]string {
	s := New(Config{Dialect: d})
	out := map[string]string{}
	for prefix, v := range map[string]any{"q": s.q, "aq": s.aq, "wq": s.wq, "tq": s.tq} {
		collectStrings(prefix, reflect.ValueOf(v), out)
	}
	return out
}

func collectStrings(path string, v reflect.Value, out map[string]string) {
	switch v.Kind() {
	case reflect.String:
		if v.String() != "" {
			out[path] = v.String()
		}
	case reflect.Struct:
		for i := range v.NumField() {
			collectStrings(path+"."+v.Type().Field(i).Name, v.Field(i), out)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			collectStrings(fmt.Sprint(path, "[", k, "]"), v.MapIndex(k), out)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			collectStrings(fmt.Sprint(path, "[", i, "]"), v.Index(i), out)
		}
	}
}
