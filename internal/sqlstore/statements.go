package sqlstore

import (
	"fmt"
	"reflect"
	"strings"

	"agentflow/store"
)

// Statements returns, by name, the SQL a store on d runs: every string of
// its query sets but the fragments of the lists put together at run time
// (named list…), and those lists as put together for typical filters.
// The stores' plan tests EXPLAIN them.
func Statements(d *Dialect) map[string]string {
	s := New(Config{Dialect: d})
	out := map[string]string{}
	for name, v := range map[string]any{"q": s.q, "aq": s.aq, "wq": s.wq, "tq": s.tq} {
		collectStrings(name, reflect.ValueOf(v), out)
	}
	for name := range out {
		if strings.HasPrefix(name, "tq.list") || strings.HasPrefix(name, "wq.list") ||
			name == "wq.metaEqual" {
			delete(out, name)
		}
	}
	key := store.AgentKey{Class: "c", Name: "n"}
	out["ListSubmissions(pending)"], _ = s.listSubmissions(key,
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}, Limit: 1})
	out["ListSubmissions(pending, running)"], _ = s.listSubmissions(key,
		store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending, store.SubmissionRunning}})
	out["ListSubmissions"], _ = s.listSubmissions(key, store.SubmissionFilter{})
	out["ListAgentWorkflows"], _ = s.listAgentWorkflows(key, store.WorkflowFilter{})
	out["ListAgentWorkflows(filtered, after)"], _ = s.listAgentWorkflows(key, store.WorkflowFilter{
		Statuses: []store.Status{store.StatusRunning}, Workflow: "w", Metadata: map[string]string{"k": "v"},
		After: &store.WorkflowCursor{WorkflowID: "x"}})
	return out
}

// collectStrings adds the strings in v, a query set or part of one, to out
// under their field paths.
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
