// Package pgtest gives tests a PostgreSQL schema of their own.
//
// Tests that need PostgreSQL read the server's address from the environment
// variable AGENTFLOW_TEST_POSTGRES and skip when it is unset, for example:
//
//	AGENTFLOW_TEST_POSTGRES='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go test ./...
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the environment variable holding the test server's DSN.
const EnvVar = "AGENTFLOW_TEST_POSTGRES"

// DSN returns the test server's DSN, or skips the test when none is set.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvVar)
	if dsn == "" {
		t.Skip("PostgreSQL tests skipped: set " + EnvVar + " to enable them, e.g. " +
			EnvVar + "='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'")
	}
	return dsn
}

// Schema creates a schema with a fresh random name (t_<hex>) for the test
// and drops it, with everything in it, when the test and its cleanups
// registered afterwards have finished. It returns the server's DSN and the
// schema name, to be used as the search path (postgres.Options.Schema). It
// skips the test when no server is configured.
func Schema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = DSN(t)
	var b [8]byte
	rand.Read(b[:])
	schema = "t_" + hex.EncodeToString(b[:])

	exec(t, dsn, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { exec(t, dsn, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return dsn, schema
}

// Exec runs one statement on the test server outside any store, for
// tests that must reach under a store (e.g. to fake a newer schema).
func Exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	exec(t, dsn, sql, args...)
}

func exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	// Not the test's context: cleanups run after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}
