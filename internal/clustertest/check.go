package clustertest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"agentflow/store"
)

// Op is one operation a client attempted, and how it ended for the client.
type Op struct {
	ID      string // unique; a workflow's id for a launch
	Agent   string
	Kind    string // "increment" or "launch"
	Via     string // "ws", "http" or "call"
	Outcome string // one of the Out* constants
	Status  int    // the HTTP status, when there was one
	Detail  string // the error, for outcomes other than OutAck
}

// Flow is what the store says of a workflow a client tried to launch.
type Flow struct {
	ID       string
	Agent    string
	Exists   bool
	Status   store.Status
	Output   string
	Tracking store.Status // the agent's tracking row ("" when missing)
}

// Report is what Check found.
type Report struct {
	// Ops counts the operations by "<via> <kind> <outcome>"; Samples
	// holds the first errors of each kind that did not succeed.
	Ops     map[string]int
	Samples map[string][]string
	// Increments sums the increments per outcome over the agents.
	Increments map[string]int
	// Status503 counts 503 answers (all with Retry-After, or a problem).
	Status503   int
	Kills       int
	Activations int
	// Takeovers are activations whose predecessor ended by a kill, on
	// another process.
	Takeovers int
	// LiveReaps are nodes another node removed while their process was
	// alive (a lapsed lease).
	LiveReaps []string
	Writes    int
	// Workflows is how many exist; StepReruns how many step functions ran
	// again after a crash cut them off before their checkpoint.
	Workflows  int
	StepExecs  int
	StepReruns int
	// Heard counts completions the agents heard; HeardTwice those heard
	// more than once.
	Heard      int
	HeardTwice int
	Problems   []string
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// String summarizes the report.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "increments: %d acknowledged, %d unknown outcome, %d refused (retryable), %d other\n",
		r.Increments[OutAck], r.Increments[OutUnknown], r.Increments[OutRefused], r.Increments[OutConflict]+r.Increments[OutError])
	fmt.Fprintf(&b, "503 answers: %d; kills: %d; activations: %d (take-overs after a kill: %d); state writes: %d\n",
		r.Status503, r.Kills, r.Activations, r.Takeovers, r.Writes)
	if len(r.LiveReaps) > 0 {
		fmt.Fprintf(&b, "nodes removed while alive (lapsed leases): %s\n", strings.Join(r.LiveReaps, ", "))
	}
	fmt.Fprintf(&b, "workflows: %d, step executions %d (%d re-runs of steps cut off), completions heard %d (twice: %d)\n",
		r.Workflows, r.StepExecs, r.StepReruns, r.Heard, r.HeardTwice)
	for _, k := range slices.Sorted(maps.Keys(r.Ops)) {
		fmt.Fprintf(&b, "  %-28s %6d\n", k, r.Ops[k])
		for _, d := range r.Samples[k] {
			fmt.Fprintf(&b, "      e.g. %s\n", d)
		}
	}
	return b.String()
}

// maxListed caps how many problems of one kind are listed.
const maxListed = 20

// Check checks the audit log, the operations the clients made, the final
// state of every agent and the workflows against the properties in the
// package documentation.
func Check(recs []Record, ops []Op, finals map[string]State, flows map[string]Flow) *Report {
	r := &Report{Ops: map[string]int{}, Samples: map[string][]string{}, Increments: map[string]int{}}
	checkOps(r, ops)
	writesByOp, acts := checkActivations(r, recs)
	checkIncrements(r, ops, finals, writesByOp)
	checkFlows(r, recs, ops, finals, flows, writesByOp, acts)
	return r
}

// checkOps counts the operations and flags the ones no client may see.
func checkOps(r *Report, ops []Op) {
	listed := map[string]int{}
	for _, op := range ops {
		k := op.Via + " " + op.Kind + " " + op.Outcome
		r.Ops[k]++
		if op.Outcome != OutAck && len(r.Samples[k]) < 2 {
			d := op.Detail
			if op.Status != 0 {
				d = fmt.Sprintf("%d %s", op.Status, d)
			}
			if len(d) > 200 {
				d = d[:200] + "…"
			}
			r.Samples[k] = append(r.Samples[k], d)
		}
		if op.Kind == "increment" {
			r.Increments[op.Outcome]++
		}
		if op.Status == 503 {
			r.Status503++
		}
		switch op.Outcome {
		case OutConflict, OutError:
			if listed[op.Outcome]++; listed[op.Outcome] <= maxListed {
				r.problem("%s %s %s of %s: %s (status %d): %s", op.Via, op.Kind, op.ID, op.Agent, op.Outcome, op.Status, op.Detail)
			}
		}
	}
	for o, n := range listed {
		if n > maxListed {
			r.problem("… and %d more %s outcomes", n-maxListed, o)
		}
	}
}

