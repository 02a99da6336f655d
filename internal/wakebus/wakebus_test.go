package wakebus

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"agentflow/store"
)

// collect subscribes to b and returns what it heard so far.
func collect(b *Bus) func() []store.Wake {
	var (
		mu  sync.Mutex
		got []store.Wake
	)
	b.Subscribe(func(w store.Wake) {
		mu.Lock()
		got = append(got, w)
		mu.Unlock()
	})
	return func() []store.Wake {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// link starts a sending a's messages to b (and returns how many messages
// went), as a transport would.
func link(a, b *Bus, maxSize int) func() int {
	var (
		mu sync.Mutex
		n  int
	)
	a.Start(func(_ context.Context, ps [][]byte) error {
		mu.Lock()
		n += len(ps)
		mu.Unlock()
		for _, p := range ps {
			b.Receive(p)
		}
		return nil
	}, maxSize, nil)
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPublishReachesLocalAndRemote(t *testing.T) {
	a, b := New("s1"), New("s1")
	defer a.Close()
	local, remote := collect(a), collect(b)
	link(a, b, 8000)
	ws := []store.Wake{{Kind: store.WakeInstances, Key: "email"}, {Kind: store.WakeSchedules, Key: "MyAgent"},
		{Kind: store.WakeOutbox}, {Kind: store.WakeInstances, Key: ""}, {Kind: store.WakeInstances, Key: "email"}}
	a.Publish(ws...)
	want := ws[:4] // the duplicate is delivered once
	if got := local(); !slices.Equal(got, want) {
		t.Errorf("local subscriber heard %v, want %v at once", got, want)
	}
	waitFor(t, "remote delivery", func() bool { return len(remote()) == len(want) })
	got := remote()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("remote subscriber heard %v, missing %v", got, w)
		}
	}
}

func TestReceiveIgnoresOwnAndOtherScopes(t *testing.T) {
	a, other := New("s1"), New("s2")
	heard := collect(a)
	var sent [][]byte
	a.Start(func(_ context.Context, ps [][]byte) error { sent = append(sent, ps...); return nil }, 8000, nil)
	a.Publish(store.Wake{Kind: store.WakeOutbox})
	a.Close() // waits for the send
	for _, p := range sent {
		a.Receive(p) // its own message
	}
	other.maxSize = 8000
	for _, p := range other.encode([]store.Wake{{Kind: store.WakeAll}}) {
		a.Receive(p) // another store's
	}
	a.Receive([]byte("garbage"))
	a.Receive([]byte("afw1 s1 x\nzfuture kind\n"))
	if got := heard(); len(got) != 1 {
		t.Errorf("heard %v, want only the local delivery", got)
	}
}

func TestEncodeSplitsAndFallsBack(t *testing.T) {
	b := New("scope with space")
	b.maxSize = 100
	if b.Scope() != "scope_with_space" {
		t.Errorf("scope %q", b.Scope())
	}
	var ws []store.Wake
	for i := range 20 {
		ws = append(ws, store.Wake{Kind: store.WakeSchedules, Key: strings.Repeat("k", 10) + string(rune('a'+i))})
	}
	ws = append(ws, store.Wake{Kind: store.WakeInstances, Key: "bad\nkey"}, store.Wake{Kind: store.WakeInstances, Key: strings.Repeat("x", 200)})
	var got []store.Wake
	for _, p := range b.encode(ws) {
		if len(p) > 100 {
			t.Errorf("payload of %d bytes, max 100", len(p))
		}
		scope, sender, w, ok := decode(p)
		if !ok || scope != b.scope || sender != b.sender {
			t.Fatalf("decode(%q) = %q %q %v", p, scope, sender, ok)
		}
		got = append(got, w...)
	}
	want := append(slices.Clone(ws[:20]), store.Wake{Kind: store.WakeAll}, store.Wake{Kind: store.WakeAll})
	if !slices.Equal(got, want) {
		t.Errorf("decoded %v, want %v", got, want)
	}
}

// A burst of publishes while a send is on its way goes as one message.
func TestSenderCoalesces(t *testing.T) {
	a, b := New("s"), New("s")
	heard := collect(b)
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		sent int
	)
	a.Start(func(_ context.Context, ps [][]byte) error {
		<-release
		mu.Lock()
		sent++
		mu.Unlock()
		for _, p := range ps {
			b.Receive(p)
		}
		return nil
	}, 8000, nil)
	defer a.Close()
	a.Publish(store.Wake{Kind: store.WakeInstances, Key: "first"})
	time.Sleep(20 * time.Millisecond) // the sender takes it and blocks
	for range 1000 {
		a.Publish(store.Wake{Kind: store.WakeInstances, Key: "burst"})
	}
	close(release)
	waitFor(t, "both wakes", func() bool { return len(heard()) == 2 })
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if sent != 2 || len(heard()) != 2 {
		t.Errorf("%d messages carrying %v, want 2 carrying first and burst once each", sent, heard())
	}
}

func TestUnsubscribe(t *testing.T) {
	b := New("s")
	n := 0
	cancel := b.Subscribe(func(store.Wake) { n++ })
	b.Publish(store.Wake{Kind: store.WakeOutbox})
	cancel()
	b.Publish(store.Wake{Kind: store.WakeOutbox})
	if n != 1 {
		t.Errorf("heard %d wakes, want 1 before cancel", n)
	}
}
