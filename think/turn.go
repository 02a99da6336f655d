package think

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"agentflow/internal/engineseam"
	"agentflow/internal/telemetry"
	"agentflow/model"
	"agentflow/store"
)

// errMidTurn is what a submission cut off mid-turn by a crash ends with.
const errMidTurn = "the turn was cut off by a crash after its messages entered the conversation"

// errCancelled is the cause of a turn's context when CancelSubmission
// cancelled it.
var errCancelled = errors.New("the turn was cancelled")

// keepCtx is the context a turn stores its messages with: ctx, or, once
// the turn was cancelled, ctx without its cancellation, so that what the
// clients were shown of the step that was cut off (its text, its tool
// calls and their results) is kept; the turn then ends as aborted. A
// runtime that stops cancels the turn another way, and then nothing more
// is stored: recovery decides.
func keepCtx(ctx context.Context) context.Context {
	if errors.Is(context.Cause(ctx), errCancelled) {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// OnActivate recovers the submissions a dead runner left running and starts
// the runner when submissions are pending. It is agent.Activator, so a
// class keeps OnStart for itself.
func (a *Agent[S]) OnActivate(ctx context.Context) error {
	rt := a.Runtime()
	if len(a.cfg.opts.Tasks) > 0 {
		if err := a.reconcileTasks(ctx); err != nil {
			return fmt.Errorf("think: reconcile tasks of %s: %w", a.key(), err)
		}
	}
	requeued, failed, err := a.store().RecoverSubmissions(ctx, a.key(), rt.NodeID(), errMidTurn, rt.Clock().Now())
	if err != nil {
		return fmt.Errorf("think: recover submissions of %s: %w", a.key(), err)
	}
	for _, s := range failed {
		a.Logger().Warn("submission cut off mid-turn by a crash", "submission", s.ID)
		a.chatCutOff(&s)
	}
	pending, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}, Limit: 1})
	if err != nil {
		return err
	}
	if len(requeued) > 0 || len(pending) > 0 {
		a.kick()
	}
	return nil
}

// kick starts the runner unless it is running.
func (a *Agent[S]) kick() {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return
	}
	a.running = true
	a.mu.Unlock()
	a.Go(a.runQueue)
}

// runQueue runs pending submissions one at a time until none is left.
// Between turns it looks for a pending submission with a read: starting
// none would be a write.
func (a *Agent[S]) runQueue(ctx context.Context) {
	rt := a.Runtime()
	st := a.store()
	for {
		s, err := st.StartSubmission(ctx, a.key(), rt.NodeID(), rt.Clock().Now())
		if err != nil && ctx.Err() == nil {
			a.Logger().Warn("starting a submission failed", "err", err)
		}
		if err != nil || s == nil {
			a.stopRunner(ctx, err == nil)
			return
		}
		a.run(ctx, s)
		if ctx.Err() != nil {
			return // stopping: the next activation recovers what is left
		}
		if !a.goOn(ctx) {
			return
		}
	}
}

// goOn is the runner's look between turns, one read: it lowers the
// running flag first, so that a submission that arrives meanwhile either
// kicks a runner of its own or is seen by the read; when the read finds
// one and no other runner took over, this one goes on.
func (a *Agent[S]) goOn(ctx context.Context) bool {
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	if ctx.Err() != nil || !a.hasPending(ctx) {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running {
		return false // a kick started another runner
	}
	a.running = true
	return true
}

// stopRunner lowers the running flag; with recheck it then looks once more
// for a pending submission, so that one that arrived while the runner was
// stopping (its kick saw the flag up) is not lost.
func (a *Agent[S]) stopRunner(ctx context.Context, recheck bool) {
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	if recheck && ctx.Err() == nil && a.hasPending(ctx) {
		a.kick()
	}
}

// hasPending reports whether the agent may have a pending submission:
// true when it has one, and when the look fails (StartSubmission decides).
func (a *Agent[S]) hasPending(ctx context.Context) bool {
	p, err := a.store().ListSubmissions(ctx, a.key(), store.SubmissionFilter{Statuses: []store.SubmissionStatus{store.SubmissionPending}, Limit: 1})
	return len(p) > 0 || err != nil && ctx.Err() == nil
}

// run runs one started submission's turn and records its end.
func (a *Agent[S]) run(ctx context.Context, s *store.Submission) {
	rt := a.Runtime()
	tctx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	if a.cancels == nil {
		a.cancels = map[string]context.CancelFunc{}
	}
	a.cancels[s.ID] = func() { cancel(errCancelled) }
	if a.cancelled[s.ID] {
		delete(a.cancelled, s.ID)
		cancel(errCancelled)
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.cancels, s.ID)
		a.mu.Unlock()
		cancel(nil)
	}()

	tel := host(rt).Telemetry()
	tctx, span := tel.StartTurn(tctx, a.key().Class, a.key().Name, s.ID, a.cfg.opts.ModelName, s.TraceParent)
	cs := newChatStream(s)
	a.chatBegin(cs)
	a.chatSend(cs, cs.start(s.ID))
	out, usage, err := a.turn(tctx, s, cs)
	status, msg := store.SubmissionCompleted, ""
	switch {
	case ctx.Err() != nil:
		if span != nil {
			telemetry.End(span, ctx.Err(), "") // the runtime is stopping
		}
		return // the runtime is stopping; recovery decides
	case tctx.Err() != nil:
		status, msg = store.SubmissionAborted, "cancelled"
	case err != nil:
		status, msg = store.SubmissionError, err.Error()
	}
	tel.EndTurn(tctx, span, a.key().Class, string(status), usage.InputTokens, usage.OutputTokens, err)
	a.finish(context.WithoutCancel(ctx), s, status, msg, out, usage)
	a.emit(map[string]any{"type": "cf_agent_think", "event": "done", "submissionId": s.ID, "status": status, "error": msg})
	a.chatEnd(context.WithoutCancel(ctx), cs, status, msg)
}

