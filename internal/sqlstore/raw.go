package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
)

// RawInsert creates the table bench_raw, unless it exists, and returns a
// write of one small row into it through the store's writer, one
// statement as most of the engine's writes are. It is the store's own
// limit, against which the benchmarks set the engine's writes; the table
// is no part of the schema the engine uses.
func (s *Store) RawInsert(ctx context.Context) (func(context.Context) error, error) {
	ddl := `CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, v BLOB)`
	if s.d.JSON == JSONPostgres {
		ddl = `CREATE TABLE IF NOT EXISTS bench_raw (id BIGSERIAL PRIMARY KEY, v BYTEA)`
	}
	if err := s.w.Write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, ddl)
		return err
	}); err != nil {
		return nil, fmt.Errorf("create bench_raw: %w", err)
	}
	insert := s.d.Rebind(`INSERT INTO bench_raw (v) VALUES (?)`)
	payload := make([]byte, 64) // about the size of a step's checkpoint row
	write := func(ctx context.Context, c Conn) error {
		_, err := c.Exec(ctx, insert, payload)
		return err
	}
	return func(ctx context.Context) error { return s.w.WriteOne(ctx, write) }, nil
}
