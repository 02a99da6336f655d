// Package teststore opens a store by backend name, for tests whose child
// processes are told in a config which store to open.
package teststore

import (
	"context"
	"fmt"

	"agentflow/store"
	"agentflow/store/postgres"
	"agentflow/store/sqlite"
)

// Open opens the SQLite file sqlitePath (backend "sqlite") or the schema of
// the PostgreSQL database at dsn (backend "postgres").
func Open(ctx context.Context, backend, sqlitePath, dsn, schema string) (store.Store, error) {
	switch backend {
	case "sqlite":
		return sqlite.Open(ctx, sqlitePath, sqlite.Options{})
	case "postgres":
		return postgres.Open(ctx, dsn, postgres.Options{Schema: schema, MaxConns: 8})
	}
	return nil, fmt.Errorf("teststore: unknown backend %q", backend)
}
