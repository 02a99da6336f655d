package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/store"
)

func listNodes(t *testing.T, s store.Store) []store.Node {
	t.Helper()
	nodes, err := s.ListNodes(t.Context())
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	slices.SortFunc(nodes, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	return nodes
}

func heartbeat(t *testing.T, s store.Store, n store.Node) {
	t.Helper()
	if err := s.Heartbeat(t.Context(), n); err != nil {
		t.Fatalf("Heartbeat(%q): %v", n.ID, err)
	}
}

func checkNodes(t *testing.T, what string, got, want []store.Node) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: nodes %+v, want %+v", what, got, want)
		return
	}
	for i := range got {
		var d diffs
		eq(&d, "ID", got[i].ID, want[i].ID)
		eq(&d, "Service", got[i].Service, want[i].Service)
		eq(&d, "Host", got[i].Host, want[i].Host)
		eq(&d, "PID", got[i].PID, want[i].PID)
		eq(&d, "Process", got[i].Process, want[i].Process)
		eqTime(&d, "StartedAt", got[i].StartedAt, want[i].StartedAt)
		eqTime(&d, "ExpiresAt", got[i].ExpiresAt, want[i].ExpiresAt)
		eq(&d, "Address", got[i].Address, want[i].Address)
		eq(&d, "AgentClasses", strings.Join(got[i].AgentClasses, ","), strings.Join(want[i].AgentClasses, ","))
		if len(d) > 0 {
			t.Errorf("%s: node %q:\n\t%s", what, want[i].ID, strings.Join(d, "\n\t"))
		}
	}
}

func removeNode(t *testing.T, s store.Store, id string, now time.Time) int {
	t.Helper()
	n, err := s.RemoveNode(t.Context(), id, now)
	if err != nil {
		t.Fatalf("RemoveNode(%q): %v", id, err)
	}
	return n
}

