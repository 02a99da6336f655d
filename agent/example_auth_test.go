package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/coder/websocket"

	"agentflow/agent"
	"agentflow/store"
	"agentflow/store/sqlite"
	"agentflow/workflow"
)

// Profile is one user's agent: the instance named after the user.
type Profile struct{ agent.Agent[struct{}] }

// OnRequest answers GET /agents/profile/<user>.
func (p *Profile) OnRequest(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "profile of %s", p.Name())
}

// startProfiles runs a runtime with the Profile class on a temporary
// SQLite file, and returns it and how to stop it.
func startProfiles(ctx context.Context) (*agent.Runtime, func()) {
	dir, err := os.MkdirTemp("", "agentflow-example-auth")
	if err != nil {
		panic(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		panic(err)
	}
	agent.MustRegister[Profile](rt, "Profile", agent.ClassOptions{})
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	if err := rt.Start(ctx); err != nil {
		panic(err)
	}
	return rt, func() {
		rt.Stop(ctx)
		eng.Stop(ctx)
		st.Close()
		os.RemoveAll(dir)
	}
}

// printGet requests url with the given headers and prints the answer.
func printGet(label, url string, header http.Header) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		panic(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d %s\n", label, resp.StatusCode, strings.TrimSpace(string(body)))
}

// The ready bearer-token check: the token in an Authorization header, or
// in the token query parameter from a browser WebSocket.
func ExampleHandlerOptions_token() {
	ctx := context.Background()
	rt, stop := startProfiles(ctx)
	defer stop()

	h := rt.Handler(agent.HandlerOptions{Token: "s3cret"}) // an empty Token requires none

	srv := httptest.NewServer(h)
	defer srv.Close()

	printGet("no token", srv.URL+"/agents/profile/ada", nil)
	printGet("header", srv.URL+"/agents/profile/ada", http.Header{"Authorization": {"Bearer s3cret"}})
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/agents/profile/ada?token=s3cret", nil)
	if err != nil {
		panic(err)
	}
	_, frame, err := ws.Read(ctx)
	if err != nil {
		panic(err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	fmt.Println("WebSocket:", string(frame))
	// Output:
	// no token: 401 unauthorized: send the token in an Authorization: Bearer header (or, from a browser WebSocket, in the token query parameter)
	// header: 200 profile of ada
	// WebSocket: {"type":"cf_agent_identity","name":"ada","agent":"profile","stateFollows":true}
}

// Authentication of your own: BeforeRequest and BeforeConnect run before
// the instance is touched, and a refusal's status is the error's when it
// is a StatusCoder (agent.HTTPError is one). Here each user, known by an
// API key, may reach only the Profile named after them.
func ExampleHandlerOptions_hooks() {
	ctx := context.Background()
	rt, stop := startProfiles(ctx)
	defer stop()

	users := map[string]string{"key-ada": "ada", "key-bob": "bob"} // API key → user; ask your identity provider
	authorize := func(r *http.Request, key store.AgentKey) error {
		user, ok := users[r.Header.Get("X-API-Key")]
		if !ok { // a browser WebSocket cannot set headers: the key comes in the query
			user, ok = users[r.URL.Query().Get("api_key")]
		}
		if !ok {
			return &agent.HTTPError{Status: http.StatusUnauthorized, Message: "unknown or missing API key"}
		}
		if key.Name != user {
			return &agent.HTTPError{Status: http.StatusForbidden, Message: user + " may not use " + key.Name + "'s " + key.Class}
		}
		return nil
	}
	h := rt.Handler(agent.HandlerOptions{BeforeRequest: authorize, BeforeConnect: authorize})

	srv := httptest.NewServer(h)
	defer srv.Close()
	printGet("no key", srv.URL+"/agents/profile/ada", nil)
	printGet("bob's key", srv.URL+"/agents/profile/ada", http.Header{"X-API-Key": {"key-bob"}})
	printGet("ada's key", srv.URL+"/agents/profile/ada", http.Header{"X-API-Key": {"key-ada"}})
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/agents/profile/ada?api_key=key-bob", nil)
	fmt.Println("bob's WebSocket:", resp.StatusCode, err != nil)
	// Output:
	// no key: 401 unknown or missing API key
	// bob's key: 403 bob may not use ada's Profile
	// ada's key: 200 profile of ada
	// bob's WebSocket: 403 true
}
