package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"agentflow/internal/pgtest"
)

// The store's connections plan statements for any parameters unless the
// DSN says otherwise.
func TestPlanCacheMode(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	for _, tc := range []struct {
		name, param, want string
	}{
		{"default", "", "force_generic_plan"},
		{"set by the DSN", "auto", "auto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			if tc.param != "" {
				cfg.RuntimeParams["plan_cache_mode"] = tc.param
			}
			db := openDB(cfg)
			defer db.Close()
			var got string
			if err := db.QueryRowContext(t.Context(), "SHOW plan_cache_mode").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("plan_cache_mode = %q, want %q", got, tc.want)
			}
		})
	}
}
