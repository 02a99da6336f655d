package httpserver_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"agentflow/internal/httpserver"
)

func TestNew(t *testing.T) {
	t.Parallel()
	h := http.NotFoundHandler()
	for _, tc := range []struct {
		name string
		o    httpserver.Options
		// want is the server's ReadHeaderTimeout, ReadTimeout,
		// WriteTimeout and IdleTimeout.
		want [4]time.Duration
		err  string
	}{
		{"defaults", httpserver.Options{Handler: h},
			[4]time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute}, ""},
		{"set", httpserver.Options{Handler: h, ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second, IdleTimeout: 4 * time.Second},
			[4]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}, ""},
		{"read timeout below the default header timeout", httpserver.Options{Handler: h, ReadTimeout: time.Second}, [4]time.Duration{},
			"Options.ReadHeaderTimeout (10s) must not exceed ReadTimeout (1s)"},
		{"no handler", httpserver.Options{}, [4]time.Duration{}, "Options.Handler is required"},
		{"negative", httpserver.Options{Handler: h, WriteTimeout: -time.Second}, [4]time.Duration{},
			"Options.WriteTimeout is -1s; it must not be negative (0 takes the default, 1m0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, err := httpserver.New(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("New error = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := [4]time.Duration{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout}
			if got != tc.want || srv.Handler == nil {
				t.Errorf("timeouts = %v, want %v (handler %v)", got, tc.want, srv.Handler)
			}
		})
	}
}
