package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestClusterFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "cluster", "--cluster-calls", "0"}, "--cluster-calls"},
		{[]string{"--scenario", "cluster", "--lease", "-1s"}, "--lease"},
	} {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Main(%q) = %v, want an error that mentions %s", tc.args, err, tc.want)
		}
	}
}

// checkCluster runs the cluster scenario at a tiny size, with a 2 s lease,
// and checks its figures: every path measured, the same-host takeover
// without waiting for the lease, the other-host one after it.
func checkCluster(t *testing.T, backend string, tweak func(*Config)) {
	c := tiny(t, backend, "cluster")
	c.ClusterCalls, c.CrossServiceRounds, c.Lease = 50, 5, 2*time.Second
	if tweak != nil {
		tweak(&c)
	}
	rs, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Scenario != "cluster" || r.Backend != backend {
			t.Errorf("result %+v is not labelled cluster/%s", r, backend)
		}
	}
	v := values(t, rs)
	for _, kind := range []string{"direct_ws_rpc", "forward_ws_rpc", "direct_http", "forward_http", "direct_call", "forward_call"} {
		p50, p99 := v[kind+"_p50_us"], v[kind+"_p99_us"]
		if p50 <= 0 || p99 < p50 {
			t.Errorf("%s: p50 %v µs, p99 %v µs", kind, p50, p99)
		}
	}
	if p50, p99 := v["cross_service_notice_p50_ms"], v["cross_service_notice_p99_ms"]; p50 <= 0 || p99 < p50 {
		t.Errorf("cross_service_notice: p50 %v ms, p99 %v ms", p50, p99)
	}
	if v["lease_s"] != 2 {
		t.Errorf("lease_s = %v, want 2", v["lease_s"])
	}
	if s := v["takeover_same_host_s"]; s <= 0 || s >= 1 {
		t.Errorf("takeover_same_host_s = %v, want under half the lease", s)
	}
	if s := v["takeover_other_host_s"]; s < 1 {
		t.Errorf("takeover_other_host_s = %v, want at least half the lease (the dead node's row must expire)", s)
	}
}

func TestClusterScenarioSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nodes and a child process")
	}
	checkCluster(t, "sqlite", nil)
}

func TestClusterScenarioPostgres(t *testing.T) {
	dsn := os.Getenv("AGENTFLOW_TEST_POSTGRES")
	if dsn == "" || testing.Short() {
		t.Skip("AGENTFLOW_TEST_POSTGRES is not set")
	}
	checkCluster(t, "postgres", func(c *Config) { c.DSN = dsn })
}
