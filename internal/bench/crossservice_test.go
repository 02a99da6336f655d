package bench

import (
	"context"
	"os"
	"testing"
)

// TestCrossService runs the cross-service scenario at a tiny size on both
// stores: every figure is there, and the wakes keep the waits far below
// the engines' and the runtime's poll interval (1 s).
func TestCrossService(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two engines and an agent runtime")
	}
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			c := tiny(t, backend, "cross-service")
			c.CrossServiceRounds = 20
			if backend == "postgres" {
				if c.DSN = os.Getenv("AGENTFLOW_TEST_POSTGRES"); c.DSN == "" {
					t.Skip("AGENTFLOW_TEST_POSTGRES is not set")
				}
			}
			rs, err := Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			v := values(t, rs)
			t.Logf("%v", v)
			for _, m := range []string{"start", "notice", "roundtrip"} {
				p50, p99 := v["cross_service_"+m+"_p50_ms"], v["cross_service_"+m+"_p99_ms"]
				if p50 <= 0 || p99 < p50 {
					t.Errorf("%s: p50 %v ms, p99 %v ms", m, p50, p99)
				}
			}
			// Polling alone would make each wait 0.5 s on average.
			if p50 := v["cross_service_roundtrip_p50_ms"]; p50 > 400 {
				t.Errorf("round trip p50 %v ms: the wakes did not work", p50)
			}
		})
	}
}
