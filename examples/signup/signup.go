// Package signup is an example workflow: create an account, wait out a
// grace period, wait for the user to confirm their email (an event sent
// from outside), then send a welcome message.
package signup

import (
	"context"
	"fmt"
	"time"

	"agentflow/workflow"
)

// Name is the class name Signup is registered under.
const Name = "Signup"

// ConfirmEvent is the event type that confirms the email address.
const ConfirmEvent = "email-confirmed"

// Params start a signup.
type Params struct {
	Email string        `json:"email"`
	Grace time.Duration `json:"grace"` // how long to sleep before asking for confirmation
}

// Confirmation is the payload of a ConfirmEvent.
type Confirmation struct {
	Code string `json:"code"`
}

// Result is the workflow's output.
type Result struct {
	AccountID string `json:"accountId"`
	Welcomed  bool   `json:"welcomed"`
}

// Signup is the workflow class.
type Signup struct{}

// Run implements workflow.Workflow.
func (Signup) Run(ctx context.Context, ev workflow.Event[Params], step *workflow.Step) (Result, error) {
	account, err := workflow.Do(step, "create-account", func(ctx context.Context, a workflow.Attempt) (string, error) {
		// A real implementation would pass a.IdempotencyKey to the account service.
		return "acct_" + ev.InstanceID, nil
	})
	if err != nil {
		return Result{}, err
	}
	if err := step.Sleep("grace-period", ev.Payload.Grace); err != nil {
		return Result{}, err
	}
	conf, err := workflow.WaitForEvent[Confirmation](step, "await-confirmation",
		workflow.WaitOptions{Type: ConfirmEvent, Timeout: 24 * time.Hour})
	if err != nil {
		return Result{}, fmt.Errorf("email %s never confirmed: %w", ev.Payload.Email, err)
	}
	welcomed, err := workflow.Do(step, "send-welcome", func(ctx context.Context, a workflow.Attempt) (bool, error) {
		return conf.Code != "", nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{AccountID: account, Welcomed: welcomed}, nil
}
