//go:build !unix

package sqlite

import "agentflow/internal/wakebus"

// Without Unix datagram sockets, wakes reach only the handle that made
// the write; other processes notice its work at their next poll.
type sockets struct{}

func startWakes(*wakebus.Bus, string) (*sockets, error) { return nil, nil }

func (*sockets) close() {}
