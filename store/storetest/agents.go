package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/store"
)

// Agent keys the agent cases use. Two differ only in name, two only in class.
var (
	counterA = store.AgentKey{Class: "Counter", Name: "a"}
	counterB = store.AgentKey{Class: "Counter", Name: "b"}
	chatA    = store.AgentKey{Class: "Chat", Name: "a"}
	// testClasses are the classes the cases' runtime would have.
	testClasses = []string{"Counter", "Chat"}
)

// liveNode registers a node with a row, so that its claims hold.
func liveNode(t *testing.T, s store.Store, id string) store.Node {
	t.Helper()
	n := store.Node{ID: id, Service: "svc-" + id, Host: "host-" + id, PID: 100 + len(id), Process: "proc-" + id,
		StartedAt: at(-time.Hour), ExpiresAt: at(time.Hour)}
	heartbeat(t, s, n)
	return n
}

func activate(t *testing.T, s store.Store, key store.AgentKey, owner string, now time.Time) store.AgentLease {
	t.Helper()
	a, err := s.ActivateAgent(t.Context(), key, owner, now)
	if err != nil {
		t.Fatalf("ActivateAgent(%s, %q): %v", key, owner, err)
	}
	if a.AgentKey != key || a.Owner != owner {
		t.Fatalf("ActivateAgent(%s, %q) returned agent %s owned by %q", key, owner, a.AgentKey, a.Owner)
	}
	return store.AgentLease{AgentKey: key, Owner: owner, Fence: a.Fence}
}

func getAgent(t *testing.T, s store.Store, key store.AgentKey) *store.Agent {
	t.Helper()
	a, err := s.GetAgent(t.Context(), key)
	if err != nil {
		t.Fatalf("GetAgent(%s): %v", key, err)
	}
	return a
}

func checkAgent(t *testing.T, what string, got, want *store.Agent) {
	t.Helper()
	var d diffs
	eq(&d, "Class", got.Class, want.Class)
	eq(&d, "Name", got.Name, want.Name)
	eqBytes(&d, "State", got.State, want.State)
	eq(&d, "Owner", got.Owner, want.Owner)
	eq(&d, "Fence", got.Fence, want.Fence)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	if len(d) > 0 {
		t.Errorf("%s: agent %s:\n\t%s", what, want.AgentKey, strings.Join(d, "\n\t"))
	}
}

func saveState(t *testing.T, s store.Store, l store.AgentLease, state string, now time.Time) {
	t.Helper()
	if err := s.SaveAgentState(t.Context(), l, []byte(state), now); err != nil {
		t.Fatalf("SaveAgentState(%s, %q, fence %d): %v", l.AgentKey, l.Owner, l.Fence, err)
	}
}

func release(t *testing.T, s store.Store, l store.AgentLease, now time.Time) {
	t.Helper()
	if err := s.ReleaseAgent(t.Context(), l, now); err != nil {
		t.Fatalf("ReleaseAgent(%s, %q, fence %d): %v", l.AgentKey, l.Owner, l.Fence, err)
	}
}

