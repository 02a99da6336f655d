// Package schema derives JSON Schema from Go types, validates JSON values
// against it, and checks or converts a schema to the strictest form that the
// model providers accept for tool arguments and structured output (DESIGN §4.4).
//
// # API
//
//   - [For] / [ForType] derive a [Schema] from a Go type (cached per type).
//   - [Parse] reads a hand-written schema.
//   - [Schema.Validate] checks a JSON value and returns a [*ValidationError]
//     listing every violation with the JSON pointer of the offending value.
//   - [Strict] turns a schema into the provider form and fails with a
//     [*ProviderError] (every violation, with its schema path) when the schema
//     cannot be expressed under the provider rules; [Check] only reports.
//
// think.Prompt[T] and Think tools use For then Strict: the strict form is
// sent to the provider, the full schema is kept for local validation.
//
// # Derivation rules
//
// Structs become objects with additionalProperties false and properties in
// field order, named by their json tags. Fields tagged omitempty or omitzero
// and pointer fields are optional; pointer fields also accept null. Slices
// accept null too, as encoding/json writes a nil slice as null. A
// `jsonschema:"..."` field tag is the property's description (the library's
// convention; it must not start with "WORD="). time.Time is a string with
// format date-time. A named type implementing [Enumerated] is restricted to
// the values it lists. Maps with string keys become objects whose
// additionalProperties is the value schema, and interface types accept any
// value: both derive fine but are not expressible for providers, so Strict
// fails on them, as it does for any root that is not a plain object (a
// scalar, a slice, or a pointer to a struct, which is nullable). Enumerated
// must be implemented with a value receiver. Recursive types are rejected by
// For (the library reports the cycle).
//
// # Libraries, and why
//
// Inference uses github.com/google/jsonschema-go: it is maintained by Google,
// follows encoding/json's tag rules, records property order, and its Schema
// type round-trips every draft 2020-12 keyword, so we can walk and rewrite
// schemas with types rather than with map[string]any. Its validator is not
// used: it stops at the first error and reports no instance location, while
// we must list every violation with its path.
//
// Validation uses github.com/santhosh-tekuri/jsonschema/v6: a maintained,
// fully spec-compliant validator (draft 4 to 2020-12, format assertions) whose
// errors form a tree of every failure with its instance location and a typed
// error kind, which we flatten into our violations.
//
// The provider rules ([Check], [Strict]) are our own: no library implements
// the intersection of OpenAI's strict mode and Anthropic's tool schemas.
package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	gschema "github.com/google/jsonschema-go/jsonschema"
	vschema "github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema is an immutable JSON Schema (draft 2020-12) ready for validation.
// It marshals to its JSON form.
type Schema struct {
	s        *gschema.Schema // never mutated after construction
	raw      json.RawMessage
	compiled *vschema.Schema
}

// Enumerated is implemented by named types whose values form a closed set,
// e.g. a string type with constants. The method is called on the zero value.
type Enumerated interface {
	JSONSchemaEnum() []any
}

var cache sync.Map // reflect.Type -> *Schema

// For derives the schema of T. See the package doc for the rules. The result
// is cached per type and must not be modified.
func For[T any]() (*Schema, error) {
	return ForType(reflect.TypeFor[T]())
}

// ForType is [For] for a reflect.Type.
func ForType(t reflect.Type) (*Schema, error) {
	if t == nil {
		return nil, fmt.Errorf("schema: nil type")
	}
	if v, ok := cache.Load(t); ok {
		return v.(*Schema), nil
	}
	types := map[reflect.Type]*gschema.Schema{
		reflect.TypeFor[time.Time](): {Type: "string", Format: "date-time"},
	}
	if err := collectEnums(t, types, map[reflect.Type]bool{}); err != nil {
		return nil, err
	}
	gs, err := gschema.ForType(t, &gschema.ForOptions{TypeSchemas: types})
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	pointersOptional(t, gs, types, map[reflect.Type]bool{})
	s, err := build(gs)
	if err != nil {
		return nil, err
	}
	v, _ := cache.LoadOrStore(t, s)
	return v.(*Schema), nil
}

// Parse reads a JSON Schema document. Property order is kept as written.
func Parse(data []byte) (*Schema, error) {
	gs := new(gschema.Schema)
	if err := json.Unmarshal(data, gs); err != nil {
		return nil, fmt.Errorf("schema: parse: %w", err)
	}
	keepOrder(data, gs)
	return build(gs)
}

