// Package wakebus carries a store's wakes (store.Wake) to the subscribers
// of every handle on the store: at once to those of the handle that made
// the write, and through a transport (PostgreSQL's NOTIFY, datagram
// sockets beside an SQLite file) to the other handles, in this process or
// others.
//
// A write publishes its wakes after it committed. They go to this handle's
// subscribers in the publishing goroutine, and to a sender goroutine that
// sends, as one message, every wake published while its previous message
// was on its way, each once, and at most one message every MinInterval: a
// burst of writes costs a few messages, and none is sent inside a write's
// transaction.
package wakebus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"agentflow/store"
)

// MinInterval is the least time between the starts of two sends of a
// handle. Under a stream of writes that publish (a backlog of queued
// instances) it bounds the messages to 200 a second, each carrying every
// wake of its 5 ms; a wake published after a quiet spell goes at once.
const MinInterval = 5 * time.Millisecond

// SendFunc sends payloads, each one message of the transport.
type SendFunc func(ctx context.Context, payloads [][]byte) error

// Bus is one store handle's wakes.
type Bus struct {
	scope  string // the store the wakes are about: a schema, a file
	sender string // this handle, so that it skips its own messages

	subMu sync.Mutex // held to change subs
	subs  atomic.Pointer[[]sub]
	next  uint64

	outMu   sync.Mutex
	out     map[store.Wake]struct{} // published, not yet sent
	kick    chan struct{}
	send    SendFunc
	maxSize int
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	sendErr func(error)
}

// New returns a bus for the store named by scope, which messages carry so
// that handles on other stores sharing a transport ignore them. Spaces and
// newlines in scope become underscores.
func New(scope string) *Bus {
	var b [8]byte
	_, _ = rand.Read(b[:])
	scope = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' {
			return '_'
		}
		return r
	}, scope)
	return &Bus{scope: scope, sender: hex.EncodeToString(b[:]), out: map[store.Wake]struct{}{}, kick: make(chan struct{}, 1)}
}

// Scope returns the store's name the bus was made with.
func (b *Bus) Scope() string { return b.scope }

// sub is one subscriber.
type sub struct {
	id uint64
	fn func(store.Wake)
}

// Start sends published wakes with send, in payloads of at most maxSize
// bytes, until Close; onErr, if not nil, is told of failed sends (whose
// wakes are dropped: polling finds the work). Without Start, wakes reach
// only this handle's subscribers.
func (b *Bus) Start(send SendFunc, maxSize int, onErr func(error)) {
	b.send, b.maxSize, b.sendErr = send, maxSize, onErr
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	go b.sendLoop()
}

// Close stops sending; wakes published since the last send are dropped.
func (b *Bus) Close() {
	b.once.Do(func() {
		if b.stop != nil {
			close(b.stop)
			<-b.done
		}
	})
}

// Subscribe implements store.Waker.
func (b *Bus) Subscribe(fn func(store.Wake)) (cancel func()) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	id := b.next
	b.next++
	var subs []sub
	if p := b.subs.Load(); p != nil {
		subs = *p
	}
	subs = append(slices.Clone(subs), sub{id, fn})
	b.subs.Store(&subs)
	return func() {
		b.subMu.Lock()
		defer b.subMu.Unlock()
		subs := slices.DeleteFunc(slices.Clone(*b.subs.Load()), func(s sub) bool { return s.id == id })
		b.subs.Store(&subs)
	}
}

// Publish tells this handle's subscribers at once, and the other handles
// through the transport, that ws became due.
func (b *Bus) Publish(ws ...store.Wake) {
	if len(ws) == 0 {
		return
	}
	b.Deliver(ws...)
	if b.stop == nil {
		return
	}
	b.outMu.Lock()
	for _, w := range ws {
		b.out[w] = struct{}{}
	}
	b.outMu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Deliver tells this handle's subscribers, and only them, that ws became
// due; a transport calls it for WakeAll after it may have missed messages.
func (b *Bus) Deliver(ws ...store.Wake) {
	p := b.subs.Load()
	if p == nil {
		return
	}
	for i, w := range ws {
		if dupBefore(ws, i) {
			continue
		}
		for _, s := range *p {
			s.fn(w)
		}
	}
}

// dupBefore reports whether ws[i] appeared earlier in ws.
func dupBefore(ws []store.Wake, i int) bool {
	for _, w := range ws[:i] {
		if w == ws[i] {
			return true
		}
	}
	return false
}

// Receive delivers the wakes of a message from the transport, unless the
// message is this handle's own or about another store.
func (b *Bus) Receive(payload []byte) {
	scope, sender, ws, ok := decode(payload)
	if !ok || scope != b.scope || sender == b.sender {
		return
	}
	b.Deliver(ws...)
}

func (b *Bus) sendLoop() {
	defer close(b.done)
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		b.outMu.Lock()
		ws := make([]store.Wake, 0, len(b.out))
		for w := range b.out {
			ws = append(ws, w)
		}
		clear(b.out)
		b.outMu.Unlock()
		if len(ws) == 0 {
			continue
		}
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.send(ctx, b.encode(ws))
		cancel()
		if err != nil && b.sendErr != nil {
			b.sendErr(err)
		}
		if d := MinInterval - time.Since(began); d > 0 {
			select {
			case <-b.stop:
				return
			case <-time.After(d):
			}
		}
	}
}

// The message format, one text: a header line "afw1 <scope> <sender>",
// then one line per wake, its kind's letter followed by its key.
const magic = "afw1"

var kindLetters = [...]byte{store.WakeAll: 'a', store.WakeInstances: 'i', store.WakeSchedules: 's', store.WakeOutbox: 'o'}

// encode packs ws into payloads of at most b.maxSize bytes each. A wake
// whose key cannot be carried (a newline in it, or too long) goes as a
// WakeAll.
func (b *Bus) encode(ws []store.Wake) [][]byte {
	header := magic + " " + b.scope + " " + b.sender + "\n"
	var (
		out [][]byte
		cur bytes.Buffer
	)
	cur.WriteString(header)
	n := 0
	for _, w := range ws {
		if int(w.Kind) >= len(kindLetters) || strings.ContainsAny(w.Key, "\n\x00") || len(header)+1+len(w.Key)+1 > b.maxSize {
			w = store.Wake{Kind: store.WakeAll}
		}
		if n > 0 && cur.Len()+1+len(w.Key)+1 > b.maxSize {
			out = append(out, bytes.Clone(cur.Bytes()))
			cur.Reset()
			cur.WriteString(header)
			n = 0
		}
		cur.WriteByte(kindLetters[w.Kind])
		cur.WriteString(w.Key)
		cur.WriteByte('\n')
		n++
	}
	if n > 0 {
		out = append(out, bytes.Clone(cur.Bytes()))
	}
	return out
}

func decode(p []byte) (scope, sender string, ws []store.Wake, ok bool) {
	head, rest, found := strings.Cut(string(p), "\n")
	if !found {
		return "", "", nil, false
	}
	f := strings.Split(head, " ")
	if len(f) != 3 || f[0] != magic {
		return "", "", nil, false
	}
	for line := range strings.SplitSeq(rest, "\n") {
		if line == "" {
			continue
		}
		var k store.WakeKind
		switch line[0] {
		case 'a':
			k = store.WakeAll
		case 'i':
			k = store.WakeInstances
		case 's':
			k = store.WakeSchedules
		case 'o':
			k = store.WakeOutbox
		default:
			continue // a kind of a later version
		}
		ws = append(ws, store.Wake{Kind: k, Key: line[1:]})
	}
	return f[1], f[2], ws, true
}
