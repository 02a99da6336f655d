package openai

import (
	"encoding/json"
	"fmt"

	"agentflow/model"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
)

const providerName = "openai"

// params maps a model.Request to chat completion parameters.
func (p *Provider) params(req model.Request) (oai.ChatCompletionNewParams, error) {
	var out oai.ChatCompletionNewParams
	out.Model = shared.ChatModel(p.opts.Model)
	if req.Model != "" {
		out.Model = shared.ChatModel(req.Model)
	}
	out.StreamOptions.IncludeUsage = oai.Bool(true)

	if req.System != "" {
		out.Messages = append(out.Messages, oai.SystemMessage(req.System))
	}
	for i, m := range req.Messages {
		msg, err := message(m)
		if err != nil {
			return out, fmt.Errorf("message %d: %w", i, err)
		}
		out.Messages = append(out.Messages, msg)
	}

	for _, t := range req.Tools {
		params, err := schema(t.Parameters)
		if err != nil {
			return out, fmt.Errorf("tool %q: %w", t.Name, err)
		}
		fn := shared.FunctionDefinitionParam{Name: t.Name, Parameters: params}
		if t.Description != "" {
			fn.Description = oai.String(t.Description)
		}
		out.Tools = append(out.Tools, oai.ChatCompletionFunctionTool(fn))
	}
	switch req.ToolChoice.Mode {
	case "":
	case model.ToolChoiceAuto, model.ToolChoiceRequired, model.ToolChoiceNone:
		out.ToolChoice.OfAuto = oai.String(string(req.ToolChoice.Mode))
	case model.ToolChoiceTool:
		if req.ToolChoice.Name == "" {
			return out, fmt.Errorf("tool choice %q needs a tool name", req.ToolChoice.Mode)
		}
		out.ToolChoice = oai.ToolChoiceOptionFunctionToolChoice(
			oai.ChatCompletionNamedToolChoiceFunctionParam{Name: req.ToolChoice.Name})
	default:
		return out, fmt.Errorf("unknown tool choice %q", req.ToolChoice.Mode)
	}

	if req.Temperature != nil {
		out.Temperature = oai.Float(*req.Temperature)
	}
	if req.TopP != nil {
		out.TopP = oai.Float(*req.TopP)
	}
	if req.MaxTokens > 0 {
		if p.opts.LegacyMaxTokens {
			out.MaxTokens = oai.Int(int64(req.MaxTokens))
		} else {
			out.MaxCompletionTokens = oai.Int(int64(req.MaxTokens))
		}
	}
	return out, nil
}

func message(m model.Message) (oai.ChatCompletionMessageParamUnion, error) {
	switch m.Role {
	case model.RoleUser:
		return oai.UserMessage(m.Content), nil
	case model.RoleAssistant:
		var a oai.ChatCompletionAssistantMessageParam
		if m.Content != "" || len(m.ToolCalls) == 0 {
			a.Content.OfString = oai.String(m.Content)
		}
		for _, tc := range m.ToolCalls {
			args := string(tc.Arguments)
			if len(tc.Arguments) == 0 {
				args = "{}"
			}
			a.ToolCalls = append(a.ToolCalls, oai.ChatCompletionMessageToolCallUnionParam{
				OfFunction: &oai.ChatCompletionMessageFunctionToolCallParam{
					ID: tc.ID,
					Function: oai.ChatCompletionMessageFunctionToolCallFunctionParam{
						Name: tc.Name, Arguments: args,
					},
				},
			})
		}
		return oai.ChatCompletionMessageParamUnion{OfAssistant: &a}, nil
	case model.RoleTool:
		if m.ToolCallID == "" {
			return oai.ChatCompletionMessageParamUnion{}, fmt.Errorf("tool result without a tool call id")
		}
		return oai.ToolMessage(m.Content, m.ToolCallID), nil
	default:
		return oai.ChatCompletionMessageParamUnion{}, fmt.Errorf("unknown role %q", m.Role)
	}
}

// schema decodes a tool's JSON Schema; none is an object with no
// properties.
func schema(raw json.RawMessage) (shared.FunctionParameters, error) {
	if len(raw) == 0 {
		return shared.FunctionParameters{"type": "object", "properties": map[string]any{}}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parameters are not a JSON object: %w", err)
	}
	return m, nil
}
