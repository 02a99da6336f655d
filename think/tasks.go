package think

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"agentflow/agent"
	"agentflow/internal/agentseam"
	"agentflow/internal/ids"
	"agentflow/model"
	"agentflow/recur"
	"agentflow/store"
)

// Task is a recurring task a Think class declares (DESIGN §4.5): on its
// schedule, either a prompt is submitted as a turn, or a handler runs.
type Task struct {
	// ID names the task; it is stable across deployments.
	ID string
	// Schedule is a recur schedule: "every 15 minutes", "every day at
	// 09:00 in Europe/London", "every weekday at 08:30", "every week on
	// mon,wed at 18:00", or a cron expression.
	Schedule string
	// Prompt, for a prompt task, is submitted as a user message.
	Prompt string
	// Handler, for a handler task, is called with the run; self is the
	// class's *T.
	Handler func(ctx context.Context, self any, run TaskRun) error
	// Retry retries a failing handler in place; default one attempt.
	Retry agent.Retry
	// Metadata is passed on: with a prompt task's submission, and in
	// TaskRun.
	Metadata map[string]any
}

// TaskRun is one occurrence of a task, as its handler sees it.
type TaskRun struct {
	TaskID      string
	ScheduledAt time.Time
	// OccurrenceKey names this occurrence (recur.OccurrenceKey);
	// IdempotencyKey is unique to it and the agent, for effects the
	// handler must not repeat.
	OccurrenceKey  string
	IdempotencyKey string
	Schedule       string
	Kind           string // "prompt" or "handler"
	Zone           string
	Metadata       map[string]any
}

// taskMethod is the method of a class's task schedules.
func taskMethod(class string) string { return "agentflow:think-task:" + class }

// taskPayload is what a task schedule carries.
type taskPayload struct {
	TaskID string `json:"taskId"`
}

// checkTasks validates a class's declarations and parses their schedules.
func checkTasks(tasks []Task) (map[string]*recur.Spec, error) {
	specs := map[string]*recur.Spec{}
	for i, t := range tasks {
		if t.ID == "" {
			return nil, fmt.Errorf("task %d: ID is empty", i)
		}
		if _, dup := specs[t.ID]; dup {
			return nil, fmt.Errorf("task %s: declared twice", t.ID)
		}
		if (t.Prompt == "") == (t.Handler == nil) {
			return nil, fmt.Errorf("task %s: give exactly one of Prompt and Handler", t.ID)
		}
		spec, err := recur.Parse(t.Schedule)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", t.ID, err)
		}
		specs[t.ID] = spec
	}
	return specs, nil
}

// reconcileTasks makes the agent's stored task schedules match the
// declarations: a new task gets a schedule, a task whose schedule text
// changed has its schedule replaced, a removed task's schedule is
// cancelled. A prompt-only change keeps the schedule (the prompt is read
// from the declaration when the task runs).
func (a *Agent[S]) reconcileTasks(ctx context.Context) error {
	rt := a.Runtime()
	st := a.store()
	method := taskMethod(a.Class())
	stored, err := st.ListSchedules(ctx, a.key(), store.ScheduleFilter{Kind: store.ScheduleRecur})
	if err != nil {
		return err
	}
	have := map[string]store.Schedule{}
	for _, s := range stored {
		if s.Method != method {
			continue
		}
		var p taskPayload
		if err := json.Unmarshal(s.Payload, &p); err != nil || a.cfg.task(p.TaskID) == nil {
			if _, err := st.DeleteSchedule(ctx, a.key(), s.ID); err != nil {
				return err
			}
			continue
		}
		have[p.TaskID] = s
	}
	now := rt.Clock().Now()
	added := false
	for _, t := range a.cfg.opts.Tasks {
		spec := a.cfg.specs[t.ID]
		if s, ok := have[t.ID]; ok {
			if s.Cron == spec.String() {
				continue
			}
			if _, err := st.DeleteSchedule(ctx, a.key(), s.ID); err != nil {
				return err
			}
		}
		payload, _ := json.Marshal(taskPayload{TaskID: t.ID})
		s := &store.Schedule{ID: "tsk_" + ids.Random(), AgentKey: a.key(), Method: method, Payload: payload,
			Kind: store.ScheduleRecur, Cron: spec.String(), NextRunAt: spec.Next(now), CreatedAt: now,
			IdempotencyKey: "task:" + t.ID + ":" + spec.String()}
		if _, _, err := st.CreateSchedule(ctx, s); err != nil {
			return fmt.Errorf("schedule task %s: %w", t.ID, err)
		}
		added = true
	}
	if added {
		rt.WakeSchedules()
	}
	return nil
}