func build(gs *gschema.Schema) (*Schema, error) {
	raw, err := json.Marshal(gs)
	if err != nil {
		return nil, fmt.Errorf("schema: marshal: %w", err)
	}
	doc, err := vschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	c := vschema.NewCompiler()
	c.AssertFormat()
	const loc = "urn:agentflow:schema"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	compiled, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schema: invalid schema: %w", err)
	}
	return &Schema{s: gs, raw: raw, compiled: compiled}, nil
}

// JSON returns the schema document (a copy).
func (s *Schema) JSON() json.RawMessage { return bytes.Clone(s.raw) }

// MarshalJSON implements json.Marshaler.
func (s *Schema) MarshalJSON() ([]byte, error) { return s.JSON(), nil }

// String returns the schema document.
func (s *Schema) String() string { return string(s.raw) }

// collectEnums finds the named types reachable from t that implement
// Enumerated and records their schemas.
func collectEnums(t reflect.Type, out map[reflect.Type]*gschema.Schema, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	if _, ok := out[t]; ok {
		return nil
	}
	if t.Kind() != reflect.Interface && t.Implements(reflect.TypeFor[Enumerated]()) {
		base, err := gschema.ForType(t, nil)
		if err != nil {
			return fmt.Errorf("schema: enum %v: %w", t, err)
		}
		base.Enum = reflect.Zero(t).Interface().(Enumerated).JSONSchemaEnum()
		out[t] = base
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return collectEnums(t.Elem(), out, seen)
	case reflect.Struct:
		for _, f := range reflect.VisibleFields(t) {
			if f.IsExported() || f.Anonymous {
				if err := collectEnums(f.Type, out, seen); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// pointersOptional walks t and its inferred schema together and removes
// pointer fields from "required": encoding/json decodes a missing field to
// nil just as it does null.
func pointersOptional(t reflect.Type, s *gschema.Schema, known map[reflect.Type]*gschema.Schema, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s == nil || known[t] != nil || seen[t] {
		return
	}
	seen[t] = true
	defer delete(seen, t)
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		pointersOptional(t.Elem(), s.Items, known, seen)
	case reflect.Map:
		pointersOptional(t.Elem(), s.AdditionalProperties, known, seen)
	case reflect.Struct:
		for _, f := range reflect.VisibleFields(t) {
			if f.Anonymous || !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			ps, ok := s.Properties[name]
			if !ok {
				continue
			}
			if f.Type.Kind() == reflect.Pointer {
				s.Required = slices.DeleteFunc(s.Required, func(r string) bool { return r == name })
			}
			pointersOptional(f.Type, ps, known, seen)
		}
		if len(s.Required) == 0 {
			s.Required = nil
		}
	}
}

// keepOrder sets PropertyOrder from the order of keys in the source document,
// which encoding/json forgets.
func keepOrder(data []byte, s *gschema.Schema) {
	if s == nil {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return
	}
	if p, ok := obj["properties"]; ok {
		s.PropertyOrder = objectKeys(p)
		var props map[string]json.RawMessage
		_ = json.Unmarshal(p, &props)
		for k, v := range props {
			keepOrder(v, s.Properties[k])
		}
	}
	one := func(key string, sub *gschema.Schema) {
		if v, ok := obj[key]; ok {
			keepOrder(v, sub)
		}
	}
	list := func(key string, subs []*gschema.Schema) {
		var arr []json.RawMessage
		if v, ok := obj[key]; ok && json.Unmarshal(v, &arr) == nil && len(arr) == len(subs) {
			for i := range arr {
				keepOrder(arr[i], subs[i])
			}
		}
	}
	named := func(key string, subs map[string]*gschema.Schema) {
		var m map[string]json.RawMessage
		if v, ok := obj[key]; ok && json.Unmarshal(v, &m) == nil {
			for k, v := range m {
				keepOrder(v, subs[k])
			}
		}
	}
	one("items", s.Items)
	one("additionalProperties", s.AdditionalProperties)
	list("prefixItems", s.PrefixItems)
	list("anyOf", s.AnyOf)
	list("oneOf", s.OneOf)
	list("allOf", s.AllOf)
	named("$defs", s.Defs)
	named("definitions", s.Definitions)
}

func objectKeys(data []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := tok.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return keys
		}
	}
	return keys
}

// pointer appends escaped reference tokens to a JSON pointer.
func pointer(base string, tokens ...string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}