// finish records the end of a submission that ran. A prompt's outcome is
// delivered to its workflow instance in the same write when the instance is
// in this store (it always is: the runtime shares the engine's store) and
// the payload is within the engine's event limit; otherwise the outbox
// delivers it, or reports why it cannot.
func (a *Agent[S]) finish(ctx context.Context, s *store.Submission, status store.SubmissionStatus, msg string, out json.RawMessage, usage store.Usage) {
	rt := a.Runtime()
	if s.NotifyInstance == "" {
		if err := a.store().FinishSubmission(ctx, a.key(), s.ID, rt.NodeID(), status, msg, out, usage, rt.Clock().Now()); err != nil {
			a.Logger().Warn("recording a submission's end failed", "submission", s.ID, "err", err)
		}
		return
	}
	ob := a.cfg.outbox
	tel := host(rt).Telemetry()
	// The instance waits for this event (or is about to): claim it for
	// this node's engine in the same write, if it has a slot free.
	d := store.Delivery{MaxEventBytes: ob.maxEvent}
	eng := rt.Engine().Seam(engineseam.Key{})
	owner, service, reserved := eng.Reserve()
	if reserved {
		d.ClaimOwner, d.ClaimService = owner, service
	}
	dctx, span := tel.StartDelivery(ctx, s.NotifyInstance, s.NotifyEvent)
	delivered, claimed, err := a.store().FinishSubmissionAndDeliver(dctx, a.key(), s.ID, rt.NodeID(), status, msg, out, usage, rt.Clock().Now(), d)
	switch {
	case claimed != nil:
		eng.Launch(claimed)
	case reserved:
		eng.Release()
	}
	switch {
	case err != nil:
		a.Logger().Warn("recording a submission's end failed", "submission", s.ID, "err", err)
	case delivered:
		tel.EndDelivery(dctx, span, telemetry.OutcomeSucceeded, nil)
		if claimed == nil {
			rt.Engine().Wake() // the instance may be due now
		}
		return
	}
	if span != nil {
		span.End() // the outbox delivers it, under a span of its own
	}
	ob.q.Poke() // its outbox message is due now
}

