package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"agentflow/admin"
)

func (c *cli) workflowsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "workflows",
		Aliases: []string{"workflow", "wf"},
		Short:   "List, describe, create and control workflow instances on a server",
	}
	c.clientFlags(cmd)
	cmd.AddCommand(c.workflowsList(), c.workflowsDescribe(), c.workflowsCreate(), c.workflowsSendEvent())
	for _, op := range []struct {
		name, short string
		fn          func(*admin.Client, context.Context, string) (*admin.Workflow, error)
	}{
		{"pause", "Pause an instance (an executing one after its current step)", (*admin.Client).Pause},
		{"resume", "Resume a paused instance", (*admin.Client).Resume},
		{"terminate", "End an unfinished instance as terminated", (*admin.Client).Terminate},
		{"restart", "Run an instance again from its start", (*admin.Client).Restart},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   op.name + " ID",
			Short: op.short,
			Args:  args(1, "the instance ID"),
			RunE: func(cmd *cobra.Command, a []string) error {
				cl, err := c.client()
				if err != nil {
					return err
				}
				w, err := op.fn(cl, cmd.Context(), a[0])
				if err != nil {
					return err
				}
				return c.show(w, func(out io.Writer) { fmt.Fprintf(out, "%s: %s\n", w.ID, w.Status) })
			},
		})
	}
	return cmd
}

