// Package email is the other service of the flights example: the
// "email-workflows" service, whose workflow class MyWorkflow the agent
// service starts through its EMAIL_WORKFLOW binding. With a shared store the
// agent service queues the instance and this service's workers run it.
package email

import (
	"context"
	"errors"
	"fmt"
	"io"

	"agentflow/workflow"
)

// Service and Workflow name the class as the agent service binds it.
const (
	Service  = "email-workflows"
	Workflow = "MyWorkflow"
)

// Message is the workflow's params.
type Message struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// Sent is the workflow's output.
type Sent struct {
	To        string `json:"to"`
	MessageID string `json:"messageId"`
}

// Sender delivers a rendered email; idempotencyKey is the same on every
// retry of one delivery.
type Sender interface {
	Send(ctx context.Context, idempotencyKey, to, text string) error
}

// Register registers the workflow on the email service's engine.
func Register(eng *workflow.Engine, s Sender) error {
	return workflow.Register(eng, Workflow, workflow.Workflow[Message, Sent](mailer{s}))
}

type mailer struct{ s Sender }

// Run renders the message and sends it.
func (m mailer) Run(ctx context.Context, ev workflow.Event[Message], step *workflow.Step) (Sent, error) {
	if ev.Payload.To == "" {
		return Sent{}, workflow.NonRetryable(errors.New("the message has no recipient"))
	}
	text, err := workflow.Do(step, "render", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return fmt.Sprintf("To: %s\nSubject: %s\n\n%s\n", ev.Payload.To, ev.Payload.Subject, ev.Payload.Body), nil
	})
	if err != nil {
		return Sent{}, err
	}
	id, err := workflow.Do(step, "send", func(ctx context.Context, a workflow.Attempt) (string, error) {
		return a.IdempotencyKey, m.s.Send(ctx, a.IdempotencyKey, ev.Payload.To, text)
	})
	if err != nil {
		return Sent{}, err
	}
	return Sent{To: ev.Payload.To, MessageID: id}, nil
}

// Printer is a Sender that writes each email to w, as the example binary
// does instead of talking to a mail server.
type Printer struct{ W io.Writer }

// Send implements Sender.
func (p Printer) Send(_ context.Context, key, to, text string) error {
	_, err := fmt.Fprintf(p.W, "email %s to %s:\n%s", key, to, text)
	return err
}
