// Package web is the Assistant's chat page: a React app using useAgentChat
// from @cloudflare/ai-chat (with useAgent from agents/react), built with
// Vite from the packages package.json and package-lock.json pin. The
// built page (dist/) is committed and embedded; `npm ci && npm run build`
// in this directory makes it again, byte for byte (TestChatPage checks).
// agentflow dev serves it at /chat/.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed all:dist
var dist embed.FS

// Handler serves the page and its assets. Mount it with the prefix
// stripped: http.StripPrefix("/chat", web.Handler()) at "/chat/".
func Handler() http.Handler {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded: it is there
	}
	return http.FileServerFS(sub)
}
