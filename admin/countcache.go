package admin

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"agentflow/store"
)

// DefaultCountsMaxAge is Options.CountsMaxAge's default.
const DefaultCountsMaxAge = 2 * time.Second

// countsTimeout bounds one count. It runs apart from the request that
// started it, since every request for the same filter waits for it.
const countsTimeout = 30 * time.Second

// maxCachedCounts bounds how many filters' counts are kept at once.
const maxCachedCounts = 256

// countCache keeps each filter's status counts for a short while and
// runs one count at a time per filter. Counting reads every matching row
// (100–400 ms per million instances), and every open dashboard asks for
// the counts every second or two: without it, ten operators watching a
// large table would keep the database counting.
type countCache struct {
	maxAge time.Duration // <= 0: no caching, but still one count per filter at a time
	now    func() time.Time
	group  singleflight.Group

	mu    sync.Mutex
	fresh map[string]countsAt
}

type countsAt struct {
	counts map[store.Status]int
	at     time.Time
}

func newCountCache(maxAge time.Duration, now func() time.Time) *countCache {
	return &countCache{maxAge: maxAge, now: now, fresh: make(map[string]countsAt)}
}

// get returns key's counts, from the cache when they are younger than
// maxAge, and when they were taken.
func (c *countCache) get(ctx context.Context, key string, count func(context.Context) (map[store.Status]int, error)) (countsAt, error) {
	if e, ok := c.lookup(key); ok {
		return e, nil
	}
	ch := c.group.DoChan(key, func() (any, error) {
		at := c.now()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), countsTimeout)
		defer cancel()
		counts, err := count(cctx)
		if err != nil {
			return countsAt{}, err
		}
		e := countsAt{counts: counts, at: at}
		c.keep(key, e)
		return e, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return countsAt{}, r.Err
		}
		return r.Val.(countsAt), nil
	case <-ctx.Done():
		return countsAt{}, ctx.Err()
	}
}

func (c *countCache) lookup(key string) (countsAt, bool) {
	if c.maxAge <= 0 {
		return countsAt{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.fresh[key]
	if !ok || c.now().Sub(e.at) >= c.maxAge {
		return countsAt{}, false
	}
	return e, true
}

func (c *countCache) keep(key string, e countsAt) {
	if c.maxAge <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fresh) >= maxCachedCounts {
		now := c.now()
		for k, old := range c.fresh {
			if now.Sub(old.at) >= c.maxAge {
				delete(c.fresh, k)
			}
		}
		if len(c.fresh) >= maxCachedCounts {
			clear(c.fresh)
		}
	}
	c.fresh[key] = e
}
