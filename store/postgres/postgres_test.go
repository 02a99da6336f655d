package postgres_test

import (
	"errors"
	"testing"
	"time"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/storetest"
)

// open opens a store in a fresh schema of the test server (see pgtest);
// the schema is dropped when the test ends.
func open(t *testing.T) *postgres.Store {
	t.Helper()
	dsn, schema := pgtest.Schema(t)
	return openSchema(t, dsn, schema)
}

func openSchema(t *testing.T, dsn, schema string) *postgres.Store {
	t.Helper()
	// Small pools: many stores are open at once while the suite runs in parallel.
	s, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	pgtest.DSN(t) // skip the whole suite at once when no server is set
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestSchemaTooNew(t *testing.T) {
	dsn, schema := pgtest.Schema(t)
	if err := openSchema(t, dsn, schema).Close(); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, dsn, `INSERT INTO `+schema+`.agentflow_schema (version) VALUES (1000000)`)

	s, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema})
	if err == nil {
		s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open: %v, want an error matching store.ErrSchemaTooNew", err)
	}
}

func TestReopen(t *testing.T) {
	dsn, schema := pgtest.Schema(t)
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	s := openSchema(t, dsn, schema)
	in := &store.Instance{ID: "a", Workflow: "wf", Status: store.StatusQueued, CreatedAt: t0, WakeAt: t0}
	if err := s.CreateInstances(t.Context(), []*store.Instance{in}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s = openSchema(t, dsn, schema)
		got, err := s.GetInstance(t.Context(), "a")
		if err != nil {
			t.Fatalf("GetInstance after reopening: %v", err)
		}
		if !got.WakeAt.Equal(t0) || got.Workflow != "wf" {
			t.Errorf("after reopening: %+v", got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSchemasAreIsolated(t *testing.T) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := a.CreateInstances(t.Context(), []*store.Instance{{ID: "x", Workflow: "wf", Status: store.StatusQueued, CreatedAt: t0, WakeAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetInstance(t.Context(), "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetInstance in another schema: %v, want ErrNotFound", err)
	}
}

func TestInvalidSchemaName(t *testing.T) {
	dsn := pgtest.DSN(t)
	if s, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: "x; DROP TABLE y"}); err == nil {
		s.Close()
		t.Fatal("Open with an invalid schema name succeeded")
	}
}
