// Package bearer checks the bearer token agentflow's HTTP endpoints may
// require (agent.HandlerOptions.Token, `agentflow dev --token`), with the
// same rules everywhere: a request carries the token in an
// "Authorization: Bearer <token>" header or — because a browser cannot set
// headers on a WebSocket — in the "token" query parameter; tokens are
// compared in constant time; a request without the token, or with another,
// is answered 401 with a WWW-Authenticate: Bearer challenge.
//
// A CORS preflight carries no credentials: answer it before checking.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// QueryParam is the query parameter that may carry the token, for clients
// that cannot set headers (browser WebSockets; the agents JavaScript client
// sends it with its query option). Prefer the header elsewhere: URLs end up
// in access logs.
const QueryParam = "token"

// Token is a configured token. The zero value is not usable; see New.
type Token struct {
	sum [sha256.Size]byte
}

// New returns the token to require. It must be non-empty and made of
// visible ASCII characters (no spaces or control characters), so that it
// fits in a header as it is.
func New(token string) (*Token, error) {
	if token == "" {
		return nil, errors.New("the token is empty")
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return nil, fmt.Errorf("the token has %q at byte %d: it must be visible ASCII characters, without spaces", c, i)
		}
	}
	return &Token{sum: sha256.Sum256([]byte(token))}, nil
}

// presented returns the tokens r carries: the Authorization header's
// bearer credentials and the query parameter, where present.
func presented(r *http.Request) []string {
	var out []string
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if cred = strings.TrimLeft(cred, " "); cred != "" {
			out = append(out, cred)
		}
	}
	if q := r.URL.Query().Get(QueryParam); q != "" {
		out = append(out, q)
	}
	return out
}

// Allows reports whether r carries the token, in the header or in the
// query parameter.
func (t *Token) Allows(r *http.Request) bool {
	return t.match(presented(r))
}

// match compares SHA-256 sums, so that the comparison takes the same time
// whatever the candidate's length and content.
func (t *Token) match(candidates []string) bool {
	ok := 0
	for _, c := range candidates {
		sum := sha256.Sum256([]byte(c))
		ok |= subtle.ConstantTimeCompare(sum[:], t.sum[:])
	}
	return ok == 1
}

// Check reports whether r carries the token; when it does not, Check has
// answered 401 with a WWW-Authenticate: Bearer challenge (with
// error="invalid_token" when r carried a token that is not the one).
func (t *Token) Check(w http.ResponseWriter, r *http.Request) bool {
	got := presented(r)
	if t.match(got) {
		return true
	}
	if len(got) == 0 {
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, "unauthorized: send the token in an Authorization: Bearer header "+
			"(or, from a browser WebSocket, in the "+QueryParam+" query parameter)", http.StatusUnauthorized)
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	http.Error(w, "unauthorized: the bearer token is not valid", http.StatusUnauthorized)
	return false
}
