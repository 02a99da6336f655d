package postgres_test

import (
	"testing"

	"agentflow/internal/pgtest"
	"agentflow/internal/sqlstore"
	"agentflow/store/postgres"
	"agentflow/store/storetest"
)

// The stores' benchmarks (storetest), each in a fresh schema of the test
// server (AGENTFLOW_TEST_POSTGRES) with the store's default pool:
//
//	go test -run '^$' -bench . -count 6 ./store/postgres

func BenchmarkWrites(b *testing.B)       { storetest.BenchmarkWrites(b, openBench) }
func BenchmarkDueSchedules(b *testing.B) { storetest.BenchmarkDueSchedules(b, openBench) }

func openBench(b *testing.B) storetest.Writes {
	dsn, schema := pgtest.Schema(b)
	s, err := postgres.Open(b.Context(), dsn, postgres.Options{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := s.Store.(*sqlstore.Store).RawInsert(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return storetest.Writes{Store: s, Insert: raw}
}