var agentCases = []testCase{
	{"ActivateCreatesRow", func(t *testing.T, s store.Store) {
		a, err := s.ActivateAgent(t.Context(), counterA, "node-1", at(time.Second))
		if err != nil {
			t.Fatalf("ActivateAgent: %v", err)
		}
		want := &store.Agent{AgentKey: counterA, Owner: "node-1", Fence: 1, CreatedAt: at(time.Second), UpdatedAt: at(time.Second)}
		checkAgent(t, "ActivateAgent's result", a, want)
		checkAgent(t, "GetAgent after ActivateAgent", getAgent(t, s, counterA), want)
		if a.State != nil {
			t.Errorf("a new agent has State %q, want nil", a.State)
		}
	}},
	{"GetUnknownAgentIsNotFound", func(t *testing.T, s store.Store) {
		activate(t, s, counterA, "node-1", t0)
		for _, key := range []store.AgentKey{counterB, chatA} {
			_, err := s.GetAgent(t.Context(), key)
			wantErrNaming(t, "GetAgent of an unknown agent", err, store.ErrNotFound, key.String())
		}
	}},
	{"AgentsAreKeyedByClassAndName", func(t *testing.T, s store.Store) {
		for i, key := range []store.AgentKey{counterA, counterB, chatA} {
			owner := fmt.Sprintf("node-%d", i)
			liveNode(t, s, owner)
			if l := activate(t, s, key, owner, t0); l.Fence != 1 {
				t.Errorf("ActivateAgent(%s): fence %d, want 1", key, l.Fence)
			}
		}
		for i, key := range []store.AgentKey{counterA, counterB, chatA} {
			if a := getAgent(t, s, key); a.Owner != fmt.Sprintf("node-%d", i) {
				t.Errorf("%s: owner %q, want node-%d", key, a.Owner, i)
			}
		}
	}},
	{"ReactivateBySameOwnerBumpsFence", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		first := activate(t, s, counterA, "node-1", t0)
		saveState(t, s, first, `{"count":1}`, at(time.Second))
		second := activate(t, s, counterA, "node-1", at(time.Minute))
		if second.Fence != 2 {
			t.Fatalf("second activation: fence %d, want 2", second.Fence)
		}
		checkAgent(t, "after re-activation", getAgent(t, s, counterA), &store.Agent{AgentKey: counterA,
			State: []byte(`{"count":1}`), Owner: "node-1", Fence: 2, CreatedAt: t0, UpdatedAt: at(time.Minute)})
		err := s.SaveAgentState(t.Context(), first, []byte(`{"count":2}`), at(2*time.Minute))
		wantErrNaming(t, "SaveAgentState with the first activation's lease", err, store.ErrLeaseLost, counterA.String())
		saveState(t, s, second, `{"count":2}`, at(2*time.Minute))
	}},
	{"ActivateBlockedByLiveNode", func(t *testing.T, s store.Store) {
		n1 := liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		activate(t, s, counterA, "node-1", t0)
		before := getAgent(t, s, counterA)

		a, err := s.ActivateAgent(t.Context(), counterA, "node-2", at(time.Second))
		if err == nil {
			t.Fatalf("ActivateAgent on node-2 of an agent live on node-1 succeeded: %+v", *a)
		}
		wantErrNaming(t, "ActivateAgent of an agent live elsewhere", err, store.ErrAgentElsewhere, "node-1")
		var owned *store.AgentOwnedError
		if !errors.As(err, &owned) {
			t.Fatalf("ActivateAgent: %v (%T), want an *AgentOwnedError", err, err)
		}
		if owned.Key != counterA {
			t.Errorf("AgentOwnedError.Key = %s, want %s", owned.Key, counterA)
		}
		checkNodes(t, "AgentOwnedError.Node", []store.Node{owned.Node}, []store.Node{n1})
		checkAgent(t, "after the refused activation", getAgent(t, s, counterA), before)
	}},
	{"ActivateAfterOwnerRemoved", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		old := activate(t, s, counterA, "node-1", t0)
		saveState(t, s, old, `{"v":1}`, t0)
		removeNode(t, s, "node-1", at(time.Minute))

		l := activate(t, s, counterA, "node-2", at(2*time.Minute))
		checkAgent(t, "after taking over", getAgent(t, s, counterA), &store.Agent{AgentKey: counterA,
			State: []byte(`{"v":1}`), Owner: "node-2", Fence: 2, CreatedAt: t0, UpdatedAt: at(2 * time.Minute)})
		err := s.SaveAgentState(t.Context(), old, []byte(`{"v":2}`), at(3*time.Minute))
		wantErrNaming(t, "SaveAgentState by the removed node", err, store.ErrLeaseLost, counterA.String())
		saveState(t, s, l, `{"v":3}`, at(3*time.Minute))
	}},
	{"ActivateTakesOverOwnerWithoutRow", func(t *testing.T, s store.Store) {
		// node-1 never had a row (or lost it before it activated): its
		// activation holds nothing.
		activate(t, s, counterA, "node-1", t0)
		if l := activate(t, s, counterA, "node-2", at(time.Second)); l.Fence != 2 {
			t.Errorf("take-over: fence %d, want 2", l.Fence)
		}
	}},
	{"ActivateAfterRelease", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		l := activate(t, s, counterA, "node-1", t0)
		saveState(t, s, l, `1`, t0)
		release(t, s, l, at(time.Second))
		checkAgent(t, "after ReleaseAgent", getAgent(t, s, counterA), &store.Agent{AgentKey: counterA,
			State: []byte(`1`), Owner: "", Fence: 1, CreatedAt: t0, UpdatedAt: at(time.Second)})
		err := s.SaveAgentState(t.Context(), l, []byte(`1`), at(2*time.Second))
		wantErrNaming(t, "SaveAgentState after ReleaseAgent", err, store.ErrLeaseLost, counterA.String())
		if l2 := activate(t, s, counterA, "node-2", at(time.Minute)); l2.Fence != 2 {
			t.Errorf("activation after release: fence %d, want 2", l2.Fence)
		}
	}},
	{"ActivateReportsUnfinishedFibers", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-2")
		unfinished := func(what string, want bool) {
			t.Helper()
			a, err := s.ActivateAgent(t.Context(), counterA, "node-2", at(time.Minute))
			if err != nil {
				t.Fatalf("%s: ActivateAgent: %v", what, err)
			}
			if a.UnfinishedFibers != want {
				t.Errorf("%s: UnfinishedFibers = %v, want %v", what, a.UnfinishedFibers, want)
			}
		}
		unfinished("a new agent", false)
		// The activating node's own fiber, other agents' fibers and
		// finished fibers need no recovery.
		createFiber(t, s, newFiber("mine", counterA, "reindex", t0))
		claimFiber(t, s, counterA, "mine", "node-2", t0)
		for _, key := range []store.AgentKey{counterB, chatA} {
			createFiber(t, s, newFiber("other", key, "reindex", t0))
			claimFiber(t, s, key, "other", "node-1", t0)
		}
		for _, st := range []store.FiberStatus{store.FiberCompleted, store.FiberAborted, store.FiberError} {
			id := "f-" + string(st)
			createFiber(t, s, newFiber(id, counterA, "reindex", t0))
			claimFiber(t, s, counterA, id, "node-1", t0)
			updateFiber(t, s, counterA, id, "node-1", st, "", t0)
		}
		unfinished("only its own, finished and other agents' fibers", false)
		// An interrupted fiber waits for its recovery hook's decision.
		intr := newFiber("intr", counterA, "reindex", t0)
		intr.Status = store.FiberInterrupted
		createFiber(t, s, intr)
		unfinished("an interrupted fiber", true)
		if _, err := s.AbortFiber(t.Context(), counterA, "intr", t0); err != nil {
			t.Fatal(err)
		}
		unfinished("after aborting it", false)

		createFiber(t, s, newFiber("r", counterA, "reindex", at(time.Second)))
		claimFiber(t, s, counterA, "r", "node-1", at(time.Second))
		unfinished("a fiber another node runs", true)
		if _, err := s.InterruptFibers(t.Context(), counterA, "node-2", at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		unfinished("after InterruptFibers (interrupted now)", true)
		if _, err := s.AbortFiber(t.Context(), counterA, "r", at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		createFiber(t, s, newFiber("p", counterA, "reindex", at(2*time.Second)))
		unfinished("a pending fiber nobody runs", true)
	}},
	{"SaveAgentState", func(t *testing.T, s store.Store) {
		l := activate(t, s, counterA, "node-1", t0)
		saveState(t, s, l, `{"count":1}`, at(time.Second))
		want := &store.Agent{AgentKey: counterA, State: []byte(`{"count":1}`), Owner: "node-1", Fence: 1,
			CreatedAt: t0, UpdatedAt: at(time.Second)}
		checkAgent(t, "after the first SaveAgentState", getAgent(t, s, counterA), want)
		saveState(t, s, l, `{"count":2}`, at(2*time.Second))
		want.State, want.UpdatedAt = []byte(`{"count":2}`), at(2*time.Second)
		checkAgent(t, "after the second SaveAgentState", getAgent(t, s, counterA), want)
	}},
	{"SaveAgentStateWithStaleLeaseChangesNothing", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		activate(t, s, counterA, "node-1", t0)
		cur := activate(t, s, counterA, "node-1", at(time.Second))
		saveState(t, s, cur, `{"v":"current"}`, at(2*time.Second))
		before := getAgent(t, s, counterA)

		for _, l := range []store.AgentLease{
			{AgentKey: counterA, Owner: "node-1", Fence: 1},
			{AgentKey: counterA, Owner: "node-2", Fence: cur.Fence},
			{AgentKey: counterA, Owner: "node-1", Fence: cur.Fence + 1},
		} {
			err := s.SaveAgentState(t.Context(), l, []byte(`{"v":"stale"}`), at(time.Minute))
			wantErrNaming(t, fmt.Sprintf("SaveAgentState(owner %s, fence %d)", l.Owner, l.Fence), err, store.ErrLeaseLost, counterA.String())
		}
		checkAgent(t, "after stale writes", getAgent(t, s, counterA), before)

		err := s.SaveAgentState(t.Context(), store.AgentLease{AgentKey: counterB, Owner: "node-1", Fence: 1}, []byte(`1`), t0)
		wantErrNaming(t, "SaveAgentState of an unknown agent", err, store.ErrLeaseLost, counterB.String())
	}},
	{"ReleaseDeletesUnusedAgent", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		l := activate(t, s, counterA, "node-1", t0)
		release(t, s, l, at(time.Second))
		if _, err := s.GetAgent(t.Context(), counterA); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetAgent after releasing an agent that stored nothing: %v, want ErrNotFound", err)
		}
		// Activated again, anywhere, it starts anew at fence 1.
		again := activate(t, s, counterA, "node-2", at(time.Minute))
		checkAgent(t, "after activating it again", getAgent(t, s, counterA), &store.Agent{AgentKey: counterA,
			Owner: "node-2", Fence: 1, CreatedAt: at(time.Minute), UpdatedAt: at(time.Minute)})
		err := s.SaveAgentState(t.Context(), l, []byte(`{"v":"old"}`), at(2*time.Minute))
		wantErrNaming(t, "SaveAgentState with the deleted row's lease on another node", err, store.ErrLeaseLost, counterA.String())
		saveState(t, s, again, `{"v":1}`, at(2*time.Minute))
	}},
	{"ReleaseKeepsAgentThatStoredSomething", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		// What each agent stores, in one table keyed by agents each.
		stores := []struct {
			name  string
			store func(t *testing.T, key store.AgentKey, l store.AgentLease)
		}{
			{"State", func(t *testing.T, key store.AgentKey, l store.AgentLease) { saveState(t, s, l, `{}`, t0) }},
			{"Schedule", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				createSchedule(t, s, newSchedule("sch-"+key.Name, key, at(time.Hour)))
			}},
			{"Fiber", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				createFiber(t, s, newFiber("f", key, "reindex", t0))
			}},
			{"TrackedWorkflow", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				track(t, s, "wf-"+key.Name, key, t0)
			}},
			{"Submission", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				createSubmission(t, s, newSubmission("s1", key, t0, msg("hi")))
			}},
			{"Conversation", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				createSubmission(t, s, newSubmission("s1", key, t0, msg("hi")))
				runSubmission(t, s, key, "s1", "node-1", t0)
				if n, err := s.DeleteSubmissions(t.Context(), key, []string{"s1"}); err != nil || n != 1 {
					t.Fatalf("DeleteSubmissions = %d, %v; want 1", n, err)
				}
			}},
			{"Outbox", func(t *testing.T, key store.AgentKey, _ store.AgentLease) {
				createSubmission(t, s, notifySubmission("s1", key, "wf-waiting", t0))
				wantStarted(t, s, key, "node-1", t0, "s1")
				finishSubmission(t, s, key, "s1", "node-1", store.SubmissionCompleted, t0)
				if n, err := s.DeleteSubmissions(t.Context(), key, []string{"s1"}); err != nil || n != 1 {
					t.Fatalf("DeleteSubmissions = %d, %v; want 1", n, err)
				}
				if ms := getOutbox(t, s, key, "s1"); len(ms) != 1 {
					t.Fatalf("%d outbox messages, want 1", len(ms))
				}
			}},
		}
		for _, st := range stores {
			key := store.AgentKey{Class: "Counter", Name: "stores-" + st.name}
			l := activate(t, s, key, "node-1", t0)
			st.store(t, key, l)
			release(t, s, l, at(time.Second))
			a, err := s.GetAgent(t.Context(), key)
			if err != nil {
				t.Errorf("%s: GetAgent after the release: %v; want the row kept", st.name, err)
				continue
			}
			if a.Owner != "" || a.Fence != 1 {
				t.Errorf("%s: after the release: owner %q, fence %d; want no owner, fence 1", st.name, a.Owner, a.Fence)
			}
			if l2 := activate(t, s, key, "node-1", at(time.Minute)); l2.Fence != 2 {
				t.Errorf("%s: the next activation has fence %d, want 2", st.name, l2.Fence)
			}
		}
	}},
	{"ReleaseIgnoresOtherAgentsRows", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		// Rows of an agent of the same class and of one of the same name.
		for _, other := range []store.AgentKey{counterB, chatA} {
			createSchedule(t, s, newSchedule("sch-"+other.Class+other.Name, other, at(time.Hour)))
			createFiber(t, s, newFiber("f", other, "reindex", t0))
			track(t, s, "wf-"+other.Class+other.Name, other, t0)
			createSubmission(t, s, newSubmission("s1", other, t0, msg("hi")))
			runSubmission(t, s, other, "s1", "node-1", t0)
			createSubmission(t, s, notifySubmission("s2", other, "wf-waiting", t0))
			wantStarted(t, s, other, "node-1", t0, "s2")
			finishSubmission(t, s, other, "s2", "node-1", store.SubmissionCompleted, t0)
			saveState(t, s, activate(t, s, other, "node-1", t0), `{}`, t0)
		}
		release(t, s, activate(t, s, counterA, "node-1", t0), at(time.Second))
		if _, err := s.GetAgent(t.Context(), counterA); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgent(%s) after its release: %v, want ErrNotFound: other agents' rows are not its", counterA, err)
		}
	}},
	{"ReleaseKeepsReactivatedAgent", func(t *testing.T, s store.Store) {
		// A row that was activated more than once is kept, stored
		// something or not: an activation it superseded may still run,
		// and only the fence, which a new row would reset, stops it.
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		activate(t, s, counterA, "node-1", t0)
		same := activate(t, s, counterA, "node-1", at(time.Second)) // by its own node
		release(t, s, same, at(2*time.Second))
		activate(t, s, counterB, "ghost", t0)                        // a node without a row
		taken := activate(t, s, counterB, "node-2", at(time.Second)) // taken over
		release(t, s, taken, at(2*time.Second))
		for _, key := range []store.AgentKey{counterA, counterB} {
			checkAgent(t, "after releasing the second activation", getAgent(t, s, key), &store.Agent{AgentKey: key,
				Owner: "", Fence: 2, CreatedAt: t0, UpdatedAt: at(2 * time.Second)})
			stale := store.AgentLease{AgentKey: key, Owner: "node-1", Fence: 1}
			if key == counterB {
				stale.Owner = "ghost"
			}
			err := s.SaveAgentState(t.Context(), stale, []byte(`{"v":"stale"}`), at(time.Minute))
			wantErrNaming(t, "SaveAgentState by the superseded activation", err, store.ErrLeaseLost, key.String())
		}
	}},
	{"ReleaseWithStaleLeaseIsNoOp", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		activate(t, s, counterA, "node-1", t0)
		cur := activate(t, s, counterA, "node-1", at(time.Second))
		before := getAgent(t, s, counterA)
		release(t, s, store.AgentLease{AgentKey: counterA, Owner: "node-1", Fence: 1}, at(time.Minute))
		release(t, s, store.AgentLease{AgentKey: counterA, Owner: "node-2", Fence: cur.Fence}, at(time.Minute))
		checkAgent(t, "after stale releases", getAgent(t, s, counterA), before)

		release(t, s, store.AgentLease{AgentKey: counterB, Owner: "node-1", Fence: 1}, at(time.Minute))
		if _, err := s.GetAgent(t.Context(), counterB); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetAgent after releasing an unknown agent: %v, want ErrNotFound", err)
		}
	}},
}