func (c *cli) workflowsList() *cobra.Command {
	var (
		f                                              admin.WorkflowFilter
		createdFrom, createdTo, updatedFrom, updatedTo string
		watching                                       bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List instances, newest first, with the counts by status",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			for _, t := range []struct {
				name, v string
				dst     *time.Time
			}{{"created-from", createdFrom, &f.CreatedFrom}, {"created-to", createdTo, &f.CreatedTo},
				{"updated-from", updatedFrom, &f.UpdatedFrom}, {"updated-to", updatedTo, &f.UpdatedTo}} {
				if *t.dst, err = timeFlag(t.name, t.v); err != nil {
					return err
				}
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			type listing struct {
				Counts *admin.WorkflowCounts `json:"counts"`
				Page   *admin.WorkflowPage   `json:"page"`
			}
			return display(cmd.Context(), c, watching, func(ctx context.Context) (any, error) {
				page, err := cl.ListWorkflows(ctx, f)
				if err != nil {
					return nil, err
				}
				if c.json {
					return page, nil
				}
				counts, err := cl.CountWorkflows(ctx, f)
				return listing{counts, page}, err
			}, func(w io.Writer, v any) {
				l := v.(listing) // drawn only without --json
				drawCounts(w, l.Counts)
				drawWorkflows(w, l.Page)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.Statuses, "status", nil, "only these statuses (queued, running, paused, errored, terminated, complete, waiting, waitingForPause)")
	fl.StringSliceVar(&f.Workflows, "workflow", nil, "only these workflow classes")
	fl.StringSliceVar(&f.Services, "service", nil, "only these services")
	fl.StringVar(&f.Origin, "origin", "", "only instances started by this agent (CLASS or CLASS/NAME)")
	fl.StringVar(&createdFrom, "created-from", "", "created at or after (RFC 3339)")
	fl.StringVar(&createdTo, "created-to", "", "created before (RFC 3339)")
	fl.StringVar(&updatedFrom, "updated-from", "", "changed at or after (RFC 3339)")
	fl.StringVar(&updatedTo, "updated-to", "", "changed before (RFC 3339)")
	pageFlags(cmd, &f.Limit, &f.PageToken, &watching)
	return cmd
}

func drawCounts(w io.Writer, counts *admin.WorkflowCounts) {
	if counts == nil {
		return
	}
	var parts []string
	for _, s := range []string{"queued", "running", "waiting", "paused", "waitingForPause", "complete", "errored", "terminated"} {
		if n := counts.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	fmt.Fprintf(w, "%d instances: %s\n\n", counts.Total, strings.Join(parts, " · "))
}

func drawWorkflows(w io.Writer, page *admin.WorkflowPage) {
	if len(page.Workflows) == 0 {
		fmt.Fprintln(w, "no workflow instances")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tSERVICE\tSTATUS\tCREATED\tUPDATED\tERROR")
	for _, x := range page.Workflows {
		errText := "-"
		if x.Error != nil {
			errText = clip(x.Error.Name+": "+x.Error.Message, 50)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.Workflow, orDash(x.Service), x.Status,
			when(x.CreatedAt), when(x.UpdatedAt), errText)
	}
	tw.Flush()
	drawMore(w, page.NextPageToken)
}

func (c *cli) workflowsDescribe() *cobra.Command {
	var watching bool
	cmd := &cobra.Command{
		Use:   "describe ID",
		Short: "Show an instance: its params, output or error, step timeline and events",
		Args:  args(1, "the instance ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return display(cmd.Context(), c, watching, func(ctx context.Context) (*admin.WorkflowDescription, error) {
				return cl.DescribeWorkflow(ctx, a[0])
			}, func(w io.Writer, d *admin.WorkflowDescription) { drawDescription(w, d, time.Now()) })
		},
	}
	cmd.Flags().BoolVar(&watching, "watch", false, "re-draw when the instance changes (polls every second; Ctrl-C to stop)")
	return cmd
}

func (c *cli) workflowsCreate() *cobra.Command {
	var req admin.CreateWorkflowRequest
	var params string
	cmd := &cobra.Command{
		Use:   "create CLASS",
		Short: "Create an instance of a workflow class, queued for its service's workers",
		Args:  args(1, "the workflow class"),
		RunE: func(cmd *cobra.Command, a []string) error {
			req.Workflow = a[0]
			var err error
			if req.Params, err = jsonArg("params", params, cmd.InOrStdin()); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			w, err := cl.CreateWorkflow(cmd.Context(), req)
			if err != nil {
				return err
			}
			return c.show(w, func(out io.Writer) { fmt.Fprintf(out, "%s: %s\n", w.ID, w.Status) })
		},
	}
	cmd.Flags().StringVar(&req.ID, "id", "", "the instance id (default: a generated one)")
	cmd.Flags().StringVar(&req.Service, "service", "", "the service whose workers run it (default: the default service)")
	cmd.Flags().StringVar(&params, "params", "", "the params, JSON (or @file, @- for stdin)")
	return cmd
}

func (c *cli) workflowsSendEvent() *cobra.Command {
	var payload string
	cmd := &cobra.Command{
		Use:   "send-event ID TYPE",
		Short: "Send an event to an instance",
		Args:  args(2, "the instance ID and the event type"),
		RunE: func(cmd *cobra.Command, a []string) error {
			p, err := jsonArg("payload", payload, cmd.InOrStdin())
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			w, err := cl.SendEvent(cmd.Context(), a[0], admin.SendEventRequest{Type: a[1], Payload: p})
			if err != nil {
				return err
			}
			return c.show(w, func(out io.Writer) { fmt.Fprintf(out, "%s: sent %q; %s\n", w.ID, a[1], w.Status) })
		},
	}
	cmd.Flags().StringVar(&payload, "payload", "", "the payload, JSON (or @file, @- for stdin)")
	return cmd
}

// ---- the timeline

// barWidth is the width of the timeline's time axis, in columns.
const barWidth = 48

// Marks of the timeline.
const (
	markRun     = '='
	markFail    = 'x'
	markBackoff = '-'
	markSleep   = 'z'
	markWait    = '?'
	markWake    = '>'
	markEvent   = '!'
)

// drawDescription prints an instance and its steps on a time axis from
// its creation to its end (or now, or its next wake-up): each Do
// attempt a run of '=', a failed one ending in 'x', the back-off before
// a retry '-', a sleep 'z', a wait '?', a pending step's wake time '>'.
func drawDescription(w io.Writer, d *admin.WorkflowDescription, now time.Time) {
	wf := d.Workflow
	service := wf.Service
	if service == "" {
		service = "default"
	}
	fmt.Fprintf(w, "%s  %s  %s  (service %s", wf.ID, wf.Workflow, strings.ToUpper(wf.Status), service)
	if wf.Origin != nil {
		fmt.Fprintf(w, ", started by agent %s/%s", wf.Origin.Class, wf.Origin.Name)
	}
	if wf.Restarts > 0 {
		fmt.Fprintf(w, ", restarted %d times", wf.Restarts)
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "created %s  updated %s", when(wf.CreatedAt), when(wf.UpdatedAt))
	if !wf.FinishedAt.IsZero() {
		fmt.Fprintf(w, "  finished %s", when(wf.FinishedAt))
	}
	if !wf.WakeAt.IsZero() {
		fmt.Fprintf(w, "  wakes %s", when(wf.WakeAt))
	}
	if wf.WaitingEvent != "" {
		fmt.Fprintf(w, "  waiting for event %q", wf.WaitingEvent)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "params  %s\n", clip(string(wf.Params), 200))
	if wf.Output != nil {
		fmt.Fprintf(w, "output  %s\n", clip(string(wf.Output), 200))
	}
	if wf.Error != nil {
		fmt.Fprintf(w, "error   %s: %s\n", wf.Error.Name, wf.Error.Message)
	}
	fmt.Fprintln(w)
	if len(d.Steps) == 0 {
		fmt.Fprintln(w, "no steps yet")
	} else {
		drawTimeline(w, d, now)
	}
	if len(d.Events) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "EVENT\tTYPE\tSENT\tCONSUMED\tPAYLOAD")
		for _, e := range d.Events {
			consumed := "no"
			if e.Consumed {
				consumed = "yes"
				if !e.ConsumedAt.IsZero() {
					consumed = when(e.ConsumedAt)
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Type, when(e.SentAt), consumed, clip(string(e.Payload), 60))
		}
		tw.Flush()
	}
}

func drawTimeline(w io.Writer, d *admin.WorkflowDescription, now time.Time) {
	wf := d.Workflow
	start, end := wf.CreatedAt, wf.FinishedAt
	if end.IsZero() {
		end = now
	}
	for _, s := range d.Steps {
		for _, t := range []time.Time{s.StartedAt, s.EndedAt, s.WakeAt} {
			if !t.IsZero() && t.After(end) {
				end = t
			}
			if !t.IsZero() && t.Before(start) {
				start = t
			}
		}
	}
	span := end.Sub(start)
	if span <= 0 {
		span = time.Millisecond
	}
	col := func(t time.Time) int {
		c := int(float64(t.Sub(start)) / float64(span) * float64(barWidth-1))
		return max(0, min(barWidth-1, c))
	}
	fill := func(bar []rune, from, to time.Time, r rune) {
		if from.IsZero() || to.IsZero() {
			return
		}
		for i := col(from); i <= col(to); i++ {
			bar[i] = r
		}
	}
	tw := table(w)
	axis := fmt.Sprintf("%s%s%s", start.Local().Format("15:04:05"),
		strings.Repeat(" ", max(1, barWidth-16)), end.Local().Format("15:04:05"))
	fmt.Fprintf(tw, "STEP\tKIND\tSTATE\tTRIES\t%s  (%s)\n", axis, span.Round(time.Millisecond))
	var notes []string
	for _, s := range d.Steps {
		bar := []rune(strings.Repeat(" ", barWidth))
		stepEnd := s.EndedAt
		if stepEnd.IsZero() {
			stepEnd = now
			if stepEnd.After(end) {
				stepEnd = end
			}
		}
		switch s.Kind {
		case "sleep":
			fill(bar, s.StartedAt, stepEnd, markSleep)
		case "wait":
			fill(bar, s.StartedAt, stepEnd, markWait)
			if s.State == "done" && !s.EndedAt.IsZero() {
				bar[col(s.EndedAt)] = markEvent
			}
		default:
			if len(s.Attempts) == 0 {
				fill(bar, s.StartedAt, stepEnd, markRun)
			}
			for i, a := range s.Attempts {
				fill(bar, a.StartedAt, a.EndedAt, markRun)
				if a.Error != nil && !a.EndedAt.IsZero() {
					bar[col(a.EndedAt)] = markFail
					next := a.RetryAt
					if next.IsZero() && i == len(s.Attempts)-1 && s.State == "pending" {
						next = s.WakeAt
					}
					if !next.IsZero() && next.After(a.EndedAt) {
						for j := col(a.EndedAt) + 1; j < col(next); j++ {
							bar[j] = markBackoff
						}
					}
					notes = append(notes, fmt.Sprintf("  %s attempt %d failed at %s: %s: %s", s.Name, a.Number, when(a.EndedAt), a.Error.Name, a.Error.Message))
				}
			}
			if s.State == "pending" && len(s.Attempts) > 0 {
				last := s.Attempts[len(s.Attempts)-1]
				if !last.EndedAt.IsZero() && !s.WakeAt.IsZero() {
					for j := col(last.EndedAt) + 1; j < col(s.WakeAt); j++ {
						bar[j] = markBackoff
					}
				}
			}
		}
		if s.State == "pending" && !s.WakeAt.IsZero() {
			bar[col(s.WakeAt)] = markWake
		}
		tries := "-"
		if s.Kind == "do" {
			tries = fmt.Sprint(s.Attempt)
		}
		state := s.State
		if s.State == "pending" && s.WaitingEvent != "" {
			state = "waiting for " + s.WaitingEvent
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t|%s|\n", s.Name, s.Kind, state, tries, string(bar))
		if s.Error != nil && s.State == "failed" {
			notes = append(notes, fmt.Sprintf("  %s failed: %s: %s", s.Name, s.Error.Name, s.Error.Message))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "  %c ran  %c attempt failed  %c retry back-off  %c sleep  %c wait  %c event arrived  %c wakes\n",
		markRun, markFail, markBackoff, markSleep, markWait, markEvent, markWake)
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}
