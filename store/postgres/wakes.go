package postgres

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"agentflow/internal/wakebus"
	"agentflow/store"
)

// Wakes on PostgreSQL are LISTEN/NOTIFY on one channel of the database.
//
// The notifications are not sent by the writes themselves, nor by
// triggers: a transaction that notifies takes a database-wide lock while
// it commits, which would serialize the group commits of the hot path.
// Instead a write publishes its wakes after it committed (see
// internal/sqlstore's wakes.go), and this handle's sender sends every wake
// published while its previous notification was on its way as one
// pg_notify transaction of its own, on a connection of the pool: only those
// small transactions, one at a time per handle, take the lock. A process
// that dies between a commit and its notification loses the wake; the
// other processes' polls find the work, as they find everything.
//
// Each handle listens on a connection of its own, outside the pool,
// reconnecting with backoff when it breaks; once listening again it wakes
// every subscriber (store.WakeAll), since notifications sent meanwhile are
// lost. A notification names the schema it is about (several stores may
// share a database, as the tests' schemas do) and the handle that sent it,
// which ignores its own: its subscribers had it at once.

// wakeChannel is the channel every store of a database notifies on.
const wakeChannel = "agentflow_wake"

// maxPayload keeps each notification under PostgreSQL's limit (8,000 bytes).
const maxPayload = 7900

// listener is a handle's LISTEN connection and its loop.
type listener struct {
	bus    *wakebus.Bus
	cfg    *pgx.ConnConfig
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startWakes starts the handle's bus sending through db, and a listener on
// a connection of cfg's receiving. It waits for the listener's
// first connection, so that a handle hears every wake sent after Open
// returns, unless ctx ends first or that connection fails; the listener
// keeps trying in the background then.
func startWakes(ctx context.Context, bus *wakebus.Bus, db *sql.DB, cfg *pgx.ConnConfig) *listener {
	bus.Start(func(ctx context.Context, payloads [][]byte) error {
		ps := make([]string, len(payloads))
		for i, p := range payloads {
			ps[i] = string(p)
		}
		_, err := db.ExecContext(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, wakeChannel, ps)
		return err
	}, maxPayload, nil)
	lcfg := cfg.Copy()
	name := "agentflow wakes " + bus.Scope()
	if len(name) > 63 {
		name = name[:63]
	}
	lcfg.RuntimeParams["application_name"] = name
	lctx, cancel := context.WithCancel(context.Background())
	l := &listener{bus: bus, cfg: lcfg, cancel: cancel, done: make(chan struct{})}
	first, _ := l.connect(ctx) // nil on failure: run tries again
	go l.run(lctx, first)
	return l
}

// connect opens a connection and listens on it.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.Exec(ctx, "LISTEN "+wakeChannel); err != nil {
		_ = c.Close(context.Background())
		return nil, err
	}
	return c, nil
}

// run receives notifications until ctx ends, reconnecting with backoff.
// conn, if not nil, is the connection made while the store opened, already
// listening.
func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.done)
	const (
		minDelay = 50 * time.Millisecond
		maxDelay = 5 * time.Second
		// healthy is how long a connection must have lasted for the
		// backoff to start again from minDelay: a server that drops every
		// connection at once must not make each drop wake everyone.
		healthy = 10 * time.Second
	)
	delay := minDelay
	wait := func() {
		// Jittered exponential backoff.
		select {
		case <-ctx.Done():
		case <-time.After(delay/2 + rand.N(delay/2+1)):
		}
		delay = min(2*delay, maxDelay)
	}
	for ctx.Err() == nil {
		if conn == nil {
			var err error
			if conn, err = l.connect(ctx); err != nil {
				wait()
				continue
			}
			// Wakes sent while no connection listened are lost.
			l.bus.Deliver(store.Wake{Kind: store.WakeAll})
		}
		since := time.Now()
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				break
			}
			l.bus.Receive([]byte(n.Payload))
		}
		_ = conn.Close(context.Background())
		conn = nil
		if time.Since(since) >= healthy {
			delay = minDelay
		}
		if ctx.Err() == nil {
			wait()
		}
	}
}

// close stops listening and sending.
func (l *listener) close() {
	l.once.Do(func() {
		l.cancel()
		<-l.done
		l.bus.Close()
	})
}