// Schedules.

func newSchedule(id string, key store.AgentKey, next time.Time) *store.Schedule {
	return &store.Schedule{ID: id, AgentKey: key, Method: "Tick", Payload: []byte(`{"id":"` + id + `"}`),
		Kind: store.ScheduleDelayed, NextRunAt: next, CreatedAt: t0}
}

func createSchedule(t *testing.T, s store.Store, sc *store.Schedule) *store.Schedule {
	t.Helper()
	got, created, err := s.CreateSchedule(t.Context(), sc)
	if err != nil {
		t.Fatalf("CreateSchedule(%s): %v", sc.ID, err)
	}
	if !created {
		t.Fatalf("CreateSchedule(%s) created nothing, returned %s", sc.ID, got.ID)
	}
	return got
}

func getSchedule(t *testing.T, s store.Store, key store.AgentKey, id string) *store.Schedule {
	t.Helper()
	sc, err := s.GetSchedule(t.Context(), key, id)
	if err != nil {
		t.Fatalf("GetSchedule(%s, %s): %v", key, id, err)
	}
	return sc
}

func scheduleDiffs(got, want *store.Schedule) diffs {
	var d diffs
	eq(&d, "ID", got.ID, want.ID)
	eq(&d, "Class", got.Class, want.Class)
	eq(&d, "Name", got.Name, want.Name)
	eq(&d, "Method", got.Method, want.Method)
	eqBytes(&d, "Payload", got.Payload, want.Payload)
	eq(&d, "Kind", got.Kind, want.Kind)
	eq(&d, "Cron", got.Cron, want.Cron)
	eq(&d, "Interval", got.Interval, want.Interval)
	eq(&d, "IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	eqTime(&d, "NextRunAt", got.NextRunAt, want.NextRunAt)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eq(&d, "Owner", got.Owner, want.Owner)
	return d
}

func checkSchedule(t *testing.T, what string, got, want *store.Schedule) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no schedule, want %s", what, want.ID)
		return
	}
	if d := scheduleDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: schedule %s:\n\t%s", what, want.ID, strings.Join(d, "\n\t"))
	}
}

func listSchedules(t *testing.T, s store.Store, key store.AgentKey, f store.ScheduleFilter) []string {
	t.Helper()
	scs, err := s.ListSchedules(t.Context(), key, f)
	if err != nil {
		t.Fatalf("ListSchedules(%s, %+v): %v", key, f, err)
	}
	ids := make([]string, len(scs))
	for i, sc := range scs {
		if sc.AgentKey != key {
			t.Errorf("ListSchedules(%s) returned %s of %s", key, sc.ID, sc.AgentKey)
		}
		ids[i] = sc.ID
	}
	return ids
}

func claimSchedules(t *testing.T, s store.Store, owner string, now time.Time, limit int) []*store.Schedule {
	t.Helper()
	got, err := s.ClaimDueSchedules(t.Context(), owner, testClasses, now, limit)
	if err != nil {
		t.Fatalf("ClaimDueSchedules(%q, %s, %d): %v", owner, fmtTime(now), limit, err)
	}
	if len(got) > limit {
		t.Fatalf("ClaimDueSchedules(limit %d) claimed %d schedules", limit, len(got))
	}
	for _, sc := range got {
		if sc.Owner != owner {
			t.Errorf("ClaimDueSchedules(%q) returned %s owned by %q", owner, sc.ID, sc.Owner)
		}
		if sc.NextRunAt.After(now) {
			t.Errorf("ClaimDueSchedules at %s claimed %s due at %s", fmtTime(now), sc.ID, fmtTime(sc.NextRunAt))
		}
	}
	return got
}

// wantClaimed claims and requires exactly the schedules ids, in that order.
func wantClaimed(t *testing.T, s store.Store, owner string, now time.Time, limit int, ids ...string) []*store.Schedule {
	t.Helper()
	got := claimSchedules(t, s, owner, now, limit)
	if g := scheduleIDs(got); !slices.Equal(g, ids) {
		t.Fatalf("ClaimDueSchedules(%q, %s, %d) claimed %q, want %q", owner, fmtTime(now), limit, g, ids)
	}
	return got
}

func scheduleIDs(scs []*store.Schedule) []string {
	ids := make([]string, 0, len(scs))
	for _, sc := range scs {
		ids = append(ids, sc.ID)
	}
	return ids
}

func reschedule(t *testing.T, s store.Store, id, owner string, next time.Time) {
	t.Helper()
	if err := s.RescheduleSchedule(t.Context(), id, owner, next); err != nil {
		t.Fatalf("RescheduleSchedule(%s, %q, %s): %v", id, owner, fmtTime(next), err)
	}
}

func nextScheduleTimes(t *testing.T, s store.Store, until time.Time, limit int) []time.Time {
	t.Helper()
	ts, err := s.NextScheduleTimes(t.Context(), testClasses, until, limit)
	if err != nil {
		t.Fatalf("NextScheduleTimes(%s, %d): %v", fmtTime(until), limit, err)
	}
	return ts
}

