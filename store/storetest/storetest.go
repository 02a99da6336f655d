// Package storetest is the conformance suite every store.Store
// implementation must pass.
//
// An implementation's test calls Run with a function that opens a fresh,
// empty store:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mystore.Open(t.Context(), ...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// Every case runs as a parallel subtest on a store of its own, which the
// suite closes when the subtest ends; open should register any further
// cleanup (deleting files, dropping a schema) with t.Cleanup before it
// returns, so that it runs after the store is closed.
//
// The suite never reads the clock: every time it passes is derived from a
// fixed reference instant with microsecond precision, which is the
// precision stores keep.
package storetest

import (
	"testing"

	"agentflow/store"
)

// testCase is one case of the suite: it gets a fresh, empty store.
type testCase struct {
	name string
	run  func(t *testing.T, s store.Store)
}

// Run runs the conformance suite against the stores open returns. open is
// called once per subtest and must return a fresh, empty store; the suite
// closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"CreateInstances", createInstancesCases},
		{"GetInstance", getInstanceCases},
		{"ListSteps", listStepsCases},
		{"ListEvents", listEventsCases},
		{"ClaimDue", claimDueCases},
		{"NextWakeTimes", nextWakeTimesCases},
		{"SaveStep", saveStepCases},
		{"TakeEvent", takeEventCases},
		{"Suspend", suspendCases},
		{"Finish", finishCases},
		{"Fencing", fencingCases},
		{"SendEvent", sendEventCases},
		{"Pause", pauseCases},
		{"Resume", resumeCases},
		{"Terminate", terminateCases},
		{"Restart", restartCases},
		{"DeleteFinished", deleteFinishedCases},
		{"Nodes", nodesCases},
		{"Concurrency", concurrencyCases},
		{"Agents", agentCases},
		{"Schedules", scheduleCases},
		{"ClaimDueSchedules", claimSchedulesCases},
		{"Fibers", fiberCases},
		{"AgentConcurrency", agentConcurrencyCases},
		{"TrackedInstances", trackedInstanceCases},
		{"Origin", originCases},
		{"FinishNotice", finishNoticeCases},
		{"ListAgentWorkflows", listAgentWorkflowsCases},
		{"UpdateAgentWorkflow", updateAgentWorkflowCases},
		{"DeleteAgentWorkflow", deleteAgentWorkflowCases},
		{"WorkflowNotices", workflowNoticeCases},
		{"Submissions", submissionCases},
		{"Conversation", conversationCases},
		{"ThinkConcurrency", thinkConcurrencyCases},
		{"ThinkOutbox", thinkOutboxCases},
		{"FinishSubmissionAndDeliver", finishDeliverCases},
		{"Inspect", inspectCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range g.cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					s := open(t)
					t.Cleanup(func() {
						if err := s.Close(); err != nil {
							t.Errorf("Close: %v", err)
						}
					})
					tc.run(t, s)
				})
			}
		})
	}
}
