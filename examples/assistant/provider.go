package assistant

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"agentflow/model"
	"agentflow/model/anthropic"
	"agentflow/model/openai"
	"agentflow/model/scripted"
)

// The environment variables Provider reads.
const (
	EnvProvider = "AGENTFLOW_MODEL_PROVIDER" // openai | anthropic | scripted
	EnvBaseURL  = "AGENTFLOW_MODEL_BASE_URL"
	EnvAPIKey   = "AGENTFLOW_MODEL_API_KEY"
	EnvModel    = "AGENTFLOW_MODEL"
)

// ScriptedDescription is Provider's description of the scripted model.
const ScriptedDescription = "scripted model (no provider configured)"

// Retry is how real providers are retried (model.WithRetry): a transport
// error, a 429 or a 5xx before any streamed event is sent again, at most
// four tries in all.
var Retry = model.Retry{Attempts: 4, MinDelay: 500 * time.Millisecond, MaxDelay: 10 * time.Second}

// Provider builds the model provider the environment configures, read
// through getenv (os.Getenv in a program), and describes it plainly:
//
//   - AGENTFLOW_MODEL_PROVIDER: openai (any OpenAI-compatible chat
//     completions server) or anthropic; default openai when a base URL or
//     an API key is set; "scripted" asks for the scripted model.
//   - AGENTFLOW_MODEL_BASE_URL: the API root, e.g. http://127.0.0.1:11434/v1
//     for Ollama; default the provider's own API.
//   - AGENTFLOW_MODEL_API_KEY: the key, when the server wants one.
//   - AGENTFLOW_MODEL: the model name; required with a real provider.
//
// With none of them set it returns the scripted model (package
// model/scripted), which answers every message by calling get_time and
// then reporting its result, and the description
// "scripted model (no provider configured)". Real providers are wrapped
// with model.WithRetry (Retry). A configuration it cannot honour — an
// unknown provider name, a model name without a provider, no model name, a
// base URL that is not http(s) — is an error naming the variable and its
// value (never the key's).
func Provider(getenv func(string) string) (model.Provider, string, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	kind := strings.ToLower(env(EnvProvider))
	base, key, name := env(EnvBaseURL), env(EnvAPIKey), env(EnvModel)
	if kind == "" {
		switch {
		case base != "" || key != "":
			kind = "openai"
		case name != "":
			return nil, "", fmt.Errorf("%s is %q but no provider is configured: set %s (and %s if the server wants one), or %s=openai|anthropic",
				EnvModel, name, EnvBaseURL, EnvAPIKey, EnvProvider)
		default:
			return Scripted(), ScriptedDescription, nil
		}
	}
	switch kind {
	case "scripted":
		return Scripted(), "scripted model (" + EnvProvider + "=scripted)", nil
	case "openai", "anthropic":
	default:
		return nil, "", fmt.Errorf("unknown %s %q: want openai (any OpenAI-compatible server) or anthropic", EnvProvider, getenv(EnvProvider))
	}
	if name == "" {
		return nil, "", fmt.Errorf("%s is required with provider %s (e.g. gpt-4.1-mini, llama3.1, claude-sonnet-4-5)", EnvModel, kind)
	}
	if base != "" {
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, "", fmt.Errorf("%s %q is not an http(s) URL", EnvBaseURL, base)
		}
	}
	if kind == "anthropic" {
		p, err := anthropic.New(anthropic.Options{BaseURL: base, APIKey: key, Model: name})
		if err != nil {
			return nil, "", err
		}
		if base == "" {
			base = anthropic.DefaultBaseURL
		}
		return model.WithRetry(p, Retry), fmt.Sprintf("anthropic model %s at %s", name, base), nil
	}
	p, err := openai.New(openai.Options{BaseURL: base, APIKey: key, Model: name})
	if err != nil {
		return nil, "", err
	}
	if base == "" {
		base = openai.DefaultBaseURL
	}
	return model.WithRetry(p, Retry), fmt.Sprintf("openai-compatible model %s at %s", name, base), nil
}

// Scripted returns the scripted model the Assistant uses when no provider
// is configured. Each turn plays one tool round: to a user's message it
// calls get_time (in the first IANA zone the message names, else UTC), and
// to the tool's result it answers with the time, saying that the answer is
// scripted.
func Scripted() *scripted.Model {
	return scripted.New(scripted.Turn{Respond: scriptedTurn})
}

func scriptedTurn(req model.Request) scripted.Turn {
	if len(req.Messages) == 0 {
		return scripted.Say("(scripted model) Nothing to answer.")
	}
	last := req.Messages[len(req.Messages)-1]
	if last.Role != model.RoleTool {
		args, _ := json.Marshal(TimeArgs{Zone: zoneIn(last.Content)})
		t := scripted.Call("get_time", string(args))
		// An id unique in the conversation (the script's own would repeat).
		t.Calls[0].ID = fmt.Sprintf("call_%d", len(req.Messages))
		return t
	}
	if last.IsError {
		return scripted.Say("(scripted model) The " + last.ToolName + " tool failed: " + last.Content)
	}
	var r TimeResult
	if err := json.Unmarshal([]byte(last.Content), &r); err != nil {
		return scripted.Say("(scripted model) The " + last.ToolName + " tool answered " + last.Content + ".")
	}
	when := r.Time
	if t, err := time.Parse(time.RFC3339, r.Time); err == nil {
		when = t.Format("15:04 on Monday 2 January 2006")
	}
	return scripted.Say(fmt.Sprintf("It is %s in %s. (This answer is scripted: no model provider is configured.)", when, r.Zone))
}

// zoneIn returns the first word of text that names an IANA zone with a
// slash (Europe/Oslo), else "UTC".
func zoneIn(text string) string {
	for _, w := range strings.Fields(text) {
		w = strings.Trim(w, ".,;:!?\"'()")
		if strings.Contains(w, "/") {
			if _, err := time.LoadLocation(w); err == nil {
				return w
			}
		}
	}
	return "UTC"
}