var scheduleCases = []testCase{
	{"CreateAndGetEveryKind", func(t *testing.T, s store.Store) {
		scs := []*store.Schedule{
			{ID: "cron", AgentKey: counterA, Method: "Report", Payload: []byte(`{"to":"ops"}`), Kind: store.ScheduleCron,
				Cron: "CRON_TZ=Europe/London 0 9 * * 1-5", IdempotencyKey: "report-daily", NextRunAt: at(time.Hour), CreatedAt: t0},
			{ID: "every", AgentKey: counterA, Method: "Poll", Payload: []byte(`null`), Kind: store.ScheduleInterval,
				Interval: 90*time.Second + time.Microsecond, NextRunAt: at(90 * time.Second), CreatedAt: at(time.Second)},
			{ID: "later", AgentKey: counterA, Method: "Remind", Kind: store.ScheduleDelayed, NextRunAt: at(time.Minute), CreatedAt: t0},
			{ID: "at", AgentKey: counterB, Method: "Remind", Payload: []byte(`{}`), Kind: store.ScheduleScheduled,
				NextRunAt: at(-time.Minute), CreatedAt: t0},
		}
		for _, sc := range scs {
			got := createSchedule(t, s, sc)
			checkSchedule(t, "CreateSchedule's result", got, sc)
			checkSchedule(t, "GetSchedule", getSchedule(t, s, sc.AgentKey, sc.ID), sc)
		}
		if sc := getSchedule(t, s, counterA, "later"); sc.Payload != nil {
			t.Errorf("a schedule without a payload has Payload %q, want nil", sc.Payload)
		}
	}},
	{"GetUnknownScheduleIsNotFound", func(t *testing.T, s store.Store) {
		createSchedule(t, s, newSchedule("s1", counterA, t0))
		_, err := s.GetSchedule(t.Context(), counterB, "s1")
		wantErrNaming(t, "GetSchedule of another agent's schedule", err, store.ErrNotFound, "s1")
		wantErrNaming(t, "GetSchedule of another agent's schedule", err, store.ErrNotFound, counterB.String())
		_, err = s.GetSchedule(t.Context(), counterA, "nope")
		wantErrNaming(t, "GetSchedule of an unknown id", err, store.ErrNotFound, "nope")
	}},
	{"IdempotencyKeyReturnsExisting", func(t *testing.T, s store.Store) {
		first := newSchedule("s1", counterA, at(time.Hour))
		first.IdempotencyKey = "daily"
		createSchedule(t, s, first)

		again := newSchedule("s2", counterA, at(2*time.Hour))
		again.IdempotencyKey, again.Method = "daily", "Other"
		got, created, err := s.CreateSchedule(t.Context(), again)
		if err != nil {
			t.Fatalf("CreateSchedule with an existing key: %v", err)
		}
		if created {
			t.Fatal("CreateSchedule with an existing key created a schedule")
		}
		checkSchedule(t, "CreateSchedule with an existing key", got, first)
		if ids := listSchedules(t, s, counterA, store.ScheduleFilter{}); !slices.Equal(ids, []string{"s1"}) {
			t.Errorf("schedules after the idempotent create: %q, want [s1]", ids)
		}

		// Keys are per agent; schedules without a key never collide.
		other := newSchedule("s3", counterB, at(time.Hour))
		other.IdempotencyKey = "daily"
		createSchedule(t, s, other)
		createSchedule(t, s, newSchedule("s4", counterA, at(time.Hour)))
		createSchedule(t, s, newSchedule("s5", counterA, at(time.Hour)))
		if ids := listSchedules(t, s, counterA, store.ScheduleFilter{}); !slices.Equal(ids, []string{"s1", "s4", "s5"}) {
			t.Errorf("schedules of %s: %q, want [s1 s4 s5]", counterA, ids)
		}
	}},
	{"DuplicateIDFails", func(t *testing.T, s store.Store) {
		createSchedule(t, s, newSchedule("s1", counterA, t0))
		for _, key := range []store.AgentKey{counterA, counterB} {
			_, _, err := s.CreateSchedule(t.Context(), newSchedule("s1", key, at(time.Hour)))
			wantErrNaming(t, "CreateSchedule with an existing id", err, store.ErrDuplicateID, "s1")
		}
		checkSchedule(t, "after the failed creates", getSchedule(t, s, counterA, "s1"), newSchedule("s1", counterA, t0))
		if ids := listSchedules(t, s, counterB, store.ScheduleFilter{}); len(ids) != 0 {
			t.Errorf("schedules of %s: %q, want none", counterB, ids)
		}
	}},
	{"ListFiltersByKindAndTimeOrdered", func(t *testing.T, s store.Store) {
		for _, c := range []struct {
			id   string
			kind store.ScheduleKind
			next time.Duration
		}{
			{"e", store.ScheduleDelayed, 3 * time.Minute},
			{"b", store.ScheduleCron, time.Minute},
			{"a", store.ScheduleInterval, 2 * time.Minute},
			{"d", store.ScheduleDelayed, time.Minute},
			{"c", store.ScheduleScheduled, 5 * time.Minute},
		} {
			sc := newSchedule(c.id, counterA, at(c.next))
			sc.Kind = c.kind
			createSchedule(t, s, sc)
		}
		createSchedule(t, s, newSchedule("x", counterB, at(time.Minute)))

		for _, c := range []struct {
			name string
			f    store.ScheduleFilter
			want []string
		}{
			{"all", store.ScheduleFilter{}, []string{"b", "d", "a", "e", "c"}},
			{"delayed", store.ScheduleFilter{Kind: store.ScheduleDelayed}, []string{"d", "e"}},
			{"cron", store.ScheduleFilter{Kind: store.ScheduleCron}, []string{"b"}},
			{"from", store.ScheduleFilter{From: at(2 * time.Minute)}, []string{"a", "e", "c"}},
			{"to", store.ScheduleFilter{To: at(2 * time.Minute)}, []string{"b", "d", "a"}},
			{"inclusive range", store.ScheduleFilter{From: at(time.Minute), To: at(3 * time.Minute)}, []string{"b", "d", "a", "e"}},
			{"kind and range", store.ScheduleFilter{Kind: store.ScheduleDelayed, From: at(2 * time.Minute), To: at(4 * time.Minute)}, []string{"e"}},
			{"empty range", store.ScheduleFilter{From: at(6 * time.Minute)}, []string{}},
		} {
			if got := listSchedules(t, s, counterA, c.f); !slices.Equal(got, c.want) {
				t.Errorf("ListSchedules %s: %q, want %q", c.name, got, c.want)
			}
		}
		if got := listSchedules(t, s, counterB, store.ScheduleFilter{}); !slices.Equal(got, []string{"x"}) {
			t.Errorf("ListSchedules of %s: %q, want [x]", counterB, got)
		}
		if got := listSchedules(t, s, chatA, store.ScheduleFilter{}); len(got) != 0 {
			t.Errorf("ListSchedules of an agent without schedules: %q", got)
		}
	}},
	{"DeleteReportsExistence", func(t *testing.T, s store.Store) {
		createSchedule(t, s, newSchedule("s1", counterA, t0))
		del := func(key store.AgentKey, id string) bool {
			t.Helper()
			ok, err := s.DeleteSchedule(t.Context(), key, id)
			if err != nil {
				t.Fatalf("DeleteSchedule(%s, %s): %v", key, id, err)
			}
			return ok
		}
		if del(counterB, "s1") {
			t.Error("DeleteSchedule of another agent's schedule reported it existed")
		}
		getSchedule(t, s, counterA, "s1")
		if !del(counterA, "s1") {
			t.Error("DeleteSchedule of an existing schedule reported it did not exist")
		}
		if del(counterA, "s1") {
			t.Error("second DeleteSchedule reported the schedule existed")
		}
		_, err := s.GetSchedule(t.Context(), counterA, "s1")
		wantErr(t, "GetSchedule after DeleteSchedule", err, store.ErrNotFound)
	}},
	{"RescheduleFencedByOwner", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		sc := createSchedule(t, s, newSchedule("s1", counterA, t0))
		wantClaimed(t, s, "node-1", t0, 10, "s1")
		claimed := *sc
		claimed.Owner = "node-1"

		err := s.RescheduleSchedule(t.Context(), "s1", "node-2", at(time.Hour))
		wantErrNaming(t, "RescheduleSchedule by a node without the claim", err, store.ErrLeaseLost, "s1")
		checkSchedule(t, "after the refused reschedule", getSchedule(t, s, counterA, "s1"), &claimed)

		reschedule(t, s, "s1", "node-1", at(time.Hour))
		want := *sc
		want.NextRunAt = at(time.Hour)
		checkSchedule(t, "after RescheduleSchedule", getSchedule(t, s, counterA, "s1"), &want)

		err = s.RescheduleSchedule(t.Context(), "s1", "node-1", at(2*time.Hour))
		wantErrNaming(t, "RescheduleSchedule of an unclaimed schedule", err, store.ErrLeaseLost, "s1")
		wantClaimed(t, s, "node-2", at(time.Minute), 10)
		wantClaimed(t, s, "node-2", at(time.Hour), 10, "s1")
	}},
	{"RescheduleAfterDeleteIsNotFound", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		createSchedule(t, s, newSchedule("s1", counterA, t0))
		wantClaimed(t, s, "node-1", t0, 10, "s1")
		if ok, err := s.DeleteSchedule(t.Context(), counterA, "s1"); err != nil || !ok {
			t.Fatalf("DeleteSchedule = %v, %v", ok, err)
		}
		err := s.RescheduleSchedule(t.Context(), "s1", "node-1", at(time.Hour))
		wantErrNaming(t, "RescheduleSchedule of a deleted schedule", err, store.ErrNotFound, "s1")
		err = s.RescheduleSchedule(t.Context(), "never", "node-1", at(time.Hour))
		wantErrNaming(t, "RescheduleSchedule of an unknown schedule", err, store.ErrNotFound, "never")
	}},
	{"NextScheduleTimes", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		createSchedule(t, s, newSchedule("a", counterA, at(-time.Minute)))
		wantClaimed(t, s, "node-1", at(-time.Minute), 10, "a") // held by a live node
		createSchedule(t, s, newSchedule("b", counterA, at(time.Minute)))
		createSchedule(t, s, newSchedule("c", counterB, at(2*time.Minute)))
		createSchedule(t, s, newSchedule("d", chatA, at(10*time.Minute)))
		createSchedule(t, s, newSchedule("e", chatA, at(-2*time.Minute)))
		wantClaimed(t, s, "ghost", at(-2*time.Minute), 10, "e") // held by a node without a row: free

		for _, c := range []struct {
			until time.Time
			limit int
			want  []time.Time
		}{
			{at(2 * time.Minute), 10, []time.Time{at(-2 * time.Minute), at(time.Minute), at(2 * time.Minute)}},
			{at(2 * time.Minute), 2, []time.Time{at(-2 * time.Minute), at(time.Minute)}},
			{farFuture, 10, []time.Time{at(-2 * time.Minute), at(time.Minute), at(2 * time.Minute), at(10 * time.Minute)}},
			{at(-3 * time.Minute), 10, nil},
		} {
			if got := nextScheduleTimes(t, s, c.until, c.limit); !equalTimes(got, c.want) {
				t.Errorf("NextScheduleTimes(%s, %d) = %s, want %s", fmtTime(c.until), c.limit, fmtTimes(got), fmtTimes(c.want))
			}
		}
	}},
}

