// Package httpserver builds the HTTP servers agentflow starts (agentflow
// dev, the flights example's flights-agents) with every timeout set, so that
// a slow or stalled client holds a connection for a bounded time only.
//
// WebSocket connections are not cut by these timeouts: net/http clears a
// connection's deadlines when a handler hijacks it, and
// github.com/coder/websocket sets none of its own (it bounds reads and
// writes with contexts). A handler that streams a response for longer than
// WriteTimeout must extend its deadline with
// http.NewResponseController(w).SetWriteDeadline.
package httpserver

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"
)

// The defaults of Options.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// Options configure New. Handler is required; a zero timeout takes its
// default, none may be negative, and ReadHeaderTimeout may not exceed
// ReadTimeout.
type Options struct {
	Handler http.Handler
	// ErrorLog receives the server's errors; default the log package's
	// standard logger.
	ErrorLog *log.Logger
	// ReadHeaderTimeout bounds reading a request's headers; default 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, its body included;
	// default 30 s. A client that sends its body too slowly has its
	// connection closed.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its response; default 60 s.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection; default 120 s.
	IdleTimeout time.Duration
}

// New returns a server for o.Handler with o's timeouts.
func New(o Options) (*http.Server, error) {
	if o.Handler == nil {
		return nil, errors.New("httpserver: Options.Handler is required")
	}
	for _, t := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"ReadHeaderTimeout", &o.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"ReadTimeout", &o.ReadTimeout, DefaultReadTimeout},
		{"WriteTimeout", &o.WriteTimeout, DefaultWriteTimeout},
		{"IdleTimeout", &o.IdleTimeout, DefaultIdleTimeout},
	} {
		switch {
		case *t.d < 0:
			return nil, fmt.Errorf("httpserver: Options.%s is %s; it must not be negative (0 takes the default, %s)", t.name, *t.d, t.def)
		case *t.d == 0:
			*t.d = t.def
		}
	}
	if o.ReadHeaderTimeout > o.ReadTimeout {
		return nil, fmt.Errorf("httpserver: Options.ReadHeaderTimeout (%s) must not exceed ReadTimeout (%s), which bounds the headers too", o.ReadHeaderTimeout, o.ReadTimeout)
	}
	return &http.Server{
		Handler:           o.Handler,
		ErrorLog:          o.ErrorLog,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
	}, nil
}
