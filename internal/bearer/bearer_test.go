package bearer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"agentflow/internal/bearer"
)

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, token, err string
	}{
		{"hex", "0123456789abcdef", ""},
		{"base64 with padding", "dG9rZW4+Lw==", ""},
		{"punctuation", `a!"#$%&'()*,-./:;<=>?@[\]^_{|}~`, ""},
		{"empty", "", "the token is empty"},
		{"space", "abc def", `the token has ' ' at byte 3: it must be visible ASCII characters, without spaces`},
		{"trailing newline", "abc\n", `'\n' at byte 3`},
		{"tab", "\tabc", `'\t' at byte 0`},
		{"non-ASCII", "abcé", `at byte 3: it must be visible ASCII`},
		{"DEL", "abc\x7f", `'\x7f' at byte 3`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok, err := bearer.New(tc.token)
			switch {
			case tc.err == "" && (err != nil || tok == nil):
				t.Fatalf("New(%q) = %v, %v; want a token", tc.token, tok, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("New(%q) error = %v, want one containing %q", tc.token, err, tc.err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tok, err := bearer.New("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok.Check(w, r) {
			io.WriteString(w, "in")
		}
	}))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name      string
		query     string
		auth      []string // Authorization header values
		status    int
		challenge string // WWW-Authenticate
		body      string
	}{
		{"no token", "", nil, 401, "Bearer", "send the token in an Authorization: Bearer header"},
		{"wrong header", "", []string{"Bearer s3cre"}, 401, `Bearer error="invalid_token"`, "not valid"},
		{"longer token", "", []string{"Bearer s3cret2"}, 401, `Bearer error="invalid_token"`, "not valid"},
		{"header", "", []string{"Bearer s3cret"}, 200, "", "in"},
		{"scheme in any case, spaces", "", []string{"bEaReR   s3cret"}, 200, "", "in"},
		{"other scheme", "", []string{"Basic s3cret"}, 401, "Bearer", "send the token"},
		{"scheme only", "", []string{"Bearer"}, 401, "Bearer", "send the token"},
		{"query", "?token=s3cret", nil, 200, "", "in"},
		{"escaped query", "?token=s3c%72et&x=1", nil, 200, "", "in"},
		{"wrong query", "?token=nope", nil, 401, `Bearer error="invalid_token"`, "not valid"},
		{"wrong header, right query", "?token=s3cret", []string{"Bearer nope"}, 200, "", "in"},
		{"right header, wrong query", "?token=nope", []string{"Bearer s3cret"}, 200, "", "in"},
		{"empty query", "?token=", nil, 401, "Bearer", "send the token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/x"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tc.auth {
				req.Header.Add("Authorization", v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
				t.Errorf("= %d %q, want %d containing %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
		})
	}
}