var claimSchedulesCases = []testCase{
	{"OnlyTheGivenClasses", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		other := store.AgentKey{Class: "Mailer", Name: "a"} // another service's class
		createSchedule(t, s, newSchedule("mine", counterA, at(-time.Second)))
		createSchedule(t, s, newSchedule("theirs", other, at(-2*time.Second)))
		if ts := nextScheduleTimes(t, s, t0, 10); len(ts) != 1 || !ts[0].Equal(at(-time.Second)) {
			t.Errorf("NextScheduleTimes for %v = %s, want only mine", testClasses, fmtTimes(ts))
		}
		wantClaimed(t, s, "node-1", t0, 10, "mine")
		got, err := s.ClaimDueSchedules(t.Context(), "node-1", []string{"Mailer"}, t0, 10)
		if err != nil || len(got) != 1 || got[0].ID != "theirs" {
			t.Fatalf("ClaimDueSchedules for Mailer = %v, %v; want theirs", scheduleIDs(got), err)
		}
		if got, err := s.ClaimDueSchedules(t.Context(), "node-1", nil, t0, 10); err != nil || len(got) != 0 {
			t.Errorf("ClaimDueSchedules for no class = %v, %v; want none", scheduleIDs(got), err)
		}
	}},
	{"DueTimeLimitAndOrder", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		created := map[string]*store.Schedule{}
		for _, c := range []struct {
			id   string
			next time.Duration
		}{
			{"late", time.Second}, {"s3", -time.Second}, {"s2b", -2 * time.Second}, {"s2a", -2 * time.Second},
			{"s1", -3 * time.Second}, {"now", 0},
		} {
			created[c.id] = createSchedule(t, s, newSchedule(c.id, counterA, at(c.next)))
		}
		got := wantClaimed(t, s, "node-1", t0, 2, "s1", "s2a")
		for _, sc := range got {
			want := *created[sc.ID]
			want.Owner = "node-1"
			checkSchedule(t, "claimed schedule", sc, &want)
			checkSchedule(t, "GetSchedule after the claim", getSchedule(t, s, counterA, sc.ID), &want)
		}
		wantClaimed(t, s, "node-1", t0, 10, "s2b", "s3", "now")
		wantClaimed(t, s, "node-1", t0, 10)
		wantClaimed(t, s, "node-1", at(time.Second), 10, "late")
	}},
	{"ClaimedNotReclaimedWhileClaimantAlive", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		createSchedule(t, s, newSchedule("s1", counterA, t0))
		wantClaimed(t, s, "node-1", t0, 10, "s1")
		wantClaimed(t, s, "node-2", farFuture, 10)
		wantClaimed(t, s, "node-1", farFuture, 10)
		if ts := nextScheduleTimes(t, s, farFuture, 10); len(ts) != 0 {
			t.Errorf("NextScheduleTimes lists a claimed schedule: %s", fmtTimes(ts))
		}
	}},
	{"ReclaimableWhenClaimantHasNoRow", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		createSchedule(t, s, newSchedule("a", counterA, at(-time.Second)))
		createSchedule(t, s, newSchedule("b", counterA, t0))
		wantClaimed(t, s, "ghost", t0, 1, "a")
		// ghost has no node row, so its claim is free.
		wantClaimed(t, s, "node-1", t0, 1, "a")
		wantClaimed(t, s, "node-2", t0, 10, "b")
		wantClaimed(t, s, "node-2", t0, 10)
		removeNode(t, s, "node-1", at(time.Second))
		wantClaimed(t, s, "node-2", t0, 10, "a")
	}},
	{"SkipsAgentsLiveOnAnotherNode", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		liveNode(t, s, "node-2")
		activate(t, s, counterA, "node-1", t0)
		activate(t, s, counterB, "ghost", t0) // live on a node without a row: nowhere
		released := activate(t, s, store.AgentKey{Class: "Counter", Name: "c"}, "node-1", t0)
		release(t, s, released, t0)
		createSchedule(t, s, newSchedule("a", counterA, at(-3*time.Second)))
		createSchedule(t, s, newSchedule("b", counterB, at(-2*time.Second)))
		createSchedule(t, s, newSchedule("c", released.AgentKey, at(-time.Second)))
		createSchedule(t, s, newSchedule("d", chatA, t0)) // no agent row yet

		wantClaimed(t, s, "node-2", t0, 10, "b", "c", "d")
		wantClaimed(t, s, "node-1", t0, 10, "a") // its own agent
		reschedule(t, s, "a", "node-1", t0)
		wantClaimed(t, s, "node-2", t0, 10)
		removeNode(t, s, "node-1", at(time.Second))
		wantClaimed(t, s, "node-2", t0, 10, "a")
	}},
}

// Fibers.

func newFiber(id string, key store.AgentKey, name string, created time.Time) *store.Fiber {
	return &store.Fiber{ID: id, AgentKey: key, Name: name, Metadata: []byte(`{"fiber":"` + id + `"}`),
		Status: store.FiberPending, CreatedAt: created}
}

func createFiber(t *testing.T, s store.Store, f *store.Fiber) *store.Fiber {
	t.Helper()
	got, created, err := s.CreateFiber(t.Context(), f)
	if err != nil {
		t.Fatalf("CreateFiber(%s): %v", f.ID, err)
	}
	if !created {
		t.Fatalf("CreateFiber(%s) created nothing, returned %s", f.ID, got.ID)
	}
	return got
}

func getFiber(t *testing.T, s store.Store, key store.AgentKey, id string) *store.Fiber {
	t.Helper()
	f, err := s.GetFiber(t.Context(), key, id)
	if err != nil {
		t.Fatalf("GetFiber(%s, %s): %v", key, id, err)
	}
	return f
}

func claimFiber(t *testing.T, s store.Store, key store.AgentKey, id, owner string, now time.Time) *store.Fiber {
	t.Helper()
	f, err := s.ClaimFiber(t.Context(), key, id, owner, now)
	if err != nil {
		t.Fatalf("ClaimFiber(%s, %s, %q): %v", key, id, owner, err)
	}
	return f
}

func updateFiber(t *testing.T, s store.Store, key store.AgentKey, id, owner string, status store.FiberStatus, errMsg string, now time.Time) {
	t.Helper()
	if err := s.UpdateFiber(t.Context(), key, id, owner, status, errMsg, now); err != nil {
		t.Fatalf("UpdateFiber(%s, %s, %q, %s): %v", key, id, owner, status, err)
	}
}

