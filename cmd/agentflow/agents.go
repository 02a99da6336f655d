package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"agentflow/admin"
)

func (c *cli) agentsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "List and describe agents on a server",
	}
	c.clientFlags(cmd)

	var f admin.AgentFilter
	var watching bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List agent instances, by class then name",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return display(cmd.Context(), c, watching, func(ctx context.Context) (*admin.AgentPage, error) {
				return cl.ListAgents(ctx, f)
			}, func(w io.Writer, page *admin.AgentPage) {
				if len(page.Agents) == 0 {
					fmt.Fprintln(w, "no agents")
					return
				}
				tw := table(w)
				fmt.Fprintln(tw, "AGENT\tLIVE ON\tSTATE\tCREATED\tLAST ACTIVITY")
				for _, a := range page.Agents {
					fmt.Fprintf(tw, "%s/%s\t%s\t%d B\t%s\t%s\n", a.Class, a.Name, orDash(a.Owner), a.StateBytes, when(a.CreatedAt), when(a.UpdatedAt))
				}
				tw.Flush()
				drawMore(w, page.NextPageToken)
			})
		},
	}
	list.Flags().StringVar(&f.Class, "class", "", "only the agents of this class")
	pageFlags(list, &f.Limit, &f.PageToken, &watching)

	var watchOne bool
	describe := &cobra.Command{
		Use:   "describe CLASS/NAME",
		Short: "Show an agent: state, schedules, fibers, workflows; a Think agent's submissions and conversation",
		Args:  args(1, "the agent, CLASS/NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, class, name, err := c.agentClient(a[0])
			if err != nil {
				return err
			}
			return display(cmd.Context(), c, watchOne, func(ctx context.Context) (*admin.AgentDescription, error) {
				return cl.DescribeAgent(ctx, class, name)
			}, drawAgent)
		},
	}
	describe.Flags().BoolVar(&watchOne, "watch", false, "re-draw when the agent changes (polls every second)")
	cmd.AddCommand(list, describe)
	return cmd
}

func drawAgent(w io.Writer, d *admin.AgentDescription) {
	a := d.Agent
	fmt.Fprintf(w, "%s/%s  live on %s  created %s  last activity %s\n", a.Class, a.Name, orDash(a.Owner), when(a.CreatedAt), when(a.UpdatedAt))
	state := "none"
	if a.State != nil {
		state = clip(string(a.State), 400)
	}
	fmt.Fprintf(w, "state  %s\n", state)
	if len(d.Schedules) > 0 {
		fmt.Fprintln(w)
		drawSchedules(w, d.Schedules)
	}
	if len(d.Fibers) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "FIBER\tNAME\tSTATUS\tUPDATED\tERROR")
		for _, f := range d.Fibers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.ID, f.Name, f.Status, when(f.UpdatedAt), orDash(clip(f.Error, 50)))
		}
		tw.Flush()
	}
	if len(d.Workflows) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "WORKFLOW\tBINDING\tCLASS\tSTATUS\tUPDATED")
		for _, x := range d.Workflows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.WorkflowID, x.Binding, x.Workflow, x.Status, when(x.UpdatedAt))
		}
		tw.Flush()
	}
	if len(d.Submissions) > 0 {
		fmt.Fprintln(w)
		drawSubmissions(w, d.Submissions)
	}
	if len(d.Conversation) > 0 {
		fmt.Fprintf(w, "\nconversation (%d messages)\n", len(d.Conversation))
		for _, m := range d.Conversation {
			fmt.Fprintf(w, "  %d  %s\n", m.Seq, clip(string(m.Message), 120))
		}
	}
}

func drawSchedules(w io.Writer, ss []admin.Schedule) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "no schedules")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "SCHEDULE\tMETHOD\tKIND\tEVERY\tNEXT RUN\tCLAIMED BY")
	for _, s := range ss {
		every := s.Cron
		if s.Interval != "" {
			every = s.Interval
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Method, s.Kind, orDash(every), when(s.NextRunAt), orDash(s.Owner))
	}
	tw.Flush()
}

func drawSubmissions(w io.Writer, ss []admin.Submission) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "no submissions")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "SUBMISSION\tSTATUS\tCREATED\tFINISHED\tTOKENS IN/OUT\tERROR")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", s.ID, s.Status, when(s.CreatedAt), when(s.FinishedAt), s.InputTokens, s.OutputTokens, orDash(clip(s.Error, 50)))
	}
	tw.Flush()
}

func (c *cli) schedulesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "schedules",
		Aliases: []string{"schedule"},
		Short:   "List an agent's schedules on a server",
	}
	c.clientFlags(cmd)
	var kind string
	list := &cobra.Command{
		Use:   "list CLASS/NAME",
		Short: "List an agent's schedules, by next run time",
		Args:  args(1, "the agent, CLASS/NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, class, name, err := c.agentClient(a[0])
			if err != nil {
				return err
			}
			l, err := cl.ListSchedules(cmd.Context(), class, name, kind)
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) { drawSchedules(w, l.Schedules) })
		},
	}
	list.Flags().StringVar(&kind, "kind", "", "only schedules of this kind (delayed, scheduled, cron, interval, recur)")
	cmd.AddCommand(list)
	return cmd
}

