package telemetry

import (
	"context"
	"reflect"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// GenAI semantic-convention attribute keys (OpenTelemetry semconv, gen_ai.*).
const (
	KeyGenAIOperation     = attribute.Key("gen_ai.operation.name")
	KeyGenAIProvider      = attribute.Key("gen_ai.provider.name")
	KeyGenAISystem        = attribute.Key("gen_ai.system") // the older name of gen_ai.provider.name
	KeyGenAIRequestModel  = attribute.Key("gen_ai.request.model")
	KeyGenAIAgentName     = attribute.Key("gen_ai.agent.name")
	KeyGenAIInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	KeyGenAIOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
	KeyGenAIFinishReasons = attribute.Key("gen_ai.response.finish_reasons")
	KeyGenAIToolName      = attribute.Key("gen_ai.tool.name")
	KeyGenAIToolCallID    = attribute.Key("gen_ai.tool.call.id")
	KeyGenAITokenType     = attribute.Key("gen_ai.token.type")
)

// ProviderName names a model provider for gen_ai.provider.name: its
// Name() when it has one, else the last element of its type's package path
// ("openai", "anthropic", "scripted").
func ProviderName(p any) string {
	if n, ok := p.(interface{ Name() string }); ok {
		return n.Name()
	}
	t := reflect.TypeOf(p)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return ""
	}
	path := t.PkgPath()
	return path[strings.LastIndex(path, "/")+1:]
}

// StartTurn starts the span of a Think turn (gen_ai.operation.name
// invoke_agent), the parent of its model and tool calls, and the child of
// (and linked to) the span that created its submission, which traceparent
// names when there was one: a workflow's prompt step, an HTTP request, a
// chat frame.
func (t *T) StartTurn(ctx context.Context, class, name, submission, model, traceparent string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	ctx, opts := childOfCreator(ctx, traceparent, []trace.SpanStartOption{trace.WithAttributes(
		KeyGenAIOperation.String("invoke_agent"), KeyGenAIAgentName.String(class), KeyGenAIRequestModel.String(model),
		KeyAgentClass.String(class), KeyAgentName.String(name), KeySubmission.String(submission))})
	return t.tracer.Start(ctx, "invoke_agent "+class, opts...)
}

// EndTurn counts a finished submission by status and ends the turn's span
// with its token usage.
func (t *T) EndTurn(ctx context.Context, span trace.Span, class, status string, in, out int, err error) {
	if t.Metrics() {
		t.submissions.Add(ctx, 1, t.attrs.get(KeyAgentClass.String(class), KeyStatus.String(status)))
	}
	if span != nil {
		span.SetAttributes(KeyStatus.String(status), KeyGenAIInputTokens.Int(in), KeyGenAIOutputTokens.Int(out))
		End(span, err, "")
	}
}

// StartChat starts the span of one model call ("chat <model>", or "chat"
// when the model is not named).
func (t *T) StartChat(ctx context.Context, provider, model string) (context.Context, trace.Span, time.Time) {
	var start time.Time
	if t.Metrics() {
		start = time.Now()
	}
	if !t.Tracing() {
		return ctx, nil, start
	}
	name := "chat" // with no model named, the operation alone, as the GenAI conventions say
	if model != "" {
		name += " " + model
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		KeyGenAIOperation.String("chat"), KeyGenAIProvider.String(provider), KeyGenAISystem.String(provider),
		KeyGenAIRequestModel.String(model)))
	return ctx, span, start
}

// EndChat records a model call's duration and token usage by model and
// ends its span with the usage and finish reason.
func (t *T) EndChat(ctx context.Context, span trace.Span, start time.Time, provider, model string, in, out int, finish string, err error) {
	if t.Metrics() && !start.IsZero() {
		op, pv, md := KeyGenAIOperation.String("chat"), KeyGenAIProvider.String(provider), KeyGenAIRequestModel.String(model)
		t.modelDuration.Record(ctx, time.Since(start).Seconds(), t.attrs.get(op, pv, md))
		t.tokenUsage.Record(ctx, int64(in), t.attrs.get(pv, md, KeyGenAITokenType.String("input")))
		t.tokenUsage.Record(ctx, int64(out), t.attrs.get(pv, md, KeyGenAITokenType.String("output")))
	}
	if span != nil {
		span.SetAttributes(KeyGenAIInputTokens.Int(in), KeyGenAIOutputTokens.Int(out))
		if finish != "" {
			span.SetAttributes(KeyGenAIFinishReasons.StringSlice([]string{finish}))
		}
		End(span, err, "")
	}
}

// StartTool starts the span of a tool call ("execute_tool <name>").
func (t *T) StartTool(ctx context.Context, name, callID string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "execute_tool "+name, trace.WithAttributes(
		KeyGenAIOperation.String("execute_tool"), KeyGenAIToolName.String(name), KeyGenAIToolCallID.String(callID)))
}

// StartDelivery starts the span of an outbox message's delivery to a
// workflow instance.
func (t *T) StartDelivery(ctx context.Context, instanceID, eventType string) (context.Context, trace.Span) {
	if !t.Tracing() {
		return ctx, nil
	}
	return t.tracer.Start(ctx, "outbox deliver", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		KeyInstance.String(instanceID), attribute.String("agentflow.event.type", eventType)))
}

// EndDelivery counts a delivery attempt by outcome (OutcomeSucceeded,
// OutcomeRetrying, OutcomeFailed) and ends its span.
func (t *T) EndDelivery(ctx context.Context, span trace.Span, outcome string, err error) {
	if t.Metrics() {
		t.outboxDelivery.Add(ctx, 1, t.attrs.get(KeyOutcome.String(outcome)))
	}
	if span != nil {
		span.SetAttributes(KeyOutcome.String(outcome))
		End(span, err, "")
	}
}
