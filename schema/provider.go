package schema

import (
	"encoding/json"
	"slices"
	"strconv"

	gschema "github.com/google/jsonschema-go/jsonschema"
)

// ProviderError reports every reason a schema cannot be sent to a provider.
type ProviderError struct {
	Violations []Violation
}

func (e *ProviderError) Error() string {
	return "schema: not expressible under provider rules: " + joinViolations(e.Violations)
}

// Keywords that the strictest common provider rules (OpenAI strict mode,
// Anthropic tools) do not accept anywhere in a schema.
var forbidden = []string{
	"allOf", "not", "if", "then", "else", "oneOf",
	"dependentSchemas", "dependentRequired", "patternProperties", "propertyNames",
	"unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
}

// Check reports every place where s breaks the provider rules of DESIGN §4.4,
// each with the JSON pointer of the offending subschema:
//
//   - the root is an object (type exactly "object");
//   - every object has additionalProperties false (so maps are not expressible);
//   - every property is listed in required (optional ones must be nullable);
//   - every subschema has a type, an anyOf, a $ref, an enum or a const
//     (an unconstrained value such as Go's any is not expressible);
//   - none of allOf, not, if/then/else, oneOf, dependentSchemas,
//     dependentRequired, patternProperties, propertyNames,
//     unevaluatedProperties, unevaluatedItems, $dynamicRef.
//
// An empty result means s can be sent as is.
func Check(s *Schema) []Violation {
	var out []Violation
	if s.s.Type != "object" && !slices.Equal(s.s.Types, []string{"object"}) {
		out = append(out, Violation{"", `root must be an object (type "object")`})
	}
	check(s.s, "", &out)
	return out
}

// Strict returns the provider form of s: additionalProperties false is added
// to objects that lack it, and properties that are not required become
// required and nullable (type [T, "null"], or anyOf with {"type":"null"} when
// there is no type). s is left unchanged; keep it for local validation, since
// the strict form also accepts null for optional fields. If the result still
// breaks a rule of [Check], Strict returns a [*ProviderError] listing every
// violation.
func Strict(s *Schema) (*Schema, error) {
	c := s.s.CloneSchemas()
	strictify(c)
	out, err := build(c)
	if err != nil {
		return nil, err
	}
	if vs := Check(out); len(vs) > 0 {
		return nil, &ProviderError{Violations: vs}
	}
	return out, nil
}

func isBool(s *gschema.Schema, want string) bool {
	b, err := json.Marshal(s)
	return err == nil && string(b) == want
}

func hasType(s *gschema.Schema, t string) bool {
	return s.Type == t || slices.Contains(s.Types, t)
}

func isObject(s *gschema.Schema) bool {
	return hasType(s, "object") || (s.Type == "" && s.Types == nil && s.Properties != nil)
}

