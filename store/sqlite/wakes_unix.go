//go:build unix

package sqlite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"agentflow/internal/wakebus"
)

// Wakes on SQLite are datagrams between the processes that have the file
// open, on the same host as SQLite requires: each store handle binds a
// Unix datagram socket in a directory beside the database file (FILE-wake,
// or, when that path is too long for a socket address, a directory under
// the system's temporary directory named by a hash of the file's path),
// named for its process and a random suffix. A handle's sender sends every
// wake published while its previous send was on its way as one datagram to
// each other socket of the directory, removing the sockets nobody listens
// on any more (a process that died); no HTTP server or other process is
// needed. A datagram is only a hint: one a full receiver cannot take is
// dropped, and polling finds the work.

// maxDatagram bounds one wake datagram.
const maxDatagram = 8192

// maxSocketPath is the longest socket path used: sun_path holds 104 bytes
// on the BSDs and macOS, 108 on Linux, with the terminating NUL.
const maxSocketPath = 100

// sendTimeout bounds a send to one socket whose receiver is not reading.
const sendTimeout = 50 * time.Millisecond

// sockets is a handle's wake socket and its receiving loop.
type sockets struct {
	bus  *wakebus.Bus
	dir  string
	path string // this handle's socket
	conn *net.UnixConn
	done chan struct{}
	once sync.Once
}

// wakeDir returns the directory of the sockets of database file abs.
func wakeDir(abs string) string {
	if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(real, filepath.Base(abs))
	}
	dir := abs + "-wake"
	if len(dir)+1+32 <= maxSocketPath { // a socket's name is under 32 bytes
		return dir
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "agentflow-wake-"+hex.EncodeToString(sum[:8]))
}

// startWakes binds this handle's socket for the database file abs and
// starts bus sending to the others.
func startWakes(bus *wakebus.Bus, abs string) (*sockets, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir := wakeDir(abs)
	s := &sockets{bus: bus, dir: dir, path: filepath.Join(dir, fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b[:]))),
		done: make(chan struct{})}
	var err error
	for range 3 { // a handle closing may remove the directory meanwhile
		if err = os.MkdirAll(dir, 0o700); err != nil {
			continue
		}
		s.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("wake socket in %s: %w", dir, err)
	}
	go s.receive()
	bus.Start(s.send, maxDatagram, nil)
	return s, nil
}

func (s *sockets) receive() {
	defer close(s.done)
	buf := make([]byte, maxDatagram+1)
	for {
		n, _, err := s.conn.ReadFromUnix(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // not expected on a datagram socket
			continue
		}
		s.bus.Receive(buf[:n])
	}
}

// send sends payloads to every other socket in the directory.
func (s *sockets) send(_ context.Context, payloads [][]byte) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	self := filepath.Base(s.path)
	for _, e := range entries {
		if e.Name() == self {
			continue
		}
		path := filepath.Join(s.dir, e.Name())
		addr := &net.UnixAddr{Name: path, Net: "unixgram"}
		_ = s.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
		for _, p := range payloads {
			if _, err := s.conn.WriteToUnix(p, addr); err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					_ = os.Remove(path) // nobody is bound to it: its process is gone
				}
				break // gone, or not reading: the rest would fail the same way
			}
		}
	}
	return nil
}

// close stops sending and receiving and removes the socket, and the
// directory if it is then empty.
func (s *sockets) close() {
	s.once.Do(func() {
		s.bus.Close()
		_ = s.conn.Close()
		<-s.done
		_ = os.Remove(s.path)
		_ = os.Remove(s.dir) // fails while other handles' sockets are in it
	})
}