func (c *config) task(id string) *Task {
	for i := range c.opts.Tasks {
		if c.opts.Tasks[i].ID == id {
			return &c.opts.Tasks[i]
		}
	}
	return nil
}

// runTask is the notice handler of a class's task schedules: it runs one
// occurrence, holding the agent's lock.
func runTask[S any](ctx context.Context, a *Agent[S], self any, s store.Schedule) error {
	var p taskPayload
	if err := json.Unmarshal(s.Payload, &p); err != nil {
		return fmt.Errorf("task schedule %s: %w", s.ID, err)
	}
	t := a.cfg.task(p.TaskID)
	if t == nil {
		return nil // removed since; the next activation cancels its schedule
	}
	spec := a.cfg.specs[t.ID]
	occ := recur.OccurrenceKey(t.ID, s.NextRunAt)
	run := TaskRun{TaskID: t.ID, ScheduledAt: s.NextRunAt, OccurrenceKey: occ,
		IdempotencyKey: fmt.Sprintf("think-task:%s:%s:%s", a.Class(), a.Name(), occ),
		Schedule:       spec.String(), Zone: spec.Zone, Metadata: t.Metadata}
	if t.Prompt != "" {
		run.Kind = "prompt"
		meta := map[string]any{"task": t.ID, "scheduledAt": s.NextRunAt, "metadata": t.Metadata}
		_, err := a.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: t.Prompt}},
			SubmitOptions{IdempotencyKey: run.IdempotencyKey, Metadata: meta})
		return err
	}
	run.Kind = "handler"
	r := t.Retry
	if r.Attempts <= 0 {
		r.Attempts = 1
	}
	if r.MinDelay <= 0 {
		r.MinDelay = 100 * time.Millisecond
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = 3 * time.Second
	}
	var err error
	for attempt := 1; attempt <= r.Attempts; attempt++ {
		if err = t.Handler(ctx, self, run); err == nil {
			return nil
		}
		if attempt == r.Attempts {
			break
		}
		d := min(r.MinDelay<<(attempt-1), r.MaxDelay)
		if err := agentseam.Sleep(ctx, a.Runtime().Clock(), d/2+rand.N(d/2+1)); err != nil {
			return err
		}
	}
	// The task goes on at its next occurrence: report, don't retry the
	// schedule, whose retries would run the handler again.
	a.Logger().Warn("task failed", "task", t.ID, "occurrence", occ, "err", err)
	if h, ok := self.(agent.ErrorHook); ok {
		h.OnError(ctx, &TaskError{Run: run, Attempts: r.Attempts, Err: err})
	}
	return nil
}

// TaskError reports a handler task that failed on every attempt.
type TaskError struct {
	Run      TaskRun
	Attempts int
	Err      error
}

func (e *TaskError) Error() string {
	return fmt.Sprintf("task %s (%s) failed after %d attempt(s): %v", e.Run.TaskID, e.Run.OccurrenceKey, e.Attempts, e.Err)
}

func (e *TaskError) Unwrap() error { return e.Err }

var errNotThink = errors.New("think: task schedule for an agent that is not a Think agent")
