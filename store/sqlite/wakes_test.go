package sqlite_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/store/storetest"
)

// TestWakes: two handles on one file, as two processes would have them,
// hear each other's wakes through the sockets beside the file.
func TestWakes(t *testing.T) {
	t.Parallel()
	storetest.RunWakes(t, func(t *testing.T) (store.Store, store.Store) {
		path := filepath.Join(t.TempDir(), "agentflow.db")
		return open(t, path), open(t, path)
	})
}

// TestWakeSockets: a handle's socket is beside the file while it is open
// and gone after Close; a socket nobody is bound to any more (a process
// that died) is removed by the next handle that sends to it; a path too
// long for a socket address moves the sockets under the temporary
// directory, where two handles still find each other.
func TestWakeSockets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "agentflow.db")
	a := open(t, path) // closed below
	socks := func() []string {
		es, _ := os.ReadDir(path + "-wake")
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	if got := socks(); len(got) != 1 {
		t.Fatalf("sockets beside the file: %v, want one", got)
	}

	// A dead process's socket: bound, then closed without removing it.
	dead := filepath.Join(path+"-wake", "1-deadbeef")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dead, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // a datagram socket leaves its file behind
	if _, err := os.Stat(dead); err != nil {
		t.Fatalf("the dead socket's file: %v", err)
	}
	b := open(t, path)
	heard := make(chan store.Wake, 16)
	cancel := b.Subscribe(func(w store.Wake) { heard <- w })
	defer cancel()
	in := &store.Instance{ID: "i1", Workflow: "w", Service: "s", Params: []byte(`{}`), Status: store.StatusQueued,
		CreatedAt: time.Now(), WakeAt: time.Now()}
	in.WakeAt = in.CreatedAt
	if err := a.CreateInstances(t.Context(), []*store.Instance{in}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-heard:
		if w != (store.Wake{Kind: store.WakeInstances, Key: "s"}) {
			t.Errorf("heard %+v", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other handle heard nothing")
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead socket is still there after a send: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := socks(); len(got) != 1 {
		t.Errorf("sockets after one handle closed: %v, want one", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wake"); !os.IsNotExist(err) {
		t.Errorf("the sockets' directory is left after the last handle closed: %v", err)
	}

	// A long path.
	long := filepath.Join(dir, strings.Repeat("d", 90), "agentflow.db")
	if err := os.MkdirAll(filepath.Dir(long), 0o755); err != nil {
		t.Fatal(err)
	}
	storetest.RunWakes(t, func(t *testing.T) (store.Store, store.Store) {
		s1, s2 := open(t, long), open(t, long)
		if _, err := os.Stat(long + "-wake"); !os.IsNotExist(err) {
			t.Errorf("sockets beside a file whose path is too long: %v", err)
		}
		return s1, s2
	})
}

// TestWakesDisabled: without wakes, only the writing handle hears.
func TestWakesDisabled(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentflow.db")
	a, err := sqlite.Open(t.Context(), path, sqlite.Options{DisableWakes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := os.Stat(path + "-wake"); !os.IsNotExist(err) {
		t.Errorf("a socket directory with wakes disabled: %v", err)
	}
	heard := 0
	a.Subscribe(func(store.Wake) { heard++ })
	now := time.Now()
	if err := a.CreateInstances(t.Context(), []*store.Instance{{ID: "i", Workflow: "w", Params: []byte(`{}`),
		Status: store.StatusQueued, CreatedAt: now, WakeAt: now}}); err != nil {
		t.Fatal(err)
	}
	if heard != 1 {
		t.Errorf("the writing handle heard %d wakes, want 1", heard)
	}
}
