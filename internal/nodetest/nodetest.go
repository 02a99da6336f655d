// Package nodetest runs the end-to-end tests written in JavaScript: a
// script in a directory whose package.json and package-lock.json pin the
// npm packages it drives (agent/jsclient, think/chatclient).
//
// Such a test needs Node and npm. Without them it is skipped, unless the
// CI environment variable is set: then it fails, so CI cannot pass without
// running it.
package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tool returns the path of a command the test needs (node, npm). A missing
// one skips the test, or fails it when the CI environment variable is set.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not on PATH, and CI is set: %s must run in CI (install Node.js 20+ with npm)", name, t.Name())
	}
	t.Skipf("skipping %s: %s is not on PATH (install Node.js 20+ with npm to run it; with CI set it fails instead)", t.Name(), name)
	return ""
}

// installMu keeps tests of one process (parallel, or -count) from
// installing into a directory at the same time.
var installMu sync.Mutex

// Install runs `npm ci` in dir unless its node_modules already holds the
// versions dir/package.json pins (dependencies and devDependencies).
func Install(t testing.TB, dir string) {
	t.Helper()
	npm := Tool(t, "npm")
	installMu.Lock()
	defer installMu.Unlock()
	var pkg struct {
		Dependencies    map[string]string `json:"dependencies"`
		DevDependencies map[string]string `json:"devDependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("%s/package.json: %v", dir, err)
	}
	installed := true
	deps := map[string]string{}
	maps.Copy(deps, pkg.Dependencies)
	maps.Copy(deps, pkg.DevDependencies)
	for dep, want := range deps {
		var got struct{ Version string }
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", dep, "package.json"))
		if err != nil || json.Unmarshal(b, &got) != nil || got.Version != want {
			installed = false
			break
		}
	}
	if installed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	t.Logf("npm ci in %s:\n%s", dir, out)
}

// Run installs dir's packages, runs `node script args…` in dir, logs its
// output and fails the test unless it exits 0 having printed PASS.
func Run(t testing.TB, dir string, timeout time.Duration, script string, args ...string) {
	t.Helper()
	node := Tool(t, "node")
	Install(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("node %s %s (%s):\n%s", script, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), &out)
	if err != nil {
		t.Fatalf("node %s failed: %v (its output is above)", script, err)
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatalf("node %s exited 0 without printing PASS", script)
	}
}
