package schema

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	vschema "github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Violation is one problem found by [Schema.Validate] or [Check]. Path is a
// JSON pointer ("" is the root): into the value for validation, into the
// schema document for provider checks.
type Violation struct {
	Path    string
	Message string
}

func (v Violation) String() string {
	p := v.Path
	if p == "" {
		p = "(root)"
	}
	return p + ": " + v.Message
}

// ValidationError reports every way a value fails its schema.
type ValidationError struct {
	Violations []Violation
}

func (e *ValidationError) Error() string {
	return "schema: invalid value: " + joinViolations(e.Violations)
}

func joinViolations(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, "; ")
}

var printer = message.NewPrinter(language.English)

// Validate checks the JSON value v against the schema. It returns nil or a
// [*ValidationError] listing every violation, sorted by path. Values that
// are not valid JSON are reported as a violation at the root.
func (s *Schema) Validate(v json.RawMessage) error {
	inst, err := vschema.UnmarshalJSON(bytes.NewReader(v))
	if err != nil {
		return &ValidationError{Violations: []Violation{{Message: "invalid JSON: " + err.Error()}}}
	}
	err = s.compiled.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *vschema.ValidationError
	if !errors.As(err, &ve) {
		return &ValidationError{Violations: []Violation{{Message: err.Error()}}}
	}
	var out []Violation
	flatten(ve, &out)
	if len(out) == 0 { // cannot happen, but never report an empty error
		out = append(out, Violation{Path: pointer("", ve.InstanceLocation...), Message: ve.Error()})
	}
	slices.SortStableFunc(out, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Message, b.Message))
	})
	return &ValidationError{Violations: slices.Compact(out)}
}

func flatten(e *vschema.ValidationError, out *[]Violation) {
	path := pointer("", e.InstanceLocation...)
	switch k := e.ErrorKind.(type) {
	case *kind.AnyOf:
		*out = append(*out, Violation{path, "matches none of the anyOf alternatives: " + causes(e)})
		return
	case *kind.OneOf:
		if len(k.Subschemas) == 0 {
			*out = append(*out, Violation{path, "matches none of the oneOf alternatives: " + causes(e)})
		} else {
			*out = append(*out, Violation{path, fmt.Sprintf("matches more than one oneOf alternative: %v", k.Subschemas)})
		}
		return
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, Violation{pointer(path, m), "required property is missing"})
		}
		return
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			*out = append(*out, Violation{pointer(path, p), "property is not allowed"})
		}
		return
	case *kind.Type:
		*out = append(*out, Violation{path, fmt.Sprintf("expected %s, got %s", strings.Join(k.Want, " or "), k.Got)})
		return
	case *kind.FalseSchema:
		*out = append(*out, Violation{path, "value is not allowed"})
		return
	}
	if len(e.Causes) == 0 {
		*out = append(*out, Violation{path, e.ErrorKind.LocalizedString(printer)})
		return
	}
	for _, c := range e.Causes {
		flatten(c, out)
	}
}

func causes(e *vschema.ValidationError) string {
	var sub []Violation
	for _, c := range e.Causes {
		flatten(c, &sub)
	}
	parts := make([]string, len(sub))
	for i, v := range sub {
		parts[i] = v.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