// orderedProps returns the property names in rendering order.
func orderedProps(s *gschema.Schema) []string {
	var names []string
	for _, n := range s.PropertyOrder {
		if _, ok := s.Properties[n]; ok && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var rest []string
	for n := range s.Properties {
		if !slices.Contains(names, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(names, rest...)
}

func check(s *gschema.Schema, path string, out *[]Violation) {
	if s == nil {
		return
	}
	add := func(msg string) { *out = append(*out, Violation{path, msg}) }
	if isBool(s, "false") {
		add("the false schema is not supported")
		return
	}
	if s.Type == "" && len(s.Types) == 0 && s.AnyOf == nil && s.Ref == "" && s.Enum == nil && s.Const == nil {
		add("no type: an unconstrained value (such as Go's any) is not expressible")
	}
	present := map[string]bool{
		"allOf": s.AllOf != nil, "not": s.Not != nil, "if": s.If != nil, "then": s.Then != nil,
		"else": s.Else != nil, "oneOf": s.OneOf != nil, "dependentSchemas": s.DependentSchemas != nil,
		"dependentRequired": s.DependentRequired != nil, "patternProperties": s.PatternProperties != nil,
		"propertyNames": s.PropertyNames != nil, "unevaluatedProperties": s.UnevaluatedProperties != nil,
		"unevaluatedItems": s.UnevaluatedItems != nil, "$dynamicRef": s.DynamicRef != "",
	}
	for _, k := range forbidden {
		if present[k] {
			add(strconv.Quote(k) + " is not supported by providers")
		}
	}
	if isObject(s) {
		switch {
		case s.AdditionalProperties == nil:
			add("additionalProperties must be false (it is missing)")
		case !isBool(s.AdditionalProperties, "false"):
			add("additionalProperties must be false (a map with arbitrary keys is not expressible)")
		}
		for _, name := range orderedProps(s) {
			if !slices.Contains(s.Required, name) {
				*out = append(*out, Violation{pointer(path, "properties", name),
					"property must be listed in required (make an optional property required and nullable)"})
			}
		}
	}
	// Children, in a fixed order.
	for _, name := range orderedProps(s) {
		check(s.Properties[name], pointer(path, "properties", name), out)
	}
	if s.AdditionalProperties != nil && !isBool(s.AdditionalProperties, "false") {
		check(s.AdditionalProperties, pointer(path, "additionalProperties"), out)
	}
	check(s.Items, pointer(path, "items"), out)
	for i, sub := range s.ItemsArray {
		check(sub, pointer(path, "items", strconv.Itoa(i)), out)
	}
	for i, sub := range s.PrefixItems {
		check(sub, pointer(path, "prefixItems", strconv.Itoa(i)), out)
	}
	for _, l := range []struct {
		key  string
		subs []*gschema.Schema
	}{{"anyOf", s.AnyOf}, {"oneOf", s.OneOf}, {"allOf", s.AllOf}} {
		for i, sub := range l.subs {
			check(sub, pointer(path, l.key, strconv.Itoa(i)), out)
		}
	}
	for _, l := range []struct {
		key  string
		subs map[string]*gschema.Schema
	}{{"$defs", s.Defs}, {"definitions", s.Definitions}} {
		names := make([]string, 0, len(l.subs))
		for n := range l.subs {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			check(l.subs[n], pointer(path, l.key, n), out)
		}
	}
	// not, if, then, else, ... are already reported at this level; their
	// contents are not walked, as the whole keyword must go.
}

// strictify rewrites s in place into the provider form, as far as possible.
func strictify(s *gschema.Schema) {
	if s == nil {
		return
	}
	if isObject(s) {
		if s.AdditionalProperties == nil {
			s.AdditionalProperties = &gschema.Schema{Not: &gschema.Schema{}}
		}
		for _, name := range orderedProps(s) {
			if !slices.Contains(s.Required, name) {
				s.Properties[name] = nullable(s.Properties[name])
				s.Required = append(slices.Clip(s.Required), name)
			}
		}
	}
	for _, sub := range s.Properties {
		strictify(sub)
	}
	if !isBool(s.AdditionalProperties, "false") {
		strictify(s.AdditionalProperties)
	}
	strictify(s.Items)
	for _, list := range [][]*gschema.Schema{s.ItemsArray, s.PrefixItems, s.AnyOf, s.OneOf, s.AllOf} {
		for _, sub := range list {
			strictify(sub)
		}
	}
	for _, m := range []map[string]*gschema.Schema{s.Defs, s.Definitions} {
		for _, sub := range m {
			strictify(sub)
		}
	}
}

// nullable returns s made to accept null as well.
func nullable(s *gschema.Schema) *gschema.Schema {
	switch {
	case s == nil || isBool(s, "true"):
		return s // unconstrained already; Check reports it
	case s.Type != "":
		if s.Type != "null" {
			s.Types = []string{s.Type, "null"}
			s.Type = ""
		}
	case len(s.Types) > 0:
		if !slices.Contains(s.Types, "null") {
			s.Types = append(slices.Clip(s.Types), "null")
		}
	case s.AnyOf != nil && s.Ref == "" && s.Enum == nil && s.Const == nil:
		if !slices.ContainsFunc(s.AnyOf, func(a *gschema.Schema) bool { return hasType(a, "null") }) {
			s.AnyOf = append(slices.Clip(s.AnyOf), &gschema.Schema{Type: "null"})
		}
		return s
	default:
		return &gschema.Schema{AnyOf: []*gschema.Schema{s, {Type: "null"}}}
	}
	if s.Enum != nil && !slices.Contains(s.Enum, any(nil)) {
		s.Enum = append(slices.Clip(s.Enum), nil)
	}
	return s
}
