package main

import (
	"bytes"
	"context"
	"net"
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
	if err := runDev(ctx, []string{"--once", "--db", db, "--grace", "200ms", "--addr", "127.0.0.1:0",
		"--flight-delay", "300ms", "--check-in-wait", "200ms"}, noEnv, &stdout, &stderr); err != nil {
		t.Fatalf("dev: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
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
		// The Think agent, with the scripted model, answers one question.
		"think: Assistant uses the scripted model (no provider configured); set AGENTFLOW_MODEL_BASE_URL",
		"agents: ws://127.0.0.1:",
		"/agents/assistant/<name>",
		`Assistant dev  asked "What time is it in Europe/London?" (submission sub_`,
		`Assistant dev  called get_time {"zone":"Europe/London"} → {"zone":"Europe/London","time":"`,
		"Assistant dev  completed (20 tokens in, 10 out): It is ",
		" in Europe/London. (This answer is scripted: no model provider is configured.)",
		// Seed 001: TriageAgent triages issue 42, the draft is approved,
		// the labels are applied.
		"think: TriageAgent uses the scripted model (no provider configured)\n",
		"TriageAgent dev  triaging issue #42 in TRIAGE_WORKFLOW wf_",
		"step triage-issue:submit  done",
		"step triage-issue:wait    done",
		`TriageAgent dev  draft for issue #42: "App crashes when saving a file with an emoji in its name" — (scripted) `,
		"[labels: bug, crash]",
		`TriageAgent dev  sent event "approval" {approved: true} to wf_`,
		"step apply-labels         done",
		"TriageAgent dev  labels applied to issue #42: bug, crash\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "sent event \"approval\""), strings.Index(out, "step apply-labels"); i < 0 || j < i {
		t.Errorf("labels applied before the approval:\n%s", out)
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

// noEnv is an empty environment: the tests never reach a real model,
// whatever the machine's AGENTFLOW_MODEL_* variables say.
func noEnv(string) string { return "" }

// TestDevSaysWhichModel: dev names the configured provider, and refuses a
// configuration it cannot honour before starting anything.
func TestDevSaysWhichModel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	var stdout, stderr bytes.Buffer
	err := runDev(ctx, []string{"--once", "--db", filepath.Join(t.TempDir(), "dev.db"), "--addr", ""},
		env(map[string]string{"AGENTFLOW_MODEL_PROVIDER": "gemini", "AGENTFLOW_MODEL": "x"}), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `unknown AGENTFLOW_MODEL_PROVIDER "gemini"`) {
		t.Errorf("dev with an unknown provider: %v, want an error naming it", err)
	}

	// A configured provider is named; --once fails plainly when its turn
	// does not complete (nothing listens at this address).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/v1"
	ln.Close()
	stdout.Reset()
	err = runDev(ctx, []string{"--once", "--db", filepath.Join(t.TempDir(), "dev.db"), "--addr", "", "--grace", "100ms",
		"--flight-delay", "100ms", "--check-in-wait", "100ms"},
		env(map[string]string{"AGENTFLOW_MODEL_BASE_URL": dead, "AGENTFLOW_MODEL": "llama3.1"}), &stdout, &stderr)
	for _, who := range []string{"Assistant", "TriageAgent"} {
		if want := "think: " + who + " uses the openai-compatible model llama3.1 at " + dead + "\n"; !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, &stdout)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "ended error") || !strings.Contains(err.Error(), "transient") {
		t.Errorf("dev --once with an unreachable model: %v, want the turn's error", err)
	}
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
