package storetest

import (
	"slices"
	"testing"
	"time"

	"agentflow/store"
)

// FinishSubmissionAndDeliver: a submission's end that delivers its outbox
// message itself, as an event of the instance, in the same write, and may
// claim the instance it wakes.

// deliverTarget is the instance a delivery case's submission tells.
type deliverTarget int

const (
	targetWaiting   deliverTarget = iota // suspended, waiting for notifyEvent
	targetOtherType                      // suspended, waiting for another event type
	targetExecuting                      // claimed by a node, not suspended
	targetFinished                       // complete
	targetMissing                        // not in the store
)

// deliverOutcome is what a delivery case expects of the instance.
type deliverOutcome int

const (
	outcomeUndelivered deliverOutcome = iota // outbox row undelivered, no event, instance unchanged
	outcomeWoken                             // event buffered, instance due now
	outcomeClaimed                           // event buffered, instance claimed for the claim owner
	outcomeBuffered                          // event buffered, instance otherwise unchanged
)

var finishDeliverCases = []testCase{
	{"Targets", func(t *testing.T, s store.Store) {
		const maxEvent = 1 << 20
		cases := []struct {
			name     string
			target   deliverTarget
			delivery store.Delivery
			want     deliverOutcome
		}{
			{"waiting instance is woken", targetWaiting, store.Delivery{MaxEventBytes: maxEvent}, outcomeWoken},
			{"waiting instance is claimed", targetWaiting,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9"}, outcomeClaimed},
			{"waiting instance of another service is only woken", targetWaiting,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9", ClaimService: "billing"}, outcomeWoken},
			{"instance waiting for another type buffers it", targetOtherType,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9"}, outcomeBuffered},
			{"executing instance buffers it", targetExecuting,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9"}, outcomeBuffered},
			{"finished instance is left to the outbox", targetFinished,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9"}, outcomeUndelivered},
			{"missing instance is left to the outbox", targetMissing,
				store.Delivery{MaxEventBytes: maxEvent, ClaimOwner: "node-9"}, outcomeUndelivered},
			{"payload over the limit is left to the outbox", targetWaiting,
				store.Delivery{MaxEventBytes: 10, ClaimOwner: "node-9"}, outcomeUndelivered},
			{"no limit delivers nothing", targetWaiting, store.Delivery{ClaimOwner: "node-9"}, outcomeUndelivered},
		}
		for i, tc := range cases {
			key := store.AgentKey{Class: "Chat", Name: "deliver-" + string(rune('a'+i))}
			inst, sub := "wf-deliver-"+string(rune('a'+i)), "s1"
			switch tc.target {
			case targetWaiting, targetOtherType:
				typ := notifyEvent
				if tc.target == targetOtherType {
					typ = "other"
				}
				l := start(t, s, inst, "node-1")
				saveStep(t, s, l, doStep(0, "submit", `"s1"`), at(time.Second))
				suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: farFuture, WaitingEvent: typ,
					Step: ptr(waitStep(1, farFuture))}, at(time.Second))
			case targetExecuting:
				start(t, s, inst, "node-1")
			case targetFinished:
				finish(t, s, start(t, s, inst, "node-1"), store.Outcome{Status: store.StatusComplete, Output: []byte(`1`)}, at(time.Second))
			}
			var (
				before      *store.Instance
				stepsBefore []store.Step
			)
			if tc.target != targetMissing {
				before, stepsBefore = get(t, s, inst), steps(t, s, inst)
			}
			createSubmission(t, s, notifySubmission(sub, key, inst, t0))
			wantStarted(t, s, key, "runner", at(time.Second), sub)
			applySubmission(t, s, key, sub, "runner", at(time.Second))

			now := at(3 * time.Second)
			output := `{"text":"x"}`
			payload := outboxPayload(sub, store.SubmissionCompleted, "", output)
			delivered, claimed, err := s.FinishSubmissionAndDeliver(t.Context(), key, sub, "runner", store.SubmissionCompleted, "",
				[]byte(output), store.Usage{InputTokens: 1}, now, tc.delivery)
			if err != nil {
				t.Fatalf("%s: FinishSubmissionAndDeliver: %v", tc.name, err)
			}
			if got := getSubmission(t, s, key, sub); got.Status != store.SubmissionCompleted || got.Owner != "" || got.InputTokens != 1 {
				t.Errorf("%s: submission after the finish: status %s, owner %q, input tokens %d; want completed, no owner, 1",
					tc.name, got.Status, got.Owner, got.InputTokens)
			}
			if wantDelivered := tc.want != outcomeUndelivered; delivered != wantDelivered {
				t.Errorf("%s: delivered %v, want %v", tc.name, delivered, wantDelivered)
			}
			if (claimed != nil) != (tc.want == outcomeClaimed) {
				t.Errorf("%s: claimed %+v, want one: %v", tc.name, claimed, tc.want == outcomeClaimed)
			}

			want := newOutbox(key, sub, inst, payload, now)
			if tc.want != outcomeUndelivered {
				want.Payload, want.DeliveredAt = nil, now
			}
			wantOutbox(t, tc.name, s, key, sub, want)
			// A message delivered in the write is never claimed.
			if tc.want != outcomeUndelivered {
				if ms := claimOutbox(t, s, "node-2", farFuture, 100); len(ms) != 0 {
					t.Errorf("%s: ClaimOutbox claimed %d messages, want none", tc.name, len(ms))
				}
			}
			if tc.target == targetMissing {
				continue
			}

			evs := events(t, s, inst)
			if tc.want == outcomeUndelivered {
				if len(evs) != 0 {
					t.Errorf("%s: %d events, want none", tc.name, len(evs))
				}
				checkInstance(t, tc.name, get(t, s, inst), before)
				continue
			}
			// A claimed instance's wait has taken the event, as TakeEvent
			// would: consumed, and the pending wait step done with it.
			taken := tc.want == outcomeClaimed
			if len(evs) != 1 || evs[0].Type != notifyEvent || !sameJSON(evs[0].Payload, []byte(payload)) ||
				!evs[0].CreatedAt.Equal(now) || evs[0].Consumed != taken || taken && !evs[0].ConsumedAt.Equal(now) {
				t.Errorf("%s: events %+v, want one %q event at %s with payload %s, consumed: %v", tc.name, evs, notifyEvent, fmtTime(now), payload, taken)
			}
			wantSteps := stepsBefore
			if taken {
				wantSteps = slices.Clone(stepsBefore)
				last := &wantSteps[len(wantSteps)-1]
				last.State, last.Result, last.UpdatedAt = store.StepDone, evs[0].Payload, now
			}
			checkSteps(t, tc.name, steps(t, s, inst), wantSteps)
			after := *before
			switch tc.want {
			case outcomeWoken:
				after.WakeAt = now
			case outcomeClaimed:
				after.Owner, after.Fence, after.Status, after.WakeAt, after.WaitingEvent = tc.delivery.ClaimOwner, before.Fence+1, store.StatusRunning, time.Time{}, ""
				after.UpdatedAt = now
				checkInstance(t, tc.name+": the claimed instance returned", claimed, &after)
			}
			checkInstance(t, tc.name, get(t, s, inst), &after)
		}
	}},
	{"RefusedToAnotherRunner", func(t *testing.T, s store.Store) {
		l := start(t, s, "wf-1", "node-1")
		suspend(t, s, l, store.Suspension{Status: store.StatusWaiting, WakeAt: farFuture, WaitingEvent: notifyEvent}, at(time.Second))
		before := snap(t, s, "wf-1")
		createSubmission(t, s, notifySubmission("s1", chatA, "wf-1", t0))
		wantStarted(t, s, chatA, "runner", at(time.Second), "s1")
		thinkBefore := thinkSnap(t, s, chatA)
		delivered, claimed, err := s.FinishSubmissionAndDeliver(t.Context(), chatA, "s1", "another", store.SubmissionCompleted, "",
			nil, store.Usage{}, at(2*time.Second), store.Delivery{MaxEventBytes: 1 << 20, ClaimOwner: "node-9"})
		wantErrNaming(t, "FinishSubmissionAndDeliver by another runner", err, store.ErrLeaseLost, "s1")
		if delivered || claimed != nil {
			t.Errorf("a refused finish delivered %v, claimed %+v", delivered, claimed)
		}
		wantNoOutbox(t, "after a refused finish", s, chatA, "s1")
		checkUnchanged(t, "the instance after a refused finish", s, before)
		checkThinkUnchanged(t, "the ledger after a refused finish", s, thinkBefore)

		// Not finished: the status is refused before anything is written.
		_, _, err = s.FinishSubmissionAndDeliver(t.Context(), chatA, "s1", "runner", store.SubmissionRunning, "",
			nil, store.Usage{}, at(2*time.Second), store.Delivery{MaxEventBytes: 1 << 20})
		if err == nil {
			t.Errorf("FinishSubmissionAndDeliver with status running: no error")
		}
		checkThinkUnchanged(t, "the ledger after a finish as running", s, thinkBefore)
	}},
	{"NoTarget", func(t *testing.T, s store.Store) {
		createSubmission(t, s, newSubmission("s1", chatA, t0, msg("s1")))
		wantStarted(t, s, chatA, "runner", at(time.Second), "s1")
		delivered, claimed, err := s.FinishSubmissionAndDeliver(t.Context(), chatA, "s1", "runner", store.SubmissionCompleted, "",
			nil, store.Usage{}, at(2*time.Second), store.Delivery{MaxEventBytes: 1 << 20, ClaimOwner: "node-9"})
		if err != nil || delivered || claimed != nil {
			t.Errorf("FinishSubmissionAndDeliver of a submission nobody waits for: delivered %v, claimed %+v, err %v; want nothing", delivered, claimed, err)
		}
		wantNoOutbox(t, "a submission nobody waits for", s, chatA, "s1")
		if got := getSubmission(t, s, chatA, "s1"); got.Status != store.SubmissionCompleted {
			t.Errorf("status %s, want completed", got.Status)
		}
	}},
}