// turn applies the submission's messages and runs the tool loop,
// streaming it to chat clients through cs.
func (a *Agent[S]) turn(ctx context.Context, s *store.Submission, cs *chatStream) (json.RawMessage, store.Usage, error) {
	rt := a.Runtime()
	st := a.store()
	var usage store.Usage
	if err := st.ApplySubmission(ctx, a.key(), s.ID, rt.NodeID(), rt.Clock().Now()); err != nil {
		return nil, usage, err
	}
	history, err := a.history.read(ctx, st, a.key())
	if err != nil {
		return nil, usage, err
	}
	cfg := a.cfg
	tc := TurnConfig{Model: cfg.opts.ModelName, System: cfg.opts.System, Tools: slices.Clone(cfg.tools),
		MaxSteps: cfg.opts.MaxSteps}
	if h, ok := a.Self().(BeforeTurner); ok {
		n := len(tc.Tools)
		if err := h.BeforeTurn(ctx, submissionInfo(s), &tc); err != nil {
			return nil, usage, fmt.Errorf("BeforeTurn: %w", err)
		}
		if len(tc.Tools) < n {
			return nil, usage, errors.New("BeforeTurn: tools may be added, not removed (narrow ActiveTools instead)")
		}
		for i := n; i < len(tc.Tools); i++ {
			if tc.Tools[i], err = tc.Tools[i].prepare(); err != nil {
				return nil, usage, fmt.Errorf("BeforeTurn: %w", err)
			}
		}
	}
	byName := map[string]Tool{}
	var offered []model.Tool
	for _, t := range tc.Tools {
		byName[t.Name] = t
		if tc.ActiveTools == nil || slices.Contains(tc.ActiveTools, t.Name) {
			offered = append(offered, model.Tool{Name: t.Name, Description: t.Description, Parameters: t.wire})
		}
	}
	meta := chatMetaOf(s)
	if meta == nil {
		meta = &chatMeta{}
	}
	// A chat client's own tools are offered too; their calls wait for
	// the client's result.
	clientTools := map[string]bool{}
	for _, ct := range meta.ClientTools {
		if _, ok := byName[ct.Name]; ok || clientTools[ct.Name] {
			continue // a server tool of the same name wins (chatRequest refuses it)
		}
		clientTools[ct.Name] = true
		offered = append(offered, model.Tool{Name: ct.Name, Description: ct.Description, Parameters: jsonOr(ct.Parameters, `{"type":"object"}`)})
	}
	// Calls this submission approved run first, as the step that made
	// them would have run them. Their results are shown in a snapshot,
	// not streamed: the pinned client applies a continuation's stream to
	// a new message, where a tool output finds no call to attach to.
	for _, id := range meta.Approved {
		c, ok := findCall(history, id)
		if !ok {
			return nil, usage, fmt.Errorf("approved tool call %q is not in the conversation", id)
		}
		res := a.runTool(ctx, byName, c)
		if err := a.appendMessages(keepCtx(ctx), s.ID, []storedMessage{{Message: res}}); err != nil {
			return nil, usage, err
		}
		history = append(history, res)
	}
	if len(meta.Approved) > 0 {
		a.broadcastChatMessages(ctx)
	}
	if meta.StoreOnly {
		return plainTurn{}.output("", nil, true), usage, nil
	}
	// A call that never got its result (a client tool or an approval that
	// a later message passed by) is answered, for the model only, as
	// such: providers refuse a call without a result.
	history = closeWaiting(history)
	mode := turnModeOf(s, tc.Tools)
	cs.isFinal = mode.isFinal
	offered = mode.offer(offered)
	tel := host(rt).Telemetry()
	provider := ""
	if tel.Tracing() || tel.Metrics() {
		provider = telemetry.ProviderName(cfg.opts.Model)
	}
	var (
		text   string
		answer json.RawMessage
		ended  bool // before MaxSteps ran out
	)
	for step := 0; step < tc.MaxSteps; step++ {
		req := model.Request{Model: tc.Model, System: tc.System, Messages: history, Tools: offered,
			ToolChoice: mode.choice(&tc, step, offered), Temperature: tc.Temperature, TopP: tc.TopP, MaxTokens: tc.MaxTokens}
		a.chatSend(cs, cs.startStep(step))
		cctx, span, start := tel.StartChat(ctx, provider, tc.Model)
		resp, err := model.Collect(cctx, cfg.opts.Model, req, func(ev model.Event) {
			a.emit(streamFrame(s.ID, step, ev))
			a.chatSend(cs, cs.event(ev))
		})
		tel.EndChat(cctx, span, start, provider, tc.Model, resp.Usage.InputTokens, resp.Usage.OutputTokens, string(resp.FinishReason), err)
		cs.reason = resp.FinishReason
		usage.InputTokens += resp.Usage.InputTokens
		usage.OutputTokens += resp.Usage.OutputTokens
		if err != nil {
			if kctx := keepCtx(ctx); kctx != ctx && resp.Text != "" {
				// Cancelled mid-answer: keep the text the clients saw.
				if aerr := a.appendMessages(kctx, s.ID, []storedMessage{{Message: model.Message{Role: model.RoleAssistant, Content: resp.Text}}}); aerr == nil {
					a.chatSend(cs, cs.endStep())
				}
			}
			return nil, usage, err
		}
		text = resp.Text
		// The final-answer call never enters the conversation; the answer is
		// the arguments of the last one.
		var calls []model.ToolCall
		for _, c := range resp.ToolCalls {
			if mode.isFinal(c.Name) {
				answer = c.Arguments
				continue
			}
			calls = append(calls, c)
		}
		reply := model.Message{Role: model.RoleAssistant, Content: resp.Text, ToolCalls: calls}
		added := []model.Message{reply}
		var unsaved []model.Message // told to the model in this turn, never stored
		for _, bad := range resp.Invalid {
			// A call whose arguments are not a JSON object is never executed.
			// It stays in the conversation (with empty arguments, since the
			// providers want JSON there) and the model is told why, so it can
			// try again — except a final-answer call, which is never stored.
			c := bad.Call
			if c.ID == "" {
				c.ID = fmt.Sprintf("call_invalid_%d_%d", step, bad.Index)
			}
			c.Arguments = json.RawMessage("{}")
			result := model.Message{Role: model.RoleTool, ToolCallID: c.ID, ToolName: c.Name, IsError: true,
				Content: "the call's arguments were not a JSON object (" + bad.Reason + "); it was not executed"}
			if mode.isFinal(c.Name) {
				unsaved = append(unsaved, model.Message{Role: model.RoleAssistant, ToolCalls: []model.ToolCall{c}}, result)
				continue
			}
			reply.ToolCalls = append(reply.ToolCalls, c)
			added[0] = reply
			added = append(added, result)
		}
		// A client tool's call and one that needs approval wait; the
		// others run now.
		await := map[string]string{}
		for _, c := range calls {
			switch t, ok := byName[c.Name]; {
			case ok && t.NeedsApproval:
				await[c.ID] = awaitApproval
				a.chatSend(cs, cs.approvalRequest(c.ID))
			case !ok && clientTools[c.Name]:
				await[c.ID] = awaitClient
			default:
				added = append(added, a.runTool(ctx, byName, c))
			}
		}
		if reply.Content == "" && len(reply.ToolCalls) == 0 {
			added = added[1:] // only a final answer: nothing of the assistant's to keep
		}
		if len(added) > 0 {
			rows := make([]storedMessage, len(added))
			for i, m := range added {
				rows[i] = storedMessage{Message: m}
				if m.Role == model.RoleAssistant && len(await) > 0 {
					rows[i].Await = await
				}
			}
			if err := a.appendMessages(keepCtx(ctx), s.ID, rows); err != nil {
				return nil, usage, err
			}
		}
		for _, m := range added {
			if m.Role == model.RoleTool {
				a.chatSend(cs, cs.result(m))
			}
		}
		a.chatSend(cs, cs.endStep())
		history = append(append(history, added...), unsaved...)
		if answer != nil || len(await) > 0 || (len(calls) == 0 && len(resp.Invalid) == 0) {
			// answered, waiting for a client or a person, or the model
			// ended the turn
			ended = true
			break
		}
	}
	return mode.output(text, answer, ended), usage, nil
}

