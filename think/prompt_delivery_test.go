package think_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// TestPromptDeliveryFailure: an outcome the workflow can never take is
// not retried. An answer over the workflow event size limit reaches the
// waiting prompt at once as a *think.DeliveryError, through a failure
// notice sent instead; an outcome for an instance that has finished is
// given up on; and when neither the answer nor its notice can be
// delivered, the message is given up on too. Each time the outbox message
// is marked failed with the reason, after one attempt.
func TestPromptDeliveryFailure(t *testing.T) {
	t.Parallel()
	const limit = 512
	big := `{"title":"Crash on save","summary":"` + strings.Repeat("x", 2*limit) + `","labels":["bug"]}`
	for _, backend := range backends {
		for _, tc := range []struct {
			name   string
			answer string
			// terminate ends the workflow while the turn runs.
			terminate bool
			// kind is the workflow's result when it is not terminated.
			kind string
			// reason is what the message's LastError must say.
			reason []string
		}{
			{"TooLarge", big, false, "delivery:completed", []string{"the limit is 512 bytes"}},
			{"Finished", goodDraft, true, "", []string{"terminated"}},
			{"TooLargeAndFinished", big, true, "", []string{"the limit is 512 bytes", "failure notice cannot be delivered either", "terminated"}},
		} {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				st := openStore(t, backend)
				release := make(chan struct{})
				m := scripted.New(scripted.Turn{Respond: func(model.Request) scripted.Turn {
					<-release
					return scripted.Call(think.FinalAnswerTool, tc.answer)
				}})
				e := newEnvWith(t, envOptions{model: m, store: st, setup: promptSetup, limits: workflow.Limits{MaxEventBytes: limit}})
				answer := sync.OnceFunc(func() { close(release) })
				t.Cleanup(answer) // before the env stops

				key := store.AgentKey{Class: "Helper", Name: "undeliverable"}
				id := with(t, e, key.Name, func(ctx context.Context, h *Helper) (string, error) {
					return h.RunWorkflow(ctx, "TRIAGE_WORKFLOW", promptParams{})
				})
				var sub store.Submission
				eventually(t, 10*time.Second, "the prompt's turn to start", func() bool {
					ss, err := st.ListSubmissions(ctx, key, store.SubmissionFilter{})
					if err != nil || len(ss) != 1 || ss[0].Status != store.SubmissionRunning {
						return false
					}
					sub = ss[0]
					return true
				})
				if tc.terminate {
					with(t, e, key.Name, func(ctx context.Context, h *Helper) (struct{}, error) {
						return struct{}{}, h.TerminateWorkflow(ctx, id)
					})
				}
				answer()

				if !tc.terminate {
					// At once, not after the prompt's hour-long timeout.
					r := promptOutcome(t, st, id)
					if r.Kind != tc.kind || !strings.Contains(r.Err, sub.ID) || !strings.Contains(r.Err, "the limit is 512 bytes") {
						t.Errorf("result %+v, want a %s error naming submission %s and the limit", r, tc.kind, sub.ID)
					}
				}
				outbox := func() []store.OutboxMessage {
					ms, err := st.GetOutbox(ctx, key, sub.ID)
					if err != nil {
						t.Fatal(err)
					}
					return ms
				}
				eventually(t, 10*time.Second, "the outbox message to be done", func() bool {
					ms := outbox()
					return len(ms) == 1 && !ms[0].DeliveredAt.IsZero()
				})
				msg := outbox()[0]
				if !msg.Failed || msg.Payload != nil || msg.Attempts != 0 || msg.Owner != "" {
					t.Errorf("outbox message: failed %v, payload %q, attempts %d, owner %q; want failed, cleared, after one attempt, unclaimed",
						msg.Failed, msg.Payload, msg.Attempts, msg.Owner)
				}
				for _, r := range tc.reason {
					if !strings.Contains(msg.LastError, r) {
						t.Errorf("outbox message's reason %q does not say %q", msg.LastError, r)
					}
				}

				// The outcome stays in the ledger.
				got, err := st.GetSubmission(ctx, key, sub.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != store.SubmissionCompleted || !strings.Contains(string(got.Output), "Crash on save") {
					t.Errorf("submission after delivery failed: %s, output %s", got.Status, got.Output)
				}

				// What reached the instance: the notice, consumed, or nothing.
				evs, err := st.ListEvents(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				var notices []store.Event
				for _, ev := range evs {
					if ev.Type == msg.EventType {
						notices = append(notices, ev)
					}
				}
				if tc.terminate {
					if len(notices) != 0 {
						t.Errorf("events of a finished instance: %+v", notices)
					}
					return
				}
				if len(notices) != 1 || !notices[0].Consumed || len(notices[0].Payload) > limit {
					t.Fatalf("events of type %s: %+v, want the one notice, consumed", msg.EventType, notices)
				}
				var notice struct {
					SubmissionID  string          `json:"submissionId"`
					Status        string          `json:"status"`
					Output        json.RawMessage `json:"output"`
					DeliveryError string          `json:"deliveryError"`
				}
				if err := json.Unmarshal(notices[0].Payload, &notice); err != nil || notice.SubmissionID != sub.ID ||
					notice.Status != string(store.SubmissionCompleted) || string(notice.Output) != "null" || notice.DeliveryError == "" {
					t.Errorf("the notice %s (%v): want the submission, its status, no output and the reason", notices[0].Payload, err)
				}
			})
		}
	}
}

