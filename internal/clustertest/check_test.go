package clustertest

import (
	"slices"
	"strings"
	"testing"

	"agentflow/store"
)

// The checker finds each violation it is there for, and nothing in a
// history without one.
func TestCheckFindsViolations(t *testing.T) {
	type history struct {
		recs   []Record
		ops    []Op
		finals map[string]State
		flows  map[string]Flow
	}
	// a1 lives on pid 1 (fence 1), pid 1 is killed, pid 2 takes it over
	// (fence 2); two acknowledged increments; workflow w1 ran its steps
	// once and its agent heard.
	good := func() *history {
		return &history{
			recs: []Record{
				{Ev: EvActivate, PID: 1, Node: "n1", Agent: "a1", Fence: 1, T0: 10, T1: 20},
				{Ev: EvWrite, PID: 1, Node: "n1", Agent: "a1", Fence: 1, Seq: 1, Op: "o1", T0: 30, T1: 40},
				{Ev: EvExec, PID: 1, Instance: "w1", Step: "one", Attempt: 1, T0: 41},
				{Ev: EvReturned, PID: 1, Instance: "w1", Step: "one", T0: 42},
				{Ev: EvKill, PID: 1, Node: "n1", T0: 50},
				{Ev: EvActivate, PID: 2, Node: "n2", Agent: "a1", Fence: 2, T0: 45, T1: 60},
				{Ev: EvWrite, PID: 2, Node: "n2", Agent: "a1", Fence: 2, Seq: 2, Op: "o2", T0: 70, T1: 80},
				{Ev: EvExec, PID: 2, Instance: "w1", Step: "two", Attempt: 1, T0: 81},
				{Ev: EvReturned, PID: 2, Instance: "w1", Step: "two", T0: 82},
				{Ev: EvWrite, PID: 2, Node: "n2", Agent: "a1", Fence: 2, Seq: 3, Op: "done:w1", T0: 90, T1: 95},
			},
			ops: []Op{
				{ID: "o1", Agent: "a1", Kind: "increment", Via: "ws", Outcome: OutAck},
				{ID: "o2", Agent: "a1", Kind: "increment", Via: "http", Outcome: OutAck},
				{ID: "o3", Agent: "a1", Kind: "increment", Via: "http", Outcome: OutRefused, Status: 503},
				{ID: "w1", Agent: "a1", Kind: "launch", Via: "call", Outcome: OutAck},
			},
			finals: map[string]State{"a1": {Count: 2, Seq: 3, Done: map[string]int{"w1": 1}}},
			flows: map[string]Flow{"w1": {ID: "w1", Agent: "a1", Exists: true, Status: store.StatusComplete,
				Output: `"one+two"`, Tracking: store.StatusComplete}},
		}
	}
	if rep := Check(good().recs, good().ops, good().finals, good().flows); len(rep.Problems) > 0 || rep.Takeovers != 1 {
		t.Fatalf("a good history: problems %q, take-overs %d (want none, 1)", rep.Problems, rep.Takeovers)
	}
	// Told twice, the first time by pid 1, whose write committed but was
	// not audited before the kill: allowed.
	retold := good()
	retold.finals["a1"] = State{Count: 2, Seq: 3, Done: map[string]int{"w1": 2}}
	if rep := Check(retold.recs, retold.ops, retold.finals, retold.flows); len(rep.Problems) > 0 || rep.HeardTwice != 1 {
		t.Fatalf("told again after a kill: problems %q, heard twice %d (want none, 1)", rep.Problems, rep.HeardTwice)
	}
	// pid 1's lease lapses instead of its being killed: pid 2 removes its
	// node and takes the agent over. Reported, and no problem.
	lapse := func() *history {
		h := good()
		h.recs[4] = Record{Ev: EvReap, PID: 2, Node: "n1", By: "n2", T0: 50, T1: 51}
		h.recs = append([]Record{{Ev: EvStart, PID: 1, Node: "n1", T0: 1}, {Ev: EvStart, PID: 2, Node: "n2", T0: 2}}, h.recs...)
		return h
	}
	if h := lapse(); true {
		rep := Check(h.recs, h.ops, h.finals, h.flows)
		if len(rep.Problems) > 0 || len(rep.LiveReaps) != 1 {
			t.Fatalf("a lapsed lease: problems %q, live reaps %q (want none, n1)", rep.Problems, rep.LiveReaps)
		}
		// Its process then writes under its old fence: the store must
		// have refused that.
		h.recs = append(h.recs, Record{Ev: EvWrite, PID: 1, Node: "n1", Agent: "a1", Fence: 1, Seq: 4, Op: "late", T0: 62, T1: 63})
		rep = Check(h.recs, h.ops, h.finals, h.flows)
		if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, "began after the agent was activated on node n2") }) {
			t.Fatalf("a write under a fence taken over: problems %q", rep.Problems)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(h *history)
		want   string
	}{
		{"live on two nodes", func(h *history) { h.recs = append(h.recs[:4], h.recs[5:]...) }, "neither released nor killed"},
		{"activated before the kill", func(h *history) { h.recs[4].T0 = 65 }, "before the one on node n1"},
		{"two writes on one state", func(h *history) { h.recs[6].Seq = 1 }, "two writes with seq 1"},
		{"an old fence writes after a new one", func(h *history) {
			h.recs[1].Seq, h.recs[6].Seq, h.recs[9].Seq = 2, 1, 3
		}, "comes after a write of a later activation"},
		{"a write without its activation", func(h *history) { h.recs[6].Fence = 7 }, "which no activation of that node holds"},
		{"acknowledged but lost", func(h *history) { h.recs[6].Op = "other" }, "acknowledged but no state write has it"},
		{"refused but applied", func(h *history) { h.recs[6].Op = "o3" }, "refused as retryable"},
		{"applied twice", func(h *history) {
			h.recs = append(h.recs, Record{Ev: EvWrite, PID: 2, Node: "n2", Agent: "a1", Fence: 2, Seq: 4, Op: "o2", T0: 96, T1: 97})
		}, "applied 2 times"},
		{"count too high", func(h *history) { h.finals["a1"] = State{Count: 3, Done: map[string]int{"w1": 1}} }, "final count 3"},
		{"a 409", func(h *history) { h.ops[2].Outcome, h.ops[2].Status = OutConflict, 409 }, "conflict (status 409)"},
		{"a step ran again", func(h *history) {
			h.recs = append(h.recs, Record{Ev: EvExec, PID: 2, Instance: "w1", Step: "one", Attempt: 1, T0: 99})
		}, "ran again"},
		{"never heard", func(h *history) { h.finals["a1"] = State{Count: 2} }, "never heard"},
		{"heard twice with no crash", func(h *history) {
			h.finals["a1"] = State{Count: 2, Done: map[string]int{"w1": 2}}
			h.recs = append(h.recs, Record{Ev: EvWrite, PID: 2, Node: "n2", Agent: "a1", Fence: 2, Seq: 4, Op: "done:w1", T0: 96, T1: 97})
		}, "no process that told it was killed"},
		{"a workflow that did not finish", func(h *history) {
			f := h.flows["w1"]
			f.Status = store.StatusRunning
			h.flows["w1"] = f
		}, "want complete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			tc.change(h)
			rep := Check(h.recs, h.ops, h.finals, h.flows)
			for _, p := range rep.Problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Fatalf("problems %q; want one saying %q", rep.Problems, tc.want)
		})
	}
}