func fiberDiffs(got, want *store.Fiber) diffs {
	var d diffs
	eq(&d, "ID", got.ID, want.ID)
	eq(&d, "Class", got.Class, want.Class)
	eq(&d, "AgentKey.Name", got.AgentKey.Name, want.AgentKey.Name)
	eq(&d, "Name", got.Name, want.Name)
	eq(&d, "IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	eqBytes(&d, "Metadata", got.Metadata, want.Metadata)
	eq(&d, "Status", got.Status, want.Status)
	eqBytes(&d, "Stash", got.Stash, want.Stash)
	eq(&d, "Error", got.Error, want.Error)
	eq(&d, "Owner", got.Owner, want.Owner)
	eqTime(&d, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(&d, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	eqTime(&d, "FinishedAt", got.FinishedAt, want.FinishedAt)
	return d
}

func checkFiber(t *testing.T, what string, got, want *store.Fiber) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no fiber, want %s", what, want.ID)
		return
	}
	if d := fiberDiffs(got, want); len(d) > 0 {
		t.Errorf("%s: fiber %s:\n\t%s", what, want.ID, strings.Join(d, "\n\t"))
	}
}

func fiberIDs(fs []store.Fiber) []string {
	ids := make([]string, 0, len(fs))
	for _, f := range fs {
		ids = append(ids, f.ID)
	}
	return ids
}

func listFibers(t *testing.T, s store.Store, key store.AgentKey, f store.FiberFilter) []string {
	t.Helper()
	fs, err := s.ListFibers(t.Context(), key, f)
	if err != nil {
		t.Fatalf("ListFibers(%s, %+v): %v", key, f, err)
	}
	for _, fb := range fs {
		if fb.AgentKey != key {
			t.Errorf("ListFibers(%s) returned %s of %s", key, fb.ID, fb.AgentKey)
		}
	}
	return fiberIDs(fs)
}

var fiberCases = []testCase{
	{"CreateAndGet", func(t *testing.T, s store.Store) {
		f := &store.Fiber{ID: "f1", AgentKey: counterA, Name: "reindex", IdempotencyKey: "k1",
			Metadata: []byte(`{"shard":3}`), Status: store.FiberPending, CreatedAt: at(time.Second)}
		got := createFiber(t, s, f)
		want := *f
		want.UpdatedAt = f.CreatedAt
		checkFiber(t, "CreateFiber's result", got, &want)
		checkFiber(t, "GetFiber", getFiber(t, s, counterA, "f1"), &want)

		bare := createFiber(t, s, &store.Fiber{ID: "f2", AgentKey: counterA, Name: "export", CreatedAt: t0})
		checkFiber(t, "a fiber created without a status", bare, &store.Fiber{ID: "f2", AgentKey: counterA,
			Name: "export", Status: store.FiberPending, CreatedAt: t0, UpdatedAt: t0})
		if bare.Metadata != nil || bare.Stash != nil {
			t.Errorf("a fiber without metadata: Metadata %q Stash %q, want nil", bare.Metadata, bare.Stash)
		}
	}},
	{"GetUnknownFiberIsNotFound", func(t *testing.T, s store.Store) {
		createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		_, err := s.GetFiber(t.Context(), counterB, "f1")
		wantErrNaming(t, "GetFiber of another agent's fiber", err, store.ErrNotFound, "f1")
		wantErrNaming(t, "GetFiber of another agent's fiber", err, store.ErrNotFound, counterB.String())
		_, err = s.GetFiber(t.Context(), counterA, "nope")
		wantErrNaming(t, "GetFiber of an unknown id", err, store.ErrNotFound, "nope")
	}},
	{"CreateIdempotentByID", func(t *testing.T, s store.Store) {
		first := createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		again := newFiber("f1", counterA, "export", at(time.Minute))
		again.IdempotencyKey = "new-key"
		got, created, err := s.CreateFiber(t.Context(), again)
		if err != nil || created {
			t.Fatalf("CreateFiber with an existing id = created %v, %v; want the existing fiber", created, err)
		}
		checkFiber(t, "CreateFiber with an existing id", got, first)
		if ids := listFibers(t, s, counterA, store.FiberFilter{}); !slices.Equal(ids, []string{"f1"}) {
			t.Errorf("fibers: %q, want [f1]", ids)
		}
	}},
	{"CreateIdempotentByKey", func(t *testing.T, s store.Store) {
		f := newFiber("f1", counterA, "reindex", t0)
		f.IdempotencyKey = "k"
		first := createFiber(t, s, f)
		again := newFiber("f2", counterA, "reindex", at(time.Minute))
		again.IdempotencyKey = "k"
		got, created, err := s.CreateFiber(t.Context(), again)
		if err != nil || created {
			t.Fatalf("CreateFiber with an existing key = created %v, %v; want the existing fiber", created, err)
		}
		checkFiber(t, "CreateFiber with an existing key", got, first)
		if _, err := s.GetFiber(t.Context(), counterA, "f2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetFiber of the fiber not created: %v, want ErrNotFound", err)
		}
	}},
	{"IDAndKeyOfDifferentFibersFails", func(t *testing.T, s store.Store) {
		f1 := newFiber("f1", counterA, "reindex", t0)
		f1.IdempotencyKey = "k1"
		f2 := newFiber("f2", counterA, "reindex", t0)
		f2.IdempotencyKey = "k2"
		createFiber(t, s, f1)
		createFiber(t, s, f2)
		clash := newFiber("f1", counterA, "reindex", at(time.Minute))
		clash.IdempotencyKey = "k2"
		_, _, err := s.CreateFiber(t.Context(), clash)
		wantErrNaming(t, "CreateFiber whose id and key name different fibers", err, store.ErrDuplicateID, "f1")
	}},
	{"IDsAndKeysArePerAgent", func(t *testing.T, s store.Store) {
		for _, key := range []store.AgentKey{counterA, counterB, chatA} {
			f := newFiber("f1", key, "reindex", t0)
			f.IdempotencyKey = "k"
			createFiber(t, s, f)
		}
		for _, key := range []store.AgentKey{counterA, counterB, chatA} {
			if f := getFiber(t, s, key, "f1"); f.AgentKey != key {
				t.Errorf("GetFiber(%s, f1) returned the fiber of %s", key, f.AgentKey)
			}
		}
	}},
	{"ListOldestFirstAndFilters", func(t *testing.T, s store.Store) {
		createFiber(t, s, newFiber("f3", counterA, "reindex", t0))
		createFiber(t, s, newFiber("f2", counterA, "reindex", at(time.Second)))
		createFiber(t, s, newFiber("f1", counterA, "export", at(time.Second)))
		createFiber(t, s, newFiber("x", counterB, "reindex", t0))
		claimFiber(t, s, counterA, "f1", "node-1", at(time.Minute))

		for _, c := range []struct {
			name string
			f    store.FiberFilter
			want []string
		}{
			{"all", store.FiberFilter{}, []string{"f3", "f1", "f2"}},
			{"running", store.FiberFilter{Status: store.FiberRunning}, []string{"f1"}},
			{"reindex", store.FiberFilter{Name: "reindex"}, []string{"f3", "f2"}},
			{"pending reindex", store.FiberFilter{Status: store.FiberPending, Name: "reindex"}, []string{"f3", "f2"}},
			{"pending export", store.FiberFilter{Status: store.FiberPending, Name: "export"}, []string{}},
		} {
			if got := listFibers(t, s, counterA, c.f); !slices.Equal(got, c.want) {
				t.Errorf("ListFibers %s: %q, want %q", c.name, got, c.want)
			}
		}
		if got := listFibers(t, s, chatA, store.FiberFilter{}); len(got) != 0 {
			t.Errorf("ListFibers of an agent without fibers: %q", got)
		}
	}},
	{"ClaimFiber", func(t *testing.T, s store.Store) {
		f := createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		got := claimFiber(t, s, counterA, "f1", "node-1", at(time.Second))
		want := *f
		want.Status, want.Owner, want.UpdatedAt = store.FiberRunning, "node-1", at(time.Second)
		checkFiber(t, "ClaimFiber's result", got, &want)
		checkFiber(t, "GetFiber after ClaimFiber", getFiber(t, s, counterA, "f1"), &want)

		// Claiming moves the fiber to its new runner; the old one is fenced out.
		claimFiber(t, s, counterA, "f1", "node-2", at(2*time.Second))
		err := s.UpdateFiber(t.Context(), counterA, "f1", "node-1", store.FiberCompleted, "", at(3*time.Second))
		wantErrNaming(t, "UpdateFiber by the former runner", err, store.ErrLeaseLost, "f1")

		updateFiber(t, s, counterA, "f1", "node-2", store.FiberCompleted, "", at(3*time.Second))
		before := getFiber(t, s, counterA, "f1")
		_, err = s.ClaimFiber(t.Context(), counterA, "f1", "node-1", at(4*time.Second))
		wantErrNaming(t, "ClaimFiber of a finished fiber", err, store.ErrFinished, "f1")
		checkFiber(t, "after claiming a finished fiber", getFiber(t, s, counterA, "f1"), before)

		_, err = s.ClaimFiber(t.Context(), counterA, "nope", "node-1", at(4*time.Second))
		wantErrNaming(t, "ClaimFiber of an unknown fiber", err, store.ErrNotFound, "nope")
		_, err = s.ClaimFiber(t.Context(), counterB, "f1", "node-1", at(4*time.Second))
		wantErrNaming(t, "ClaimFiber of another agent's fiber", err, store.ErrNotFound, "f1")

		// An interrupted fiber is not finished: its recovery may resume it.
		intr := newFiber("f2", counterA, "reindex", t0)
		intr.Status = store.FiberInterrupted
		createFiber(t, s, intr)
		if got := claimFiber(t, s, counterA, "f2", "node-1", at(5*time.Second)); got.Status != store.FiberRunning {
			t.Errorf("claimed interrupted fiber: status %s, want running", got.Status)
		}
	}},
	{"UpdateFiberFenced", func(t *testing.T, s store.Store) {
		createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		claimFiber(t, s, counterA, "f1", "node-1", at(time.Second))
		before := getFiber(t, s, counterA, "f1")
		err := s.UpdateFiber(t.Context(), counterA, "f1", "node-2", store.FiberError, "boom", at(2*time.Second))
		wantErrNaming(t, "UpdateFiber by a node that does not run it", err, store.ErrLeaseLost, "f1")
		checkFiber(t, "after the refused update", getFiber(t, s, counterA, "f1"), before)

		updateFiber(t, s, counterA, "f1", "node-1", store.FiberRunning, "slow shard", at(2*time.Second))
		want := *before
		want.Error, want.UpdatedAt = "slow shard", at(2*time.Second)
		checkFiber(t, "after an update that does not finish", getFiber(t, s, counterA, "f1"), &want)

		updateFiber(t, s, counterA, "f1", "node-1", store.FiberError, "boom", at(3*time.Second))
		want.Status, want.Error, want.Owner = store.FiberError, "boom", ""
		want.UpdatedAt, want.FinishedAt = at(3*time.Second), at(3*time.Second)
		checkFiber(t, "after finishing", getFiber(t, s, counterA, "f1"), &want)

		err = s.UpdateFiber(t.Context(), counterA, "f1", "node-1", store.FiberRunning, "", at(4*time.Second))
		wantErrNaming(t, "UpdateFiber of a finished fiber", err, store.ErrLeaseLost, "f1")
		checkFiber(t, "after updating a finished fiber", getFiber(t, s, counterA, "f1"), &want)
		err = s.UpdateFiber(t.Context(), counterA, "nope", "node-1", store.FiberCompleted, "", at(4*time.Second))
		wantErrNaming(t, "UpdateFiber of an unknown fiber", err, store.ErrLeaseLost, "nope")
	}},
	{"StashFiberFenced", func(t *testing.T, s store.Store) {
		createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		claimFiber(t, s, counterA, "f1", "node-1", at(time.Second))
		if err := s.StashFiber(t.Context(), counterA, "f1", "node-1", []byte(`{"done":10}`), at(2*time.Second)); err != nil {
			t.Fatalf("StashFiber: %v", err)
		}
		want := getFiber(t, s, counterA, "f1")
		if string(want.Stash) != `{"done":10}` || !want.UpdatedAt.Equal(at(2*time.Second)) {
			t.Errorf("after StashFiber: Stash %q UpdatedAt %s, want {\"done\":10} at t0+2s", want.Stash, fmtTime(want.UpdatedAt))
		}
		err := s.StashFiber(t.Context(), counterA, "f1", "node-2", []byte(`{"done":0}`), at(3*time.Second))
		wantErrNaming(t, "StashFiber by a node that does not run it", err, store.ErrLeaseLost, "f1")
		checkFiber(t, "after the refused stash", getFiber(t, s, counterA, "f1"), want)

		updateFiber(t, s, counterA, "f1", "node-1", store.FiberCompleted, "", at(4*time.Second))
		err = s.StashFiber(t.Context(), counterA, "f1", "node-1", []byte(`{"done":11}`), at(5*time.Second))
		wantErrNaming(t, "StashFiber of a finished fiber", err, store.ErrLeaseLost, "f1")
		if got := getFiber(t, s, counterA, "f1"); string(got.Stash) != `{"done":10}` {
			t.Errorf("finished fiber's stash %q, want the last checkpoint", got.Stash)
		}
	}},
	{"AbortFiber", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		for _, id := range []string{"pending", "live", "ghost", "done", "interrupted"} {
			f := newFiber(id, counterA, "reindex", t0)
			if id == "interrupted" {
				f.Status = store.FiberInterrupted
			}
			createFiber(t, s, f)
		}
		claimFiber(t, s, counterA, "live", "node-1", t0)
		claimFiber(t, s, counterA, "ghost", "ghost", t0)
		claimFiber(t, s, counterA, "done", "node-1", t0)
		updateFiber(t, s, counterA, "done", "node-1", store.FiberCompleted, "", t0)

		now := at(time.Minute)
		abort := func(id string) store.FiberStatus {
			t.Helper()
			st, err := s.AbortFiber(t.Context(), counterA, id, now)
			if err != nil {
				t.Fatalf("AbortFiber(%s): %v", id, err)
			}
			return st
		}
		for _, c := range []struct {
			id    string
			prior store.FiberStatus
			abort bool
		}{
			{"pending", store.FiberPending, true},
			{"live", store.FiberRunning, false}, // its runner aborts it
			{"ghost", store.FiberRunning, true}, // its runner has no node row
			{"done", store.FiberCompleted, false},
			{"interrupted", store.FiberInterrupted, true},
		} {
			before := getFiber(t, s, counterA, c.id)
			if got := abort(c.id); got != c.prior {
				t.Errorf("AbortFiber(%s) = %s, want %s", c.id, got, c.prior)
			}
			want := *before
			if c.abort {
				want.Status, want.Owner, want.UpdatedAt, want.FinishedAt = store.FiberAborted, "", now, now
			}
			checkFiber(t, "after AbortFiber", getFiber(t, s, counterA, c.id), &want)
		}
		if got := abort("pending"); got != store.FiberAborted {
			t.Errorf("AbortFiber of an aborted fiber = %s, want aborted", got)
		}
		_, err := s.AbortFiber(t.Context(), counterA, "nope", now)
		wantErrNaming(t, "AbortFiber of an unknown fiber", err, store.ErrNotFound, "nope")
	}},
	{"DeleteFiber", func(t *testing.T, s store.Store) {
		createFiber(t, s, newFiber("f1", counterA, "reindex", t0))
		del := func(key store.AgentKey, id string) bool {
			t.Helper()
			ok, err := s.DeleteFiber(t.Context(), key, id)
			if err != nil {
				t.Fatalf("DeleteFiber(%s, %s): %v", key, id, err)
			}
			return ok
		}
		if del(counterB, "f1") {
			t.Error("DeleteFiber of another agent's fiber reported it existed")
		}
		if !del(counterA, "f1") {
			t.Error("DeleteFiber of an existing fiber reported it did not exist")
		}
		if del(counterA, "f1") {
			t.Error("second DeleteFiber reported the fiber existed")
		}
		_, err := s.GetFiber(t.Context(), counterA, "f1")
		wantErr(t, "GetFiber after DeleteFiber", err, store.ErrNotFound)
	}},
	{"InterruptFibers", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-2")
		activate(t, s, counterA, "node-2", t0)
		createFiber(t, s, newFiber("p", counterA, "reindex", t0))
		createFiber(t, s, newFiber("r1", counterA, "reindex", at(time.Second)))
		createFiber(t, s, newFiber("r2", counterA, "reindex", at(2*time.Second)))
		createFiber(t, s, newFiber("done", counterA, "reindex", at(3*time.Second)))
		intr := newFiber("intr", counterA, "reindex", at(4*time.Second))
		intr.Status = store.FiberInterrupted
		createFiber(t, s, intr)
		createFiber(t, s, newFiber("q", counterB, "reindex", t0))
		claimFiber(t, s, counterA, "r1", "node-1", at(5*time.Second))
		claimFiber(t, s, counterA, "r2", "node-2", at(5*time.Second)) // the caller's own
		claimFiber(t, s, counterA, "done", "node-1", at(5*time.Second))
		updateFiber(t, s, counterA, "done", "node-1", store.FiberCompleted, "", at(6*time.Second))
		if err := s.StashFiber(t.Context(), counterA, "r1", "node-1", []byte(`{"at":5}`), at(6*time.Second)); err != nil {
			t.Fatal(err)
		}

		var untouched []*store.Fiber
		for _, id := range []string{"r2", "done", "intr"} {
			untouched = append(untouched, getFiber(t, s, counterA, id))
		}
		untouched = append(untouched, getFiber(t, s, counterB, "q"))
		wantP, wantR1 := *getFiber(t, s, counterA, "p"), *getFiber(t, s, counterA, "r1")

		now := at(time.Minute)
		got, err := s.InterruptFibers(t.Context(), counterA, "node-2", now)
		if err != nil {
			t.Fatalf("InterruptFibers: %v", err)
		}
		if ids := fiberIDs(got); !slices.Equal(ids, []string{"p", "r1"}) {
			t.Fatalf("InterruptFibers returned %q, want [p r1]", ids)
		}
		for i, want := range []store.Fiber{wantP, wantR1} {
			want.Status, want.Owner, want.UpdatedAt = store.FiberInterrupted, "", now
			checkFiber(t, "InterruptFibers' result", &got[i], &want)
			checkFiber(t, "GetFiber after InterruptFibers", getFiber(t, s, counterA, want.ID), &want)
		}
		for _, f := range untouched {
			checkFiber(t, "a fiber InterruptFibers must leave alone", getFiber(t, s, f.AgentKey, f.ID), f)
		}
		if again, err := s.InterruptFibers(t.Context(), counterA, "node-2", at(2*time.Minute)); err != nil || len(again) != 0 {
			t.Errorf("second InterruptFibers = %q, %v; want none", fiberIDs(again), err)
		}
	}},
	{"OrphanedFiberAgents", func(t *testing.T, s store.Store) {
		liveNode(t, s, "node-1")
		fiber := func(key store.AgentKey, id, owner string, status store.FiberStatus) {
			t.Helper()
			createFiber(t, s, newFiber(id, key, "reindex", t0))
			if owner != "" {
				claimFiber(t, s, key, id, owner, t0)
			}
			if status != store.FiberRunning && status != store.FiberPending {
				if owner == "" {
					t.Fatalf("fiber %s: a finished fiber needs an owner to finish it", id)
				}
				updateFiber(t, s, key, id, owner, status, "", t0)
			}
		}
		key := func(class, name string) store.AgentKey { return store.AgentKey{Class: class, Name: name} }
		// Orphans: a runner without a node row, or no runner and the agent live nowhere.
		fiber(key("Counter", "a"), "f", "ghost", store.FiberRunning)
		fiber(key("Chat", "a"), "f", "", store.FiberPending)
		fiber(key("Counter", "d"), "f", "ghost", store.FiberRunning)
		activate(t, s, key("Counter", "d"), "ghost-2", t0) // live on a node without a row
		// Looked after: the runner is live, or the agent is live on a node
		// with a row, which interrupted its fibers when it activated it.
		fiber(key("Counter", "b"), "f", "node-1", store.FiberRunning)
		fiber(key("Chat", "b"), "f", "", store.FiberPending)
		activate(t, s, key("Chat", "b"), "node-1", t0)
		fiber(key("Chat", "c"), "f", "ghost", store.FiberRunning)
		activate(t, s, key("Chat", "c"), "node-1", t0)
		// Nothing to recover: finished or already interrupted.
		fiber(key("Counter", "c"), "f1", "ghost", store.FiberCompleted)
		fiber(key("Counter", "c"), "f2", "ghost", store.FiberAborted)
		intr := newFiber("f3", key("Counter", "c"), "reindex", t0)
		intr.Status = store.FiberInterrupted
		createFiber(t, s, intr)

		orphaned := func(limit int) []store.AgentKey {
			t.Helper()
			keys, err := s.OrphanedFiberAgents(t.Context(), testClasses, limit)
			if err != nil {
				t.Fatalf("OrphanedFiberAgents(%d): %v", limit, err)
			}
			if len(keys) > limit {
				t.Fatalf("OrphanedFiberAgents(%d) returned %d agents", limit, len(keys))
			}
			slices.SortFunc(keys, func(a, b store.AgentKey) int { return strings.Compare(a.String(), b.String()) })
			return keys
		}
		want := []store.AgentKey{key("Chat", "a"), key("Counter", "a"), key("Counter", "d")}
		if got := orphaned(10); !slices.Equal(got, want) {
			t.Fatalf("OrphanedFiberAgents = %v, want %v", got, want)
		}
		if got := orphaned(2); len(got) != 2 {
			t.Errorf("OrphanedFiberAgents(2) = %v, want 2 of %v", got, want)
		}
		activate(t, s, key("Counter", "a"), "node-1", at(time.Minute))
		if _, err := s.InterruptFibers(t.Context(), key("Counter", "a"), "node-1", at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := orphaned(10); !slices.Equal(got, []store.AgentKey{want[0], want[2]}) {
			t.Errorf("after recovering Counter/a: OrphanedFiberAgents = %v, want [Chat/a Counter/d]", got)
		}
	}},
}