var nodesCases = []testCase{
	{"ReleaseOrphansFreesInstancesOfNodesWithoutARow", func(t *testing.T, s store.Store) {
		heartbeat(t, s, store.Node{ID: "alive", Host: "alpha", PID: 1, StartedAt: t0, ExpiresAt: at(time.Hour)})
		start(t, s, "kept", "alive")
		// "gone" claimed after its row was removed: nobody would release it.
		start(t, s, "orphan", "gone")
		create(t, s, newOwned("orphan-queued", "gone", store.StatusQueued))
		keptBefore := snap(t, s, "kept")

		now := at(time.Minute)
		n, err := s.ReleaseOrphans(t.Context(), now)
		if err != nil {
			t.Fatalf("ReleaseOrphans: %v", err)
		}
		if n != 2 {
			t.Errorf("ReleaseOrphans released %d instances, want 2", n)
		}
		for _, id := range []string{"orphan", "orphan-queued"} {
			if in := get(t, s, id); in.Owner != "" || !in.WakeAt.Equal(now) {
				t.Errorf("%s after ReleaseOrphans: owner %q WakeAt %s, want unowned and due at %s", id, in.Owner, fmtTime(in.WakeAt), fmtTime(now))
			}
		}
		checkUnchanged(t, "an instance of a live node", s, keptBefore)
		if n, err := s.ReleaseOrphans(t.Context(), now); err != nil || n != 0 {
			t.Errorf("second ReleaseOrphans = %d, %v; want 0, nil", n, err)
		}
	}},
	{"HeartbeatInsertsAndRefreshes", func(t *testing.T, s store.Store) {
		if got := listNodes(t, s); len(got) != 0 {
			t.Fatalf("ListNodes of an empty store = %+v", got)
		}
		n1 := store.Node{ID: "node-1", Service: "", Host: "alpha", PID: 101, Process: "101:8812", StartedAt: at(-time.Minute), ExpiresAt: at(15 * time.Second)}
		n2 := store.Node{ID: "node-2", Service: "billing", Host: "beta", PID: 202, StartedAt: at(-2 * time.Minute), ExpiresAt: at(10 * time.Second)}
		heartbeat(t, s, n1)
		heartbeat(t, s, n2)
		checkNodes(t, "after first heartbeats", listNodes(t, s), []store.Node{n1, n2})

		n1.ExpiresAt = at(30 * time.Second)
		heartbeat(t, s, n1)
		heartbeat(t, s, n1)
		checkNodes(t, "after refreshing node-1", listNodes(t, s), []store.Node{n1, n2})
	}},
	{"AdvertiseNodeKeptAcrossHeartbeats", func(t *testing.T, s store.Store) {
		if err := s.AdvertiseNode(t.Context(), "node-1", "http://127.0.0.1:1/agents", nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("AdvertiseNode of a node with no row = %v, want ErrNotFound", err)
		}
		n1 := store.Node{ID: "node-1", Host: "alpha", PID: 101, StartedAt: t0, ExpiresAt: at(15 * time.Second)}
		heartbeat(t, s, n1)
		n1.AgentClasses = []string{} // a node that serves no agents advertises none
		checkNodes(t, "before AdvertiseNode", listNodes(t, s), []store.Node{n1})

		n1.Address, n1.AgentClasses = "http://10.0.0.5:8787/agents", []string{"Counter", "MyAgent"}
		if err := s.AdvertiseNode(t.Context(), n1.ID, n1.Address, n1.AgentClasses); err != nil {
			t.Fatalf("AdvertiseNode: %v", err)
		}
		n1.ExpiresAt = at(30 * time.Second)
		heartbeat(t, s, n1)
		checkNodes(t, "after AdvertiseNode and a heartbeat", listNodes(t, s), []store.Node{n1})

		n1.Address, n1.AgentClasses = "http://10.0.0.5:9000/agents", []string{"Counter"}
		if err := s.AdvertiseNode(t.Context(), n1.ID, n1.Address, n1.AgentClasses); err != nil {
			t.Fatalf("AdvertiseNode again: %v", err)
		}
		checkNodes(t, "after a second AdvertiseNode", listNodes(t, s), []store.Node{n1})
	}},
	{"RemoveNodeReleasesItsInstances", func(t *testing.T, s store.Store) {
		heartbeat(t, s, store.Node{ID: "node-1", Host: "alpha", PID: 1, StartedAt: t0, ExpiresAt: at(time.Second)})
		heartbeat(t, s, store.Node{ID: "node-2", Host: "beta", PID: 2, StartedAt: t0, ExpiresAt: at(time.Hour)})

		running := start(t, s, "running", "node-1")
		saveStep(t, s, running, doStep(0, "x", `1`), t0)
		create(t, s, newOwned("queued", "node-1", store.StatusQueued))
		start(t, s, "pausing", "node-1")
		pause(t, s, "pausing", t0)
		start(t, s, "other", "node-2")
		create(t, s, newInstance("unowned", at(time.Hour)))
		otherBefore := snap(t, s, "other")
		unownedBefore := snap(t, s, "unowned")

		now := at(time.Minute)
		if n := removeNode(t, s, "node-1", now); n != 3 {
			t.Errorf("RemoveNode released %d instances, want 3", n)
		}
		checkNodes(t, "after RemoveNode", listNodes(t, s), []store.Node{
			{ID: "node-2", Host: "beta", PID: 2, StartedAt: t0, ExpiresAt: at(time.Hour)},
		})

		want := newOwned("running", "", store.StatusRunning)
		want.WakeAt, want.UpdatedAt, want.Fence = now, now, 1
		checkInstance(t, "running instance after RemoveNode", get(t, s, "running"), want)
		if in := get(t, s, "queued"); in.Owner != "" || !in.WakeAt.Equal(now) || in.Status.Finished() || in.Status == store.StatusPaused {
			t.Errorf("queued instance after RemoveNode: %+v, want unowned and due at %s", in, fmtTime(now))
		}
		in := get(t, s, "pausing")
		if in.Status != store.StatusPaused || in.Owner != "" || !in.WakeAt.IsZero() || !in.PausedAt.Equal(now) {
			t.Errorf("instance that was waiting for pause, after RemoveNode: status %s owner %q WakeAt %s PausedAt %s; want paused at %s",
				in.Status, in.Owner, fmtTime(in.WakeAt), fmtTime(in.PausedAt), fmtTime(now))
		}
		checkUnchanged(t, "another node's instance", s, otherBefore)
		checkUnchanged(t, "an unowned instance", s, unownedBefore)

		if got := nextWakes(t, s, "", now, 10); !equalTimes(got, []time.Time{now, now}) {
			t.Errorf("NextWakeTimes = %s, want the two released instances due at %s", fmtTimes(got), fmtTime(now))
		}
		got := claim(t, s, "node-2", "", now, 10)
		if ids := instanceIDs(got); !slices.Equal(ids, []string{"queued", "running"}) {
			t.Fatalf("ClaimDue after RemoveNode claimed %q, want [queued running]", ids)
		}
		for _, in := range got {
			if in.Fence != 2 || in.Owner != "node-2" {
				t.Errorf("%s reclaimed with owner %q fence %d, want node-2 and 2", in.ID, in.Owner, in.Fence)
			}
		}
		// The paused one runs again once resumed.
		resume(t, s, "pausing", at(2*time.Minute))
		if in := get(t, s, "pausing"); in.Status == store.StatusPaused || !in.WakeAt.Equal(at(2*time.Minute)) {
			t.Errorf("after Resume: status %s WakeAt %s, want due at t0+2m", in.Status, fmtTime(in.WakeAt))
		}
		claimID(t, s, "pausing", "node-2", at(2*time.Minute))
	}},
	{"RemoveUnknownNode", func(t *testing.T, s store.Store) {
		start(t, s, "a", "node-1")
		if n := removeNode(t, s, "ghost", t0); n != 0 {
			t.Errorf("RemoveNode of an unknown node released %d", n)
		}
		if in := get(t, s, "a"); in.Owner != "node-1" {
			t.Errorf("owner %q, want node-1", in.Owner)
		}
	}},
	{"RemoveNodeWithoutHeartbeat", func(t *testing.T, s store.Store) {
		// Instances are released even if the node row is already gone.
		start(t, s, "a", "node-1")
		if n := removeNode(t, s, "node-1", t0); n != 1 {
			t.Errorf("RemoveNode released %d, want 1", n)
		}
		if n := removeNode(t, s, "node-1", t0); n != 0 {
			t.Errorf("second RemoveNode released %d, want 0", n)
		}
		claimID(t, s, "a", "node-2", t0)
	}},
}
