package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDevRunsTheExamples(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	db := filepath.Join(t.TempDir(), "dev.db")
	began := time.Now()
	if code := run(ctx, []string{"dev", "--once", "--db", db, "--grace", "200ms", "--addr", "127.0.0.1:0",
		"--flight-delay", "300ms", "--check-in-wait", "200ms"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{
		"step fetch                attempt 2",
		"step grace-period         done",
		`sent event "email-confirmed"`,
		`output "report: north, south, east"`,
		`"welcomed":true`,
		"agents: ws://127.0.0.1:",
		// The flights example, both services.
		`MyAgent  traveller  POST /agents/my-agent/traveller (user-id: ada@example.com) → {"taskId":"sch_`,
		"MyAgent  traveller  request from ada@example.com: flight DL264 on 2025-02-23 starts in 300ms",
		"MyAgent  traveller  started flight workflow flight_sch_",
		`progress of flight_sch_`,
		"step wait for check-in    done",
		"seat 14C; emailing ada@example.com through EMAIL_WORKFLOW",
		"to ada@example.com:\n",
		"| Subject: You are booked on DL264\n",
		"MyAgent  traveller  tracks MY_WORKFLOW flight_sch_",
		"(service email-workflows) complete: {\"to\":\"ada@example.com\"",
		"MyAgent  traveller  tracks EMAIL_WORKFLOW email-flight_sch_",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "status complete"); got != 2 {
		t.Errorf("%d instances completed, want 2:\n%s", got, out)
	}
	if got := strings.Count(out, "| To: ada@example.com"); got != 1 {
		t.Errorf("%d emails printed, want 1:\n%s", got, out)
	}
	// --once exits once the agent tracks the email workflow complete.
	if !regexp.MustCompile(`MyAgent  traveller  tracks EMAIL_WORKFLOW email-flight_sch_\w+ \(service email-workflows\): complete\n`).MatchString(out) {
		t.Errorf("dev did not follow the email workflow to its end:\n%s", out)
	}
	t.Logf("dev --once took %s", time.Since(began).Round(time.Millisecond))
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"nope"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), `unknown command "nope"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
}
