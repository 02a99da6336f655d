package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"agentflow/agent"
	"agentflow/store"
)

// Listener records the errors its runtime reports to it.
type Listener struct{ agent.Agent[struct{}] }

// listenerErrs are the errors reported to each Listener, by name.
var listenerErrs = struct {
	sync.Mutex
	m map[string][]error
}{m: map[string][]error{}}

func (l *Listener) OnError(ctx context.Context, err error) {
	listenerErrs.Lock()
	defer listenerErrs.Unlock()
	listenerErrs.m[l.Name()] = append(listenerErrs.m[l.Name()], err)
}

func reportedTo(name string) []error {
	listenerErrs.Lock()
	defer listenerErrs.Unlock()
	return append([]error(nil), listenerErrs.m[name]...)
}

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// errorsAbout returns the error-level records whose attribute notice is id.
func (h *logRecords) errorsAbout(id string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		if r.Level == slog.LevelError && attrs["notice"] == id {
			out = append(out, attrs)
		}
	}
	return out
}

// A workflow notice whose payload does not decode is not dropped without
// a word, nor retried: it is logged at error level with its id and kind,
// reported once to the agent's ErrorHook as a *NoticeError, and removed.
func TestMalformedNoticeIsReported(t *testing.T) {
	t.Parallel()
	logs := &logRecords{}
	e := newEnv(t, envOptions{
		setup: func(rt *agent.Runtime) { agent.MustRegister[Listener](rt, "Listener", agent.ClassOptions{}) },
		rt: agent.Options{Logger: slog.New(logs), PollInterval: 20 * time.Millisecond,
			ScheduleRetry: agent.Retry{Attempts: 3, MinDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond}},
	})
	for _, tc := range []struct {
		name, payload, kind string
	}{
		{"NotJSON", `not json`, ""},
		{"NoInstance", `{"kind":"progress"}`, "progress"},
		{"ErrorMessageNotAString", `{"instanceId":"wf-1","kind":"error","data":{"code":5}}`, "error"},
		{"EventNotAnObject", `{"instanceId":"wf-1","kind":"event","data":"ready"}`, "event"},
		{"BroadcastNotAString", `{"instanceId":"wf-1","kind":"broadcast","data":5}`, "broadcast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A name of this run's own: the errors are kept by name for
			// the whole test binary, which -count runs again.
			key := store.AgentKey{Class: "Listener", Name: fmt.Sprintf("malformed-%s-%d", tc.name, time.Now().UnixNano())}
			now := e.clock.Now()
			id := "wfn_bad_" + tc.name
			s := &store.Schedule{ID: id, AgentKey: key, Method: "agentflow:workflow-notice", Payload: []byte(tc.payload),
				Kind: store.ScheduleDelayed, NextRunAt: now, CreatedAt: now}
			if _, _, err := e.store.CreateSchedule(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			e.rt.WakeSchedules()
			eventually(t, 10*time.Second, "the notice to be reported", func() bool { return len(reportedTo(key.Name)) > 0 })
			eventually(t, 10*time.Second, "the notice to be removed", func() bool {
				_, err := e.store.GetSchedule(t.Context(), key, id)
				return errors.Is(err, store.ErrNotFound)
			})

			errs := reportedTo(key.Name)
			if len(errs) != 1 {
				t.Fatalf("%d errors reported, want 1: %v", len(errs), errs)
			}
			se, ok := errors.AsType[*agent.ScheduleError](errs[0])
			if !ok || se.Attempts != 1 {
				t.Errorf("reported %v, want a *ScheduleError after 1 attempt", errs[0])
			}
			ne, ok := errors.AsType[*agent.NoticeError](errs[0])
			if !ok {
				t.Fatalf("reported %v, want it to wrap a *NoticeError", errs[0])
			}
			if ne.Notice != id || ne.Kind != tc.kind || ne.Agent != key || !errors.Is(errs[0], agent.ErrMalformedNotice) {
				t.Errorf("NoticeError %+v: want notice %s, kind %q, agent %s, matching ErrMalformedNotice", ne, id, tc.kind, key)
			}
			if ne.ErrorName() != "NoticeError" {
				t.Errorf("ErrorName = %q", ne.ErrorName())
			}
			recs := logs.errorsAbout(id)
			if len(recs) != 1 || recs[0]["kind"] != tc.kind || recs[0]["agent"] != key.String() {
				t.Errorf("error-level log records about %s: %v, want one with kind %q and agent %s", id, recs, tc.kind, key)
			}
		})
	}
}