// turnMode is what sets a kind of turn apart; turn's tool loop is the same
// for every kind. A plain turn (plainTurn) ends when the model stops
// calling tools; a prompt turn (promptTurn, think.Prompt) answers through a
// final-answer tool.
type turnMode interface {
	// offer returns the tools to offer the model: the turn's own, offered,
	// and the mode's.
	offer(offered []model.Tool) []model.Tool
	// choice is the tool choice of step (from 0) when offered are offered.
	choice(tc *TurnConfig, step int, offered []model.Tool) model.ToolChoice
	// isFinal reports whether a call is the final answer: never executed
	// nor stored, its arguments are the answer.
	isFinal(name string) bool
	// output is the submission's output, from the last step's text, the
	// answer if any, and whether the turn ended before MaxSteps ran out.
	output(text string, answer json.RawMessage, ended bool) json.RawMessage
}

// turnModeOf returns the mode of the submission's turn, whose tools are
// tools.
func turnModeOf(s *store.Submission, tools []Tool) turnMode {
	if spec := promptOf(s); spec != nil {
		return promptTurn{spec: spec, final: finalToolName(tools)}
	}
	return plainTurn{}
}

// plainTurn is a turn of SubmitMessages: the configured tools and tool
// choice, and the model's text as the output.
type plainTurn struct{}

func (plainTurn) offer(offered []model.Tool) []model.Tool { return offered }

