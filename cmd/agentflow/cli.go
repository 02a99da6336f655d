package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"agentflow/admin"
)

// The commands that talk to a server: workflows, agents, schedules,
// submissions. Each prints a table by default and the API's JSON with
// --json; list and describe commands follow changes with --watch.

// The environment variables of --server and --token, and the default server.
const (
	envServer     = "AGENTFLOW_SERVER"
	defaultServer = "http://127.0.0.1:8787"
)

type cli struct {
	getenv func(string) string
	stdout io.Writer

	server, token string
	json          bool
	// pollEvery is --watch's period.
	pollEvery time.Duration
}

// clientFlags adds the flags every client command takes.
func (c *cli) clientFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&c.server, "server", "", "the agentflow server's URL (default $"+envServer+", else "+defaultServer+")")
	cmd.PersistentFlags().StringVar(&c.token, "token", "", "the server's bearer token (default $"+envToken+")")
	cmd.PersistentFlags().BoolVar(&c.json, "json", false, "print the API's JSON instead of a table")
}

func (c *cli) client() (*admin.Client, error) {
	server := c.server
	if server == "" {
		server = c.getenv(envServer)
	}
	if server == "" {
		server = defaultServer
	}
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		return nil, usagef("--server %q: must be an http:// or https:// URL", server)
	}
	token := c.token
	if token == "" {
		token = c.getenv(envToken)
	}
	return &admin.Client{BaseURL: server, Token: token, HTTPClient: &http.Client{Timeout: 30 * time.Second}}, nil
}

// args checks a command's positional arguments, as a usage error.
func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("takes %s (%d argument(s)), got %d: %q", names, n, len(args), args)
		}
		return nil
	}
}

// agentArg reads CLASS/NAME.
func agentArg(s string) (class, name string, err error) {
	class, name, ok := strings.Cut(s, "/")
	if !ok || class == "" || name == "" {
		return "", "", usagef("agent %q: must be CLASS/NAME, e.g. Counter/alice", s)
	}
	return class, name, nil
}

// agentClient parses an agent argument, CLASS/NAME, and returns it with
// the client, for the commands about one agent.
func (c *cli) agentClient(arg string) (cl *admin.Client, class, name string, err error) {
	if class, name, err = agentArg(arg); err != nil {
		return nil, "", "", err
	}
	cl, err = c.client()
	return cl, class, name, err
}

// show prints v as JSON with --json, and with draw otherwise.
func (c *cli) show(v any, draw func(w io.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	var b bytes.Buffer
	draw(&b)
	_, err := c.stdout.Write(b.Bytes())
	return err
}

// display calls fetch and prints its answer once or, with --watch, again
// each time it changes (polled every second) until ctx is done.
func display[T any](ctx context.Context, c *cli, watching bool, fetch func(ctx context.Context) (T, error), draw func(w io.Writer, v T)) error {
	var last []byte
	every := c.pollEvery
	if every == 0 {
		every = time.Second
	}
	for {
		v, err := fetch(ctx)
		if err != nil {
			if watching && ctx.Err() != nil {
				return nil
			}
			return err
		}
		b, _ := json.Marshal(v)
		if !bytes.Equal(b, last) {
			last = b
			if watching && !c.json {
				if isTerminal(c.stdout) {
					fmt.Fprint(c.stdout, "\033[H\033[2J")
				} else {
					fmt.Fprintf(c.stdout, "--- %s\n", time.Now().Format(time.TimeOnly))
				}
			}
			if err := c.show(v, func(w io.Writer) { draw(w, v) }); err != nil {
				return err
			}
		}
		if !watching {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// pageFlags adds a paged list's --limit, --page-token and --watch.
func pageFlags(cmd *cobra.Command, limit *int, token *string, watching *bool) {
	fl := cmd.Flags()
	fl.IntVar(limit, "limit", 0, "page size, 1 to 100 (default 100)")
	fl.StringVar(token, "page-token", "", "the page after the one that printed this token")
	fl.BoolVar(watching, "watch", false, "re-draw when the list changes (polls every second; Ctrl-C to stop)")
}

// drawMore tells how to get the page after this one, if there is one.
func drawMore(w io.Writer, token string) {
	if token != "" {
		fmt.Fprintf(w, "\nmore: --page-token %s\n", token)
	}
}

// ago formats a time for a table: local clock time, with the date when it
// is not today.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	t = t.Local()
	if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// jsonArg reads a JSON argument: inline, or @file, or @- for stdin.
func jsonArg(flag, v string, stdin io.Reader) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	b := []byte(v)
	if strings.HasPrefix(v, "@") {
		var err error
		if v == "@-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(v[1:])
		}
		if err != nil {
			return nil, usagef("--%s %s: %v", flag, v, err)
		}
	}
	if !json.Valid(b) {
		return nil, usagef("--%s: not valid JSON: %s", flag, clip(string(b), 80))
	}
	return json.RawMessage(b), nil
}

// timeFlag parses an RFC 3339 time flag.
func timeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("--%s %q: must be an RFC 3339 time such as 2025-02-23T09:00:00Z", name, v)
	}
	return t, nil
}