// flakyEvents is a store whose first prompt event fails as a store outage
// would.
type flakyEvents struct {
	store.Store
	failed atomic.Bool
}

// FinishSubmissionAndDeliver leaves every outcome to the outbox, as for an
// instance the submission's end cannot reach, so that its SendEvent runs.
func (s *flakyEvents) FinishSubmissionAndDeliver(ctx context.Context, key store.AgentKey, id, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time, _ store.Delivery) (bool, *store.Instance, error) {
	return false, nil, s.Store.FinishSubmission(ctx, key, id, owner, status, errMsg, output, usage, now)
}

func (s *flakyEvents) SendEvent(ctx context.Context, e store.Event) error {
	if strings.HasPrefix(e.Type, "agentflow:prompt:") && s.failed.CompareAndSwap(false, true) {
		return errors.New("test: the store is briefly unavailable")
	}
	return s.Store.SendEvent(ctx, e)
}

// TestPromptDeliveryRetriesTransient: a delivery that fails for a reason
// that may pass is retried, and the outcome then delivered as it is.
func TestPromptDeliveryRetriesTransient(t *testing.T) {
	t.Parallel()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			st := &flakyEvents{Store: openStore(t, backend)}
			m := scripted.New(scripted.Call(think.FinalAnswerTool, goodDraft))
			e := newEnvWith(t, envOptions{model: m, store: st, setup: promptSetup})
			r := runPrompt(t, e, "flaky", "")
			if r.Draft == nil || r.Draft.Title != "Crash on save" {
				t.Fatalf("result %+v, want the draft", r)
			}
			if !st.failed.Load() {
				t.Fatal("no delivery failed")
			}
			key := store.AgentKey{Class: "Helper", Name: "flaky"}
			ss, err := st.ListSubmissions(t.Context(), key, store.SubmissionFilter{})
			if err != nil || len(ss) != 1 {
				t.Fatalf("submissions: %+v, %v", ss, err)
			}
			eventually(t, 5*time.Second, "the outbox message to be marked delivered", func() bool {
				ms, err := st.GetOutbox(t.Context(), key, ss[0].ID)
				return err == nil && len(ms) == 1 && !ms[0].DeliveredAt.IsZero()
			})
			ms, _ := st.GetOutbox(t.Context(), key, ss[0].ID)
			if m := ms[0]; m.Failed || m.Attempts != 1 || !strings.Contains(m.LastError, "briefly unavailable") {
				t.Errorf("outbox message: failed %v, attempts %d, last error %q; want delivered on the second attempt", m.Failed, m.Attempts, m.LastError)
			}
		})
	}
}