// activation is an EvActivate record with what ended it.
type activation struct {
	Record
	end    int64  // when it ended: its release, or its process's kill; 0 if neither
	endBy  string // "release" or "kill"
	writes int
}

// checkActivations checks that no agent was live on two nodes at once and
// that the state writes carry the activations' fences in order. It
// returns the writes by their op, and each agent's activations in the
// order they completed.
func checkActivations(r *Report, recs []Record) (map[string][]Record, map[string][]*activation) {
	kills := map[int]int64{}      // pid → when the parent killed it
	pids := map[string]int{}      // node → its process
	reaped := map[string]Record{} // node → the first removal by another node
	acts := map[string][]*activation{}
	releases := map[string][]Record{} // by agent
	writes := map[string][]Record{}   // by agent
	writesByOp := map[string][]Record{}
	for _, rec := range recs {
		switch rec.Ev {
		case EvKill:
			kills[rec.PID] = rec.T0
			r.Kills++
		case EvStart:
			pids[rec.Node] = rec.PID
		case EvReap:
			if rec.By != rec.Node {
				if _, ok := reaped[rec.Node]; !ok {
					reaped[rec.Node] = rec
				}
			}
		case EvActivate:
			acts[rec.Agent] = append(acts[rec.Agent], &activation{Record: rec})
			r.Activations++
		case EvRelease:
			releases[rec.Agent] = append(releases[rec.Agent], rec)
		case EvWrite:
			writes[rec.Agent] = append(writes[rec.Agent], rec)
			writesByOp[rec.Op] = append(writesByOp[rec.Op], rec)
			r.Writes++
		}
	}
	// A node removed by another while its process lived had let its
	// lease lapse (or was taken for dead by mistake). That is no safety
	// problem, since its writes are fenced off from then on, which the
	// checks below prove; it is reported.
	for _, node := range slices.Sorted(maps.Keys(reaped)) {
		rec := reaped[node]
		if pid, ok := pids[node]; ok {
			if k, killed := kills[pid]; !killed || k > rec.T0 {
				why := "its lease had run out"
				if rec.Until > rec.T0 {
					why = fmt.Sprintf("with %v of its lease left", nanos(rec.Until-rec.T0))
				}
				r.LiveReaps = append(r.LiveReaps, fmt.Sprintf("node %s (pid %d) by %s, %s", node, pid, rec.By, why))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(acts)) {
		as := acts[name]
		slices.SortFunc(as, func(a, b *activation) int { return cmp.Compare(a.T1, b.T1) })
		// What ended each activation: the first release of its lease
		// after it began, or its process's kill, whichever came first.
		for _, a := range as {
			for _, rel := range releases[name] {
				if rel.PID == a.PID && rel.Node == a.Node && rel.Fence == a.Fence && rel.T0 >= a.T0 {
					a.end, a.endBy = rel.T0, "release"
					break
				}
			}
			if k, ok := kills[a.PID]; ok && k >= a.T0 && (a.end == 0 || k < a.end) {
				a.end, a.endBy = k, "kill"
			}
			if rm, ok := reaped[a.Node]; ok && rm.T0 >= a.T0 && (a.end == 0 || rm.T0 < a.end) {
				a.end, a.endBy = rm.T0, "node's removal"
			}
		}
		// Writes belong to the activation of their lease.
		index := map[[2]any]int{} // (node, fence) → index of the latest activation with it
		ws := writes[name]
		slices.SortFunc(ws, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
		for i, a := range as {
			index[[2]any{a.Node, a.Fence}] = i
		}
		for i := 1; i < len(as); i++ {
			p, q := as[i-1], as[i]
			switch {
			case p.end == 0:
				r.problem("agent %s: activated on node %s (pid %d, fence %d) while live on node %s (pid %d, fence %d), which was neither released nor killed",
					name, q.Node, q.PID, q.Fence, p.Node, p.PID, p.Fence)
			case q.T1 <= p.end:
				r.problem("agent %s: activation on node %s (pid %d, fence %d) completed %v before the one on node %s (pid %d, fence %d) ended by its %s",
					name, q.Node, q.PID, q.Fence, nanos(p.end-q.T1), p.Node, p.PID, p.Fence, p.endBy)
			}
			if p.endBy == "kill" && q.PID != p.PID {
				r.Takeovers++
			}
		}
		// Each write carries the fence of a live activation of its node,
		// and the writes, in the order the state numbers them, go through
		// the activations in order: no write of an activation after one of
		// a later activation.
		last, lastSeq := -1, 0
		for _, w := range ws {
			i, ok := index[[2]any{w.Node, w.Fence}]
			// The latest activation with this lease that began before it.
			for ok && as[i].T0 > w.T0 {
				i, ok = prevWith(as, i, w.Node, w.Fence)
			}
			if !ok {
				r.problem("agent %s: write seq %d (%s) by node %s under fence %d, which no activation of that node holds", name, w.Seq, w.Op, w.Node, w.Fence)
				continue
			}
			a := as[i]
			a.writes++
			if a.end != 0 && w.T0 > a.end {
				r.problem("agent %s: write seq %d (%s) by node %s fence %d began after its activation ended by its %s", name, w.Seq, w.Op, w.Node, w.Fence, a.endBy)
			}
			if i+1 < len(as) && w.T0 >= as[i+1].T1 {
				r.problem("agent %s: write seq %d (%s) by node %s under fence %d began after the agent was activated on node %s with fence %d",
					name, w.Seq, w.Op, w.Node, w.Fence, as[i+1].Node, as[i+1].Fence)
			}
			if w.Seq == lastSeq {
				r.problem("agent %s: two writes with seq %d (the second %s by node %s fence %d): two were built on one state", name, w.Seq, w.Op, w.Node, w.Fence)
			}
			if i < last {
				r.problem("agent %s: write seq %d (%s) by node %s fence %d comes after a write of a later activation", name, w.Seq, w.Op, w.Node, w.Fence)
			}
			last, lastSeq = max(last, i), w.Seq
		}
		// A fence only grows, except after the release of a first
		// activation that stored nothing, which deletes the row.
		for i := 1; i < len(as); i++ {
			p, q := as[i-1], as[i]
			if q.Fence <= p.Fence && !(p.Fence == 1 && p.endBy == "release" && p.writes == 0 && q.Fence == 1) {
				r.problem("agent %s: activation fence %d on node %s after fence %d on node %s", name, q.Fence, q.Node, p.Fence, p.Node)
			}
		}
	}
	return writesByOp, acts
}

// prevWith finds the activation before i with the lease (node, fence).
func prevWith(as []*activation, i int, node string, fence int64) (int, bool) {
	for j := i - 1; j >= 0; j-- {
		if as[j].Node == node && as[j].Fence == fence {
			return j, true
		}
	}
	return 0, false
}

// checkIncrements checks that every acknowledged increment is in the
// state exactly once, that none refused is, and the final count's bounds.
func checkIncrements(r *Report, ops []Op, finals map[string]State, writesByOp map[string][]Record) {
	type tally struct{ ack, unknown, refused, written int }
	per := map[string]*tally{}
	listed := 0
	bad := func(format string, args ...any) {
		if listed++; listed <= maxListed {
			r.problem(format, args...)
		}
	}
	for _, op := range ops {
		if op.Kind != "increment" {
			continue
		}
		t := per[op.Agent]
		if t == nil {
			t = &tally{}
			per[op.Agent] = t
		}
		n := len(writesByOp[op.ID])
		t.written += min(n, 1)
		switch op.Outcome {
		case OutAck:
			t.ack++
			if n == 0 {
				bad("increment %s of %s (%s) was acknowledged but no state write has it", op.ID, op.Agent, op.Via)
			}
		case OutRefused:
			t.refused++
			if n > 0 {
				bad("increment %s of %s (%s) was refused as retryable (%d: %s) but was applied", op.ID, op.Agent, op.Via, op.Status, op.Detail)
			}
		default:
			t.unknown++
		}
		if n > 1 {
			bad("increment %s of %s (%s) was applied %d times", op.ID, op.Agent, op.Via, n)
		}
	}
	if listed > maxListed {
		r.problem("… and %d more problems with increments", listed-maxListed)
	}
	for _, name := range slices.Sorted(maps.Keys(per)) {
		t, count := per[name], finals[name].Count
		if count < t.ack || count > t.ack+t.unknown {
			r.problem("agent %s: final count %d, with %d increments acknowledged and %d of unknown outcome (want %d ≤ count ≤ %d)",
				name, count, t.ack, t.unknown, t.ack, t.ack+t.unknown)
		}
		if count < t.written {
			r.problem("agent %s: final count %d, but %d increments were written", name, count, t.written)
		}
	}
}

// checkFlows checks the workflows: every one launched completed, with its
// agent told, and no step that returned ran again.
func checkFlows(r *Report, recs []Record, ops []Op, finals map[string]State, flows map[string]Flow,
	writesByOp map[string][]Record, acts map[string][]*activation) {
	kills := map[int]int64{}
	for _, rec := range recs {
		if rec.Ev == EvKill {
			kills[rec.PID] = rec.T0
		}
	}
	listed := 0
	bad := func(format string, args ...any) {
		if listed++; listed <= maxListed {
			r.problem(format, args...)
		}
	}
	for _, op := range ops {
		if op.Kind != "launch" {
			continue
		}
		f := flows[op.ID]
		if !f.Exists {
			if op.Outcome == OutAck {
				bad("workflow %s of %s was acknowledged (%s) but does not exist", op.ID, op.Agent, op.Via)
			}
			continue
		}
		if op.Outcome == OutRefused {
			bad("workflow %s of %s was refused as retryable (%d: %s) but exists", op.ID, op.Agent, op.Status, op.Detail)
		}
		r.Workflows++
		if f.Status != store.StatusComplete || f.Output != `"one+two"` {
			bad("workflow %s of %s: %s with output %s, want complete with \"one+two\"", f.ID, f.Agent, f.Status, f.Output)
		}
		if f.Tracking != store.StatusComplete {
			bad("workflow %s of %s: the agent's tracking row says %q, want complete", f.ID, f.Agent, f.Tracking)
		}
		switch n := finals[f.Agent].Done[f.ID]; {
		case n == 0:
			bad("workflow %s of %s completed but its agent never heard (OnWorkflowComplete)", f.ID, f.Agent)
		case n > 1:
			// Told at least once: again only when the process that told it
			// before died before recording so.
			r.HeardTwice++
			if !retoldAfterKill(writesByOp["done:"+f.ID], n, kills, acts[f.Agent]) {
				bad("workflow %s of %s: its agent heard of its completion %d times, though no process that told it was killed before recording so",
					f.ID, f.Agent, n)
			}
		}
	}
	for name, st := range finals {
		for id, n := range st.Done {
			r.Heard += min(n, 1)
			if !flows[id].Exists || flows[id].Agent != name {
				bad("agent %s heard of the completion of workflow %s, which is not one of its own", name, id)
			}
		}
	}
	// No step that returned ran again.
	type stepKey struct{ instance, step string }
	returned := map[stepKey]bool{}
	execs := map[stepKey]int{}
	for _, rec := range recs {
		k := stepKey{rec.Instance, rec.Step}
		switch rec.Ev {
		case EvExec:
			r.StepExecs++
			if execs[k]++; execs[k] > 1 {
				r.StepReruns++
			}
			if returned[k] {
				bad("workflow %s: step %s ran again (attempt %d, pid %d) after it had returned", rec.Instance, rec.Step, rec.Attempt, rec.PID)
			}
		case EvReturned:
			returned[k] = true
		}
	}
	for id, f := range flows {
		if !f.Exists {
			continue
		}
		for _, s := range []string{"one", "two"} {
			if !returned[stepKey{id, s}] && f.Status == store.StatusComplete {
				// A replay in another process records it; a kill between
				// Do returning and the record can lose it only if the
				// instance never replayed, i.e. it finished in that process.
				if execs[stepKey{id, s}] == 0 {
					bad("workflow %s completed but step %s never ran", id, s)
				}
			}
		}
	}
	if listed > maxListed {
		r.problem("… and %d more problems with workflows", listed-maxListed)
	}
}

// retoldAfterKill reports whether an agent told n times of one
// workflow's completion, its audited state writes ws, was told again only
// because a process that told it died before recording so: each audited
// telling but the last was by a process killed after it, and a telling
// whose write is not in the audit log (committed, but its process killed
// before it could record it) came before the first audited one, in the
// activation before it, which ended by a kill.
func retoldAfterKill(ws []Record, n int, kills map[int]int64, as []*activation) bool {
	for i := 0; i+1 < len(ws); i++ {
		if kills[ws[i].PID] < ws[i].T1 {
			return false
		}
	}
	if len(ws) >= n {
		return true
	}
	if len(ws) == 0 {
		return false
	}
	for i := len(as) - 1; i > 0; i-- {
		if a := as[i]; a.Node == ws[0].Node && a.Fence == ws[0].Fence && a.T0 <= ws[0].T0 {
			return as[i-1].endBy == "kill"
		}
	}
	return false
}

func nanos(d int64) string {
	return fmt.Sprintf("%.1fms", float64(d)/1e6)
}
