package agent

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes is the longest agent instance name, in bytes.
const MaxNameBytes = 256

// ErrInvalidName: an agent instance name breaks a rule of ValidateName.
var ErrInvalidName = errors.New("invalid agent name")

// NameError says which rule an agent instance name breaks. It matches
// ErrInvalidName.
type NameError struct {
	// Name is the name as given, cut to its first 64 bytes.
	Name string
	// Rule is the rule it breaks, as a phrase: "must not be empty", "must
	// be at most 256 bytes, not 300", "must be valid UTF-8", "must not
	// contain control characters (U+0000 at byte 3)".
	Rule string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("agent name %q: %s", e.Name, e.Rule)
}

func (e *NameError) Unwrap() error { return ErrInvalidName }

// ValidateName checks an agent instance name: not empty, at most
// MaxNameBytes bytes of valid UTF-8, and no control characters (NUL, tab,
// newline, DEL, C1 controls). The runtime checks every name it is asked
// for — over HTTP and WebSocket (where a bad name answers 400), by Ref,
// Call and With, and for schedules and workflow notices — before it
// touches the store, so no such name is ever stored. The error is a
// *NameError naming the rule, matching ErrInvalidName.
func ValidateName(name string) error {
	var rule string
	switch {
	case name == "":
		rule = "must not be empty"
	case len(name) > MaxNameBytes:
		rule = fmt.Sprintf("must be at most %d bytes, not %d", MaxNameBytes, len(name))
	case !utf8.ValidString(name):
		rule = "must be valid UTF-8"
	default:
		for i, r := range name {
			if unicode.IsControl(r) {
				rule = fmt.Sprintf("must not contain control characters (%U at byte %d)", r, i)
				break
			}
		}
	}
	if rule == "" {
		return nil
	}
	shown := name
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return &NameError{Name: shown, Rule: rule}
}