func (plainTurn) choice(tc *TurnConfig, _ int, _ []model.Tool) model.ToolChoice { return tc.ToolChoice }

func (plainTurn) isFinal(string) bool { return false }

func (plainTurn) output(text string, _ json.RawMessage, ended bool) json.RawMessage {
	finish := "max_steps"
	if ended {
		finish = "answered"
	}
	out, _ := json.Marshal(map[string]string{"text": text, "finish": finish})
	return out
}

// runTool runs one tool call and returns its result message.
func (a *Agent[S]) runTool(ctx context.Context, tools map[string]Tool, c model.ToolCall) model.Message {
	res := model.Message{Role: model.RoleTool, ToolCallID: c.ID, ToolName: c.Name}
	t, ok := tools[c.Name]
	if !ok {
		res.IsError, res.Content = true, fmt.Sprintf("there is no tool named %q", c.Name)
		return res
	}
	if err := t.Schema.Validate(c.Arguments); err != nil {
		res.IsError, res.Content = true, "invalid arguments: "+err.Error()
		return res
	}
	tel := host(a.Runtime()).Telemetry()
	tctx, span := tel.StartTool(ctx, c.Name, c.ID)
	out, err := t.Run(tctx, c.Arguments)
	if span != nil {
		telemetry.End(span, err, "")
	}
	if err != nil {
		res.IsError, res.Content = true, err.Error()
		return res
	}
	b, err := json.Marshal(out)
	if err != nil {
		res.IsError, res.Content = true, "the tool's result is not JSON: "+err.Error()
		return res
	}
	res.Content = string(b)
	return res
}

// findCall finds tool call id in history, newest first.
func findCall(history []model.Message, id string) (model.ToolCall, bool) {
	for i := len(history) - 1; i >= 0; i-- {
		for _, c := range history[i].ToolCalls {
			if c.ID == id {
				return c, true
			}
		}
	}
	return model.ToolCall{}, false
}

// errNoResult is what the model is told of a call that never got a result.
const errNoResult = "the tool call got no result: the conversation went on without it"

// closeWaiting returns history with an error result after every tool call
// that has none (results follow their call's message).
func closeWaiting(history []model.Message) []model.Message {
	out := make([]model.Message, 0, len(history))
	for i := 0; i < len(history); i++ {
		m := history[i]
		out = append(out, m)
		if m.Role != model.RoleAssistant || len(m.ToolCalls) == 0 {
			continue
		}
		answered := map[string]bool{}
		for i+1 < len(history) && history[i+1].Role == model.RoleTool {
			i++
			answered[history[i].ToolCallID] = true
			out = append(out, history[i])
		}
		for _, c := range m.ToolCalls {
			if !answered[c.ID] {
				out = append(out, model.Message{Role: model.RoleTool, ToolCallID: c.ID, ToolName: c.Name, IsError: true, Content: errNoResult})
			}
		}
	}
	return out
}

func (a *Agent[S]) appendMessages(ctx context.Context, id string, msgs []storedMessage) error {
	rows := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		rows[i] = b
	}
	rt := a.Runtime()
	return a.store().AppendConversation(ctx, a.key(), id, rt.NodeID(), rows, rt.Clock().Now())
}

// streamFrame is the WebSocket frame of one streamed model event.
func streamFrame(id string, step int, ev model.Event) map[string]any {
	f := map[string]any{"type": "cf_agent_think", "event": string(ev.Kind), "submissionId": id, "step": step}
	switch ev.Kind {
	case model.EventText:
		f["text"] = ev.Text
	case model.EventToolCallStart:
		f["index"], f["id"], f["name"] = ev.Index, ev.ToolCall.ID, ev.ToolCall.Name
	case model.EventToolCallDelta:
		f["index"], f["delta"] = ev.Index, ev.ArgumentsDelta
	case model.EventToolCallEnd:
		f["index"], f["id"], f["name"], f["arguments"] = ev.Index, ev.ToolCall.ID, ev.ToolCall.Name, ev.ToolCall.Arguments
		if ev.Invalid != "" {
			f["invalid"] = ev.Invalid
		}
	case model.EventUsage:
		f["usage"] = ev.Usage
	case model.EventFinish:
		f["finishReason"] = ev.FinishReason
	}
	return f
}

// emit broadcasts a frame to the agent's WebSocket clients.
func (a *Agent[S]) emit(frame map[string]any) {
	if err := a.Broadcast(frame); err != nil {
		a.Logger().Warn("broadcasting a turn event failed", "err", err)
	}
}