func (c *cli) submissionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "submissions",
		Aliases: []string{"submission"},
		Short:   "List, describe and cancel a Think agent's submissions on a server",
	}
	c.clientFlags(cmd)
	var statuses []string
	var limit int
	list := &cobra.Command{
		Use:   "list CLASS/NAME",
		Short: "List a Think agent's submissions, oldest first",
		Args:  args(1, "the agent, CLASS/NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, class, name, err := c.agentClient(a[0])
			if err != nil {
				return err
			}
			l, err := cl.ListSubmissions(cmd.Context(), class, name, statuses, limit)
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) { drawSubmissions(w, l.Submissions) })
		},
	}
	list.Flags().StringSliceVar(&statuses, "status", nil, "only these statuses (pending, running, completed, aborted, skipped, error)")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many, 1 to 1000")
	describe := &cobra.Command{
		Use:   "describe CLASS/NAME ID",
		Short: "Show a submission: its messages, output, usage and outbox rows",
		Args:  args(2, "the agent, CLASS/NAME, and the submission ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, class, name, err := c.agentClient(a[0])
			if err != nil {
				return err
			}
			d, err := cl.DescribeSubmission(cmd.Context(), class, name, a[1])
			if err != nil {
				return err
			}
			return c.show(d, func(w io.Writer) {
				s := d.Submission
				fmt.Fprintf(w, "%s  %s/%s  %s  created %s  started %s  finished %s  tokens %d in, %d out\n",
					s.ID, s.Class, s.Name, s.Status, when(s.CreatedAt), when(s.StartedAt), when(s.FinishedAt), s.InputTokens, s.OutputTokens)
				fmt.Fprintf(w, "messages  %s\n", clip(string(s.Messages), 400))
				if s.Output != nil {
					fmt.Fprintf(w, "output    %s\n", clip(string(s.Output), 400))
				}
				if s.Error != "" {
					fmt.Fprintf(w, "error     %s\n", s.Error)
				}
				if s.NotifyInstance != "" {
					fmt.Fprintf(w, "notifies  workflow %s with event %q\n", s.NotifyInstance, s.NotifyEvent)
				}
				for _, o := range d.Outbox {
					state := outboxState(o)
					if o.Failed {
						state += ": " + o.LastError
					}
					fmt.Fprintf(w, "outbox    %d → %s (%s): %s, %d attempts\n", o.ID, o.InstanceID, o.EventType, state, o.Attempts)
				}
			})
		},
	}
	cancel := &cobra.Command{
		Use:   "cancel CLASS/NAME ID",
		Short: "Abort a pending submission",
		Args:  args(2, "the agent, CLASS/NAME, and the submission ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, class, name, err := c.agentClient(a[0])
			if err != nil {
				return err
			}
			r, err := cl.CancelSubmission(cmd.Context(), class, name, a[1])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "%s: %s (was %s)\n", r.Submission.ID, r.Submission.Status, r.PreviousStatus)
			})
		},
	}
	cmd.AddCommand(list, describe, cancel)
	return cmd
}

func (c *cli) outboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "List the Think outbox on a server: answers on their way to the workflows that asked",
	}
	c.clientFlags(cmd)
	var f admin.OutboxFilter
	var watching bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List outbox rows, newest first",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return display(cmd.Context(), c, watching, func(ctx context.Context) (*admin.OutboxPage, error) {
				return cl.ListOutbox(ctx, f)
			}, drawOutbox)
		},
	}
	list.Flags().StringVar(&f.Agent, "agent", "", "only this agent class, or CLASS/NAME")
	list.Flags().BoolVar(&f.Undelivered, "undelivered", false, "only rows not yet delivered")
	pageFlags(list, &f.Limit, &f.PageToken, &watching)
	cmd.AddCommand(list)
	return cmd
}

func drawOutbox(w io.Writer, page *admin.OutboxPage) {
	if len(page.Outbox) == 0 {
		fmt.Fprintln(w, "no outbox rows")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "ID\tAGENT\tSUBMISSION\tINSTANCE\tEVENT\tSTATE\tATTEMPTS\tCREATED\tLAST ERROR")
	for _, o := range page.Outbox {
		state := outboxState(o)
		if state == "pending" && !o.NextAttemptAt.IsZero() {
			state = "next " + when(o.NextAttemptAt)
		}
		fmt.Fprintf(tw, "%d\t%s/%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", o.ID, o.Class, o.Name, o.SubmissionID, o.InstanceID,
			o.EventType, state, o.Attempts, when(o.CreatedAt), orDash(o.LastError))
	}
	tw.Flush()
	drawMore(w, page.NextPageToken)
}

// outboxState says where an outbox row is: pending, delivered (when) or failed.
func outboxState(o admin.Outbox) string {
	switch {
	case o.Failed:
		return "failed"
	case !o.DeliveredAt.IsZero():
		return "delivered " + when(o.DeliveredAt)
	}
	return "pending"
}
