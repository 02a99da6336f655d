// Package browsertest starts headless Chromium for the tests that drive a
// page in a real browser (the dashboard, the assistant's chat page)
// through chromedp.
//
// Without a chromium on PATH such a test is skipped, unless the CI
// environment variable is set: then it fails, so CI cannot pass without
// running it (scripts/test installs chromium where apt-get exists).
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Chromium returns the browser's path, or skips the test (fails it with
// CI set).
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("chromium is not on PATH, and CI is set: %s must run in CI (apt-get install chromium; scripts/test does it when apt-get exists)", t.Name())
	}
	t.Skipf("skipping %s: chromium is not on PATH (apt-get install chromium, or run scripts/test, which installs it; with CI set it fails instead)", t.Name())
	return ""
}

// Options configure a browser.
type Options struct {
	// Width and Height are the window's size; default 1280×900.
	Width, Height int
	// AcceptDialogs accepts the page's alert and confirm dialogs, as a
	// user would; without it a dialog blocks the page.
	AcceptDialogs bool
}

// New starts a headless Chromium of its own (a profile in a temporary
// directory) and returns its tab's context; the browser ends with the
// test. Exceptions the page throws and does not catch fail the test at its
// end. Two browsers are two people: tabs of one browser wedge chromedp's
// background target now and then.
func New(t testing.TB, o Options) context.Context {
	t.Helper()
	path := Chromium(t)
	if o.Width == 0 || o.Height == 0 {
		o.Width, o.Height = 1280, 900
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(o.Width, o.Height))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser, without a timeout of its own;
	// listening before it would race it to start a second one on the same
	// profile.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	var mu sync.Mutex
	var thrown []string
	go func() {
		for ev, err := range chromedp.Events(ctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			mu.Lock()
			thrown = append(thrown, (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range thrown {
			t.Errorf("the page threw: %s", e)
		}
	})
	if o.AcceptDialogs {
		go func() {
			for _, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
				if err != nil {
					return
				}
				if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
					return
				}
			}
		}()
	}
	return ctx
}
