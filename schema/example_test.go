package schema_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"agentflow/schema"
)

// Issue is a Go type to derive a schema from; the jsonschema tag is a
// property's description.
type Issue struct {
	Title  string   `json:"title" jsonschema:"a short title"`
	Labels []string `json:"labels,omitempty"` // omitempty: optional
}

// Deriving a schema from a Go type, validating values against it, and the
// strict form the model providers accept.
func ExampleFor() {
	s, err := schema.For[Issue]()
	if err != nil {
		panic(err)
	}
	fmt.Println(s)

	fmt.Println("valid:", s.Validate(json.RawMessage(`{"title":"Crash on save","labels":["bug"]}`)) == nil)
	err = s.Validate(json.RawMessage(`{"labels":["bug",3],"extra":true}`))
	var ve *schema.ValidationError
	if errors.As(err, &ve) {
		for _, v := range ve.Violations { // every violation, sorted by path
			fmt.Println(v)
		}
	}

	strict, err := schema.Strict(s) // every property required; optional ones nullable
	if err != nil {
		panic(err)
	}
	fmt.Println(strict)
	// Output:
	// {"type":"object","properties":{"title":{"type":"string","description":"a short title"},"labels":{"type":["null","array"],"items":{"type":"string"}}},"required":["title"],"additionalProperties":false}
	// valid: true
	// /extra: property is not allowed
	// /labels/1: expected string, got number
	// /title: required property is missing
	// {"type":"object","properties":{"title":{"type":"string","description":"a short title"},"labels":{"type":["null","array"],"items":{"type":"string"}}},"required":["title","labels"],"additionalProperties":false}
}
