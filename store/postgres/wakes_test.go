package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"agentflow/internal/pgtest"
	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/storetest"
)

// TestWakes: two handles on one schema, as two processes would have them,
// hear each other's wakes through LISTEN/NOTIFY.
func TestWakes(t *testing.T) {
	t.Parallel()
	storetest.RunWakes(t, func(t *testing.T) (store.Store, store.Store) {
		dsn, schema := pgtest.Schema(t)
		return openSchema(t, dsn, schema), openSchema(t, dsn, schema)
	})
}

// TestWakesStayInTheirSchema: a store on another schema of the same
// database hears nothing of this one's wakes.
func TestWakesStayInTheirSchema(t *testing.T) {
	t.Parallel()
	dsn, s1 := pgtest.Schema(t)
	_, s2 := pgtest.Schema(t)
	a, b := openSchema(t, dsn, s1), openSchema(t, dsn, s2)
	defer a.Close()
	defer b.Close()
	heard := make(chan store.Wake, 16)
	b.Subscribe(func(w store.Wake) { heard <- w })
	c := openSchema(t, dsn, s1)
	defer c.Close()
	same := make(chan store.Wake, 16)
	c.Subscribe(func(w store.Wake) { same <- w })
	queue(t, a, "q1", "svc")
	select {
	case <-same:
	case <-time.After(10 * time.Second):
		t.Fatal("a handle on the same schema heard nothing")
	}
	select {
	case w := <-heard:
		t.Errorf("a store on another schema heard %+v", w)
	case <-time.After(100 * time.Millisecond):
	}
}

// queue creates an instance of service svc, queued and due now.
func queue(t *testing.T, s store.Store, id, svc string) {
	t.Helper()
	now := time.Now()
	if err := s.CreateInstances(t.Context(), []*store.Instance{{ID: id, Workflow: "w", Service: svc, Params: []byte(`{}`),
		Status: store.StatusQueued, CreatedAt: now, WakeAt: now}}); err != nil {
		t.Fatal(err)
	}
}

// listeners returns the backend pids of the wake listeners of schema.
func listeners(t *testing.T, dsn, schema string) []uint32 {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(t.Context(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'`,
		"agentflow wakes "+schema)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// TestWakeListenerReconnects: a listener whose connection is killed
// (pg_terminate_backend) connects again with backoff and, since it may
// have missed wakes meanwhile, wakes its subscribers (store.WakeAll); and
// then hears wakes again.
func TestWakeListenerReconnects(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	a, b := openSchema(t, dsn, schema), openSchema(t, dsn, schema)
	defer a.Close()
	defer b.Close()
	heard := make(chan store.Wake, 64)
	b.Subscribe(func(w store.Wake) { heard <- w })
	pids := listeners(t, dsn, schema)
	if len(pids) != 2 {
		t.Fatalf("%d wake listeners of the schema, want 2 (one per handle)", len(pids))
	}
	for _, pid := range pids {
		pgtest.Exec(t, dsn, `SELECT pg_terminate_backend($1)`, int32(pid))
	}
	select {
	case w := <-heard:
		if w.Kind != store.WakeAll {
			t.Errorf("after reconnecting the subscriber heard %+v, want a WakeAll", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not reconnect and wake its subscribers within 10 s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(listeners(t, dsn, schema)) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	queue(t, a, "after", "svc")
	select {
	case w := <-heard:
		if w != (store.Wake{Kind: store.WakeInstances, Key: "svc"}) {
			t.Errorf("heard %+v", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no wake heard after reconnecting")
	}
}

// TestWakesDisabled: without wakes no listener connects, and only the
// writing handle hears its own wakes.
func TestWakesDisabled(t *testing.T) {
	t.Parallel()
	dsn, schema := pgtest.Schema(t)
	a, err := postgres.Open(t.Context(), dsn, postgres.Options{Schema: schema, MaxConns: 4, DisableWakes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if n := len(listeners(t, dsn, schema)); n != 0 {
		t.Errorf("%d listeners with wakes disabled", n)
	}
	b := openSchema(t, dsn, schema)
	defer b.Close()
	remote := make(chan store.Wake, 16)
	b.Subscribe(func(w store.Wake) { remote <- w })
	local := 0
	a.Subscribe(func(store.Wake) { local++ })
	queue(t, a, "q", "svc")
	if local != 1 {
		t.Errorf("the writing handle heard %d wakes, want 1", local)
	}
	select {
	case w := <-remote:
		t.Errorf("another handle heard %+v from a handle with wakes disabled", w)
	case <-time.After(200 * time.Millisecond):
	}
}
