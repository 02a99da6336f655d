package sqlite_test

import (
	"path/filepath"
	"testing"

	"agentflow/internal/sqlstore"
	"agentflow/store/sqlite"
	"agentflow/store/storetest"
)

// The stores' benchmarks (storetest) on a file in the temporary directory,
// with the default synchronous=FULL. With TMPDIR on a tmpfs (where fsync
// costs nothing) they measure the writer's CPU alone:
//
//	TMPDIR=/dev/shm go test -run '^$' -bench . -count 6 ./store/sqlite

func BenchmarkWrites(b *testing.B)       { storetest.BenchmarkWrites(b, openBench) }
func BenchmarkDueSchedules(b *testing.B) { storetest.BenchmarkDueSchedules(b, openBench) }

func openBench(b *testing.B) storetest.Writes {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := s.Store.(*sqlstore.Store).RawInsert(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return storetest.Writes{Store: s, Insert: raw}
}