// The concurrency cases register every worker as a live node: a claim of a
// node without a row is free, and could rightly be claimed again.

var agentConcurrencyCases = []testCase{
	{"ClaimDueSchedulesClaimsEachOnce", func(t *testing.T, s store.Store) {
		const n = 40
		keys := map[string]store.AgentKey{}
		for i := range n {
			id, key := fmt.Sprintf("s%02d", i), store.AgentKey{Class: "Counter", Name: fmt.Sprintf("a%d", i%7)}
			keys[id] = key
			createSchedule(t, s, newSchedule(id, key, at(-time.Duration(i)*time.Second)))
		}
		for w := range workers {
			liveNode(t, s, fmt.Sprintf("node-%d", w))
		}
		claimed := claimConcurrently(t, "ClaimDueSchedules", func(owner string) ([]string, error) {
			got, err := s.ClaimDueSchedules(t.Context(), owner, testClasses, t0, 3)
			return scheduleIDs(got), err
		})
		if len(claimed) != n {
			t.Errorf("%d schedules claimed, want %d", len(claimed), n)
		}
		for id, owner := range claimed {
			if sc := getSchedule(t, s, keys[id], id); sc.Owner != owner {
				t.Errorf("%s: owner %q, want %s", id, sc.Owner, owner)
			}
		}
	}},
	{"ActivateOneOwnerWins", func(t *testing.T, s store.Store) {
		const agents = 8
		for w := range workers {
			liveNode(t, s, fmt.Sprintf("node-%d", w))
		}
		type result struct {
			key   store.AgentKey
			owner string
			err   error
		}
		results := make(chan result, workers*agents)
		var wg sync.WaitGroup
		for w := range workers {
			owner := fmt.Sprintf("node-%d", w)
			wg.Go(func() {
				for i := range agents {
					key := store.AgentKey{Class: "Counter", Name: fmt.Sprintf("a%d", i)}
					_, err := s.ActivateAgent(t.Context(), key, owner, t0)
					results <- result{key, owner, err}
				}
			})
		}
		wg.Wait()
		close(results)
		winners := map[store.AgentKey]string{}
		var losers []result
		for r := range results {
			if r.err == nil {
				if prev, ok := winners[r.key]; ok {
					t.Errorf("%s activated by both %s and %s", r.key, prev, r.owner)
				}
				winners[r.key] = r.owner
				continue
			}
			var owned *store.AgentOwnedError
			if !errors.As(r.err, &owned) {
				t.Fatalf("ActivateAgent(%s, %s): %v, want success or an *AgentOwnedError", r.key, r.owner, r.err)
			}
			losers = append(losers, r)
		}
		if len(winners) != agents {
			t.Fatalf("%d agents activated, want %d", len(winners), agents)
		}
		for _, r := range losers {
			var owned *store.AgentOwnedError
			errors.As(r.err, &owned)
			if owned.Node.ID != winners[r.key] {
				t.Errorf("ActivateAgent(%s, %s) was refused naming %s, but %s won", r.key, r.owner, owned.Node.ID, winners[r.key])
			}
		}
		for key, owner := range winners {
			if a := getAgent(t, s, key); a.Owner != owner || a.Fence != 1 {
				t.Errorf("%s: owner %q fence %d, want %s and 1", key, a.Owner, a.Fence, owner)
			}
		}
	}},
	{"CreateSameKeyOnce", func(t *testing.T, s store.Store) {
		type result struct {
			schedule, fiber               string
			scheduleCreated, fiberCreated bool
			err                           error
		}
		results := make(chan result, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				var r result
				sc := newSchedule(fmt.Sprintf("s%d", w), counterA, at(time.Hour))
				sc.IdempotencyKey = "k"
				got, created, err := s.CreateSchedule(t.Context(), sc)
				if err != nil {
					results <- result{err: err}
					return
				}
				r.schedule, r.scheduleCreated = got.ID, created
				f := newFiber(fmt.Sprintf("f%d", w), counterA, "reindex", t0)
				f.IdempotencyKey = "k"
				gotF, created, err := s.CreateFiber(t.Context(), f)
				if err != nil {
					results <- result{err: err}
					return
				}
				r.fiber, r.fiberCreated = gotF.ID, created
				results <- r
			})
		}
		wg.Wait()
		close(results)
		var schedules, fibers []string
		schCreated, fCreated := 0, 0
		for r := range results {
			if r.err != nil {
				t.Fatal(r.err)
			}
			schedules, fibers = append(schedules, r.schedule), append(fibers, r.fiber)
			if r.scheduleCreated {
				schCreated++
			}
			if r.fiberCreated {
				fCreated++
			}
		}
		if schCreated != 1 || fCreated != 1 {
			t.Errorf("%d schedules and %d fibers created with one key, want 1 each", schCreated, fCreated)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(schedules)))) != 1 {
			t.Errorf("CreateSchedule returned different schedules for one key: %q", schedules)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(fibers)))) != 1 {
			t.Errorf("CreateFiber returned different fibers for one key: %q", fibers)
		}
		if ids := listSchedules(t, s, counterA, store.ScheduleFilter{}); len(ids) != 1 {
			t.Errorf("schedules: %q, want one", ids)
		}
		if ids := listFibers(t, s, counterA, store.FiberFilter{}); len(ids) != 1 {
			t.Errorf("fibers: %q, want one", ids)
		}
	}},
}
