// Package dashboard is agentflow's web dashboard: a page and its assets,
// embedded in the binary, that read and steer everything through the
// operator API (package admin) from the browser. admin.NewHandler serves
// it at / next to the API's /api/v1/.
//
// The dashboard is plain HTML, CSS and JavaScript modules with no build
// step (see docs/ARCHITECTURE.md): what is embedded is what the browser
// runs. It holds no data of its own, so it is served without the API's
// token; the page asks for the token when the API answers 401, keeps it
// in the tab's sessionStorage and sends it as a bearer header.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// contentSecurityPolicy allows the page only its own scripts, styles and
// API: no inline script, nothing from another origin.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns the handler serving the dashboard: its page at / and its
// assets at the other paths (GET and HEAD only). It does not serve /api/:
// mount it behind admin.NewHandler, which does by default.
func Handler() http.Handler {
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // "static" is embedded above: fs.Sub cannot fail on it
	}
	files := http.FileServerFS(assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard answers GET and HEAD only", http.StatusMethodNotAllowed)
			return
		}
		// No directory listings: the only directory served is / (index.html).
		if r.URL.Path != "/" && strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files have no modification time: revalidate each load,
		// so that a new binary's assets are picked up at once.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
