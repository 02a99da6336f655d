package anthropic

import (
	"encoding/json"
	"fmt"

	"agentflow/model"

	"github.com/anthropics/anthropic-sdk-go"
)

const providerName = "anthropic"

// params maps a model.Request to Messages parameters.
func (p *Provider) params(req model.Request) (anthropic.MessageNewParams, error) {
	var out anthropic.MessageNewParams
	out.Model = anthropic.Model(p.opts.Model)
	if req.Model != "" {
		out.Model = anthropic.Model(req.Model)
	}
	out.MaxTokens = int64(p.opts.MaxTokens)
	if req.MaxTokens > 0 {
		out.MaxTokens = int64(req.MaxTokens)
	}
	if req.System != "" {
		out.System = []anthropic.TextBlockParam{{Text: req.System}}
	}

	for i, m := range req.Messages {
		role, blocks, err := contentBlocks(m)
		if err != nil {
			return out, fmt.Errorf("message %d: %w", i, err)
		}
		if len(blocks) == 0 {
			continue
		}
		// The API wants the sides to alternate: merge consecutive messages
		// of one side (tool results and the user's next words included).
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == role {
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
			continue
		}
		out.Messages = append(out.Messages, anthropic.MessageParam{Role: role, Content: blocks})
	}

	for _, t := range req.Tools {
		schema, err := inputSchema(t.Parameters)
		if err != nil {
			return out, fmt.Errorf("tool %q: %w", t.Name, err)
		}
		tp := &anthropic.ToolParam{Name: t.Name, InputSchema: schema}
		if t.Description != "" {
			tp.Description = anthropic.String(t.Description)
		}
		out.Tools = append(out.Tools, anthropic.ToolUnionParam{OfTool: tp})
	}
	switch req.ToolChoice.Mode {
	case "":
	case model.ToolChoiceAuto:
		out.ToolChoice.OfAuto = &anthropic.ToolChoiceAutoParam{}
	case model.ToolChoiceRequired:
		out.ToolChoice.OfAny = &anthropic.ToolChoiceAnyParam{}
	case model.ToolChoiceNone:
		out.ToolChoice.OfNone = &anthropic.ToolChoiceNoneParam{}
	case model.ToolChoiceTool:
		if req.ToolChoice.Name == "" {
			return out, fmt.Errorf("tool choice %q needs a tool name", req.ToolChoice.Mode)
		}
		out.ToolChoice = anthropic.ToolChoiceParamOfTool(req.ToolChoice.Name)
	default:
		return out, fmt.Errorf("unknown tool choice %q", req.ToolChoice.Mode)
	}

	if req.Temperature != nil {
		out.Temperature = anthropic.Float(*req.Temperature)
	}
	if req.TopP != nil {
		out.TopP = anthropic.Float(*req.TopP)
	}
	return out, nil
}

// contentBlocks maps one message to its side and content blocks. Empty
// text is left out (the API rejects empty text blocks).
func contentBlocks(m model.Message) (anthropic.MessageParamRole, []anthropic.ContentBlockParamUnion, error) {
	var blocks []anthropic.ContentBlockParamUnion
	switch m.Role {
	case model.RoleUser:
		if m.Content != "" {
			blocks = append(blocks, anthropic.NewTextBlock(m.Content))
		}
		return anthropic.MessageParamRoleUser, blocks, nil
	case model.RoleAssistant:
		if m.Content != "" {
			blocks = append(blocks, anthropic.NewTextBlock(m.Content))
		}
		for _, tc := range m.ToolCalls {
			input := map[string]any{}
			if len(tc.Arguments) > 0 {
				if err := json.Unmarshal(tc.Arguments, &input); err != nil {
					return "", nil, fmt.Errorf("tool call %s: arguments are not a JSON object: %w", tc.ID, err)
				}
			}
			blocks = append(blocks, anthropic.NewToolUseBlock(tc.ID, input, tc.Name))
		}
		return anthropic.MessageParamRoleAssistant, blocks, nil
	case model.RoleTool:
		if m.ToolCallID == "" {
			return "", nil, fmt.Errorf("tool result without a tool call id")
		}
		r := &anthropic.ToolResultBlockParam{ToolUseID: m.ToolCallID}
		if m.Content != "" {
			r.Content = []anthropic.ToolResultBlockParamContentUnion{{OfText: &anthropic.TextBlockParam{Text: m.Content}}}
		}
		if m.IsError {
			r.IsError = anthropic.Bool(true)
		}
		return anthropic.MessageParamRoleUser, []anthropic.ContentBlockParamUnion{{OfToolResult: r}}, nil
	default:
		return "", nil, fmt.Errorf("unknown role %q", m.Role)
	}
}

// inputSchema splits a tool's JSON Schema into the SDK's input_schema:
// properties and required in their fields, every other keyword but type
// kept as is.
func inputSchema(raw json.RawMessage) (anthropic.ToolInputSchemaParam, error) {
	var s anthropic.ToolInputSchemaParam
	if len(raw) == 0 {
		s.Properties = map[string]any{}
		return s, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return s, fmt.Errorf("parameters are not a JSON object: %w", err)
	}
	if t, ok := m["type"]; ok && t != "object" {
		return s, fmt.Errorf("parameters must be an object schema, not type %v", t)
	}
	s.Properties = m["properties"]
	if s.Properties == nil {
		s.Properties = map[string]any{}
	}
	if req, ok := m["required"].([]any); ok {
		for _, r := range req {
			if name, ok := r.(string); ok {
				s.Required = append(s.Required, name)
			}
		}
	}
	for k, v := range m {
		switch k {
		case "type", "properties", "required":
		default:
			if s.ExtraFields == nil {
				s.ExtraFields = map[string]any{}
			}
			s.ExtraFields[k] = v
		}
	}
	return s, nil
}
