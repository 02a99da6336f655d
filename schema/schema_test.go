package schema_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"agentflow/schema"
)

// TriageDraft is the draft of seed 001.
type TriageDraft struct {
	Title   string   `json:"title" jsonschema:"a short issue title"`
	Summary string   `json:"summary"`
	Labels  []string `json:"labels"`
}

type Priority string

func (Priority) JSONSchemaEnum() []any { return []any{"low", "medium", "high"} }

type Optional struct {
	Name  string  `json:"name"`
	Note  string  `json:"note,omitempty"`
	Count *int    `json:"count"`
	Score float64 `json:"score,omitzero"`
}

type Address struct {
	City string `json:"city"`
	Zip  string `json:"zip,omitempty"`
}

type Person struct {
	Name    string    `json:"name"`
	Home    Address   `json:"home"`
	Work    *Address  `json:"work,omitempty"`
	Friends []Address `json:"friends"`
	Born    time.Time `json:"born"`
	Prio    Priority  `json:"prio"`
	secret  int
	Skipped string `json:"-"`
}

type WithMap struct {
	Name string            `json:"name"`
	Meta map[string]string `json:"meta"`
}

type WithAny struct {
	Value any `json:"value"`
}

func mustFor[T any](t *testing.T) *schema.Schema {
	t.Helper()
	s, err := schema.For[T]()
	if err != nil {
		t.Fatalf("For: %v", err)
	}
	return s
}

func jsonEqual(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("schema\n got %s\nwant %s", got, want)
	}
}

func TestFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		get  func() (*schema.Schema, error)
		want string
	}{
		{"triage draft", schema.For[TriageDraft], `{
			"type":"object",
			"properties":{
				"title":{"type":"string","description":"a short issue title"},
				"summary":{"type":"string"},
				"labels":{"type":["null","array"],"items":{"type":"string"}}},
			"required":["title","summary","labels"],
			"additionalProperties":false}`},
		{"optional fields", schema.For[Optional], `{
			"type":"object",
			"properties":{
				"name":{"type":"string"},
				"note":{"type":"string"},
				"count":{"type":["null","integer"]},
				"score":{"type":"number"}},
			"required":["name"],
			"additionalProperties":false}`},
		{"nested, slices of structs, time, enum", schema.For[Person], `{
			"type":"object",
			"properties":{
				"name":{"type":"string"},
				"home":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"string"}},
					"required":["city"],"additionalProperties":false},
				"work":{"type":["null","object"],"properties":{"city":{"type":"string"},"zip":{"type":"string"}},
					"required":["city"],"additionalProperties":false},
				"friends":{"type":["null","array"],"items":{"type":"object",
					"properties":{"city":{"type":"string"},"zip":{"type":"string"}},
					"required":["city"],"additionalProperties":false}},
				"born":{"type":"string","format":"date-time"},
				"prio":{"type":"string","enum":["low","medium","high"]}},
			"required":["name","home","friends","born","prio"],
			"additionalProperties":false}`},
		{"map", schema.For[map[string]int], `{"type":"object","additionalProperties":{"type":"integer"}}`},
		{"any", schema.For[any], `true`},
		{"string root", schema.For[string], `{"type":"string"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, s.JSON(), tt.want)
			// MarshalJSON agrees with JSON.
			b, err := json.Marshal(s)
			if err != nil || string(b) != string(s.JSON()) {
				t.Errorf("MarshalJSON = %s, %v", b, err)
			}
		})
	}
}

func TestForDeterministicOrderAndCache(t *testing.T) {
	t.Parallel()
	a := mustFor[Person](t)
	b := mustFor[Person](t)
	if a != b {
		t.Error("For is not cached per type")
	}
	got := string(a.JSON())
	order := []string{`"name"`, `"home"`, `"work"`, `"friends"`, `"born"`, `"prio"`}
	last := -1
	for _, k := range order {
		i := strings.Index(got, k+":")
		if i < last {
			t.Fatalf("property %s out of struct order in %s", k, got)
		}
		last = i
	}
	// JSON returns a copy.
	j := a.JSON()
	j[0] = 'X'
	if a.JSON()[0] == 'X' {
		t.Error("JSON exposes internal bytes")
	}
}

func TestForUnsupported(t *testing.T) {
	t.Parallel()
	for name, get := range map[string]func() (*schema.Schema, error){
		"chan":        schema.For[chan int],
		"func field":  schema.For[struct{ F func() }],
		"int map key": schema.For[map[int]string],
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := get(); err == nil {
				t.Error("want error")
			}
		})
	}
}

func violations(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *schema.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	var out []string
	for _, v := range ve.Violations {
		out = append(out, v.String())
	}
	return out
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		s     *schema.Schema
		value string
		want  []string // prefixes of every violation, in path order
	}{
		{"valid draft", mustFor[TriageDraft](t), `{"title":"t","summary":"s","labels":["bug"]}`, nil},
		{"null slice is valid", mustFor[TriageDraft](t), `{"title":"t","summary":"s","labels":null}`, nil},
		{"missing required", mustFor[TriageDraft](t), `{"title":"t"}`, []string{
			"/labels: required property is missing",
			"/summary: required property is missing",
		}},
		{"wrong types", mustFor[TriageDraft](t), `{"title":1,"summary":"s","labels":["a","b",2]}`, []string{
			"/labels/2: expected string, got number",
			"/title: expected string, got number",
		}},
		{"extra property", mustFor[TriageDraft](t), `{"title":"t","summary":"s","labels":[],"x":1}`, []string{
			"/x: property is not allowed",
		}},
		{"root not object", mustFor[TriageDraft](t), `[1]`, []string{
			"(root): expected object, got array",
		}},
		{"invalid JSON", mustFor[TriageDraft](t), `{"title":`, []string{"(root): invalid JSON"}},
		{"trailing data", mustFor[TriageDraft](t), `{} {}`, []string{"(root): invalid JSON"}},
		{"nested", mustFor[Person](t), `{"name":"n","home":{"zip":3},"friends":[{"city":"a"},{"city":"b","x":true}],
			"born":"2026-01-02T03:04:05Z","prio":"urgent","work":{"city":1}}`, []string{
			"/friends/1/x: property is not allowed",
			"/home/city: required property is missing",
			"/home/zip: expected string, got number",
			"/prio: value must be one of",
			"/work/city: expected string, got number",
		}},
		{"date-time format", mustFor[Person](t), `{"name":"n","home":{"city":"c"},"friends":[],"born":"yesterday","prio":"low"}`,
			[]string{"/born: "}},
		{"optional may be absent, pointer null", mustFor[Optional](t), `{"name":"n","count":null}`, nil},
		{"pointer field may be absent", mustFor[Optional](t), `{"name":"n"}`, nil},
		{"escaped path", mustFor[map[string]int](t), `{"a/b~c":"x"}`, []string{"/a~1b~0c: expected integer, got string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := violations(t, tt.s.Validate(json.RawMessage(tt.value)))
			if len(got) != len(tt.want) {
				t.Fatalf("violations\n got %q\nwant %q", got, tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("violation %d = %q, want prefix %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestCheckHandWritten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"valid", `{"type":"object","properties":{"a":{"type":["string","null"]}},"required":["a"],"additionalProperties":false}`, nil},
		{"every violation", `{
			"type":"object",
			"properties":{
				"meta":{"type":"object","properties":{"k":{"type":"string"}},"required":["k"]},
				"opt":{"type":"string"},
				"both":{"allOf":[{"type":"string"}]},
				"neg":{"type":"string","not":{"const":"x"}},
				"cond":{"type":"string","if":{"const":"a"},"then":{"minLength":2},"else":{"maxLength":1}},
				"free":{},
				"dict":{"type":"object","additionalProperties":{"type":"string"}}
			},
			"required":["meta","both","neg","cond","free","dict"],
			"additionalProperties":false}`, []string{
			`/properties/opt: property must be listed in required`,
			`/properties/meta: additionalProperties must be false (it is missing)`,
			`/properties/both: no type`,
			`/properties/both: "allOf" is not supported`,
			`/properties/both/allOf/0:`, // nothing wrong inside, listed only if broken
			`/properties/neg: "not" is not supported`,
			`/properties/cond: "if" is not supported`,
			`/properties/cond: "then" is not supported`,
			`/properties/cond: "else" is not supported`,
			`/properties/free: no type`,
			`/properties/dict: additionalProperties must be false (a map`,
		}},
		{"non-object root", `{"type":"array","items":{"type":"string"}}`, []string{
			`(root): root must be an object`,
		}},
		{"anyOf root", `{"anyOf":[{"type":"object","properties":{},"additionalProperties":false},{"type":"null"}]}`, []string{
			`(root): root must be an object`,
		}},
		{"nullable root", `{"type":["object","null"],"properties":{},"additionalProperties":false}`, []string{
			`(root): root must be an object`,
		}},
		{"missing additionalProperties at root", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`, []string{
			`(root): additionalProperties must be false`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := schema.Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range schema.Check(s) {
				got = append(got, v.String())
			}
			want := slices.DeleteFunc(slices.Clone(tt.want), func(w string) bool { return strings.HasSuffix(w, "/0:") })
			for _, w := range want {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
					t.Errorf("missing violation %q in\n%s", w, strings.Join(got, "\n"))
				}
			}
			if len(got) != len(want) {
				t.Errorf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
			}
			// Strict fixes what it can; what is left is a *ProviderError.
			_, err = schema.Strict(s)
			if len(want) == 0 && err != nil {
				t.Errorf("Strict: %v", err)
			}
		})
	}
}

func TestStrict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		get      func() (*schema.Schema, error)
		wantErr  []string // violation prefixes; nil means Strict must pass Check
		wantJSON string
	}{
		{"triage draft", schema.For[TriageDraft], nil, `{
			"type":"object",
			"properties":{
				"title":{"type":"string","description":"a short issue title"},
				"summary":{"type":"string"},
				"labels":{"type":["null","array"],"items":{"type":"string"}}},
			"required":["title","summary","labels"],
			"additionalProperties":false}`},
		{"optional become nullable and required", schema.For[Optional], nil, `{
			"type":"object",
			"properties":{
				"name":{"type":"string"},
				"note":{"type":["string","null"]},
				"count":{"type":["null","integer"]},
				"score":{"type":["number","null"]}},
			"required":["name","note","count","score"],
			"additionalProperties":false}`},
		{"nested", schema.For[Person], nil, ""},
		{"map root", schema.For[map[string]string], []string{"(root): additionalProperties must be false"}, ""},
		{"any root", schema.For[any], []string{"(root): root must be an object", "(root): no type"}, ""},
		{"string root", schema.For[string], []string{"(root): root must be an object"}, ""},
		{"slice root", schema.For[[]TriageDraft], []string{"(root): root must be an object"}, ""},
		{"map field", schema.For[WithMap], []string{"/properties/meta: additionalProperties must be false"}, ""},
		{"any field", schema.For[WithAny], []string{"/properties/value: no type"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			full, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			before := string(full.JSON())
			strict, err := schema.Strict(full)
			if string(full.JSON()) != before {
				t.Error("Strict modified its input")
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Strict: %v", err)
				}
				if vs := schema.Check(strict); len(vs) > 0 {
					t.Errorf("Check(Strict) = %v", vs)
				}
				if tt.wantJSON != "" {
					jsonEqual(t, strict.JSON(), tt.wantJSON)
				}
				return
			}
			var pe *schema.ProviderError
			if !errors.As(err, &pe) {
				t.Fatalf("Strict error = %v, want *ProviderError", err)
			}
			if len(pe.Violations) != len(tt.wantErr) {
				t.Errorf("violations = %v, want %q", pe.Violations, tt.wantErr)
			}
			for i, w := range tt.wantErr {
				if i < len(pe.Violations) && !strings.HasPrefix(pe.Violations[i].String(), w) {
					t.Errorf("violation %d = %q, want prefix %q", i, pe.Violations[i], w)
				}
			}
		})
	}
}

func TestStrictHandWritten(t *testing.T) {
	t.Parallel()
	s, err := schema.Parse([]byte(`{"type":"object","properties":{
		"z":{"type":"string"},
		"a":{"$ref":"#/$defs/item"},
		"e":{"type":"string","enum":["x","y"]},
		"u":{"anyOf":[{"type":"string"},{"type":"integer"}]}},
		"$defs":{"item":{"type":"object","properties":{"v":{"type":"integer"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	strict, err := schema.Strict(s)
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, strict.JSON(), `{"type":"object","properties":{
		"z":{"type":["string","null"]},
		"a":{"anyOf":[{"$ref":"#/$defs/item"},{"type":"null"}]},
		"e":{"type":["string","null"],"enum":["x","y",null]},
		"u":{"anyOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}},
		"required":["z","a","e","u"],
		"additionalProperties":false,
		"$defs":{"item":{"type":"object","properties":{"v":{"type":["integer","null"]}},"required":["v"],"additionalProperties":false}}}`)
	// Hand-written property order is kept.
	if got := string(strict.JSON()); strings.Index(got, `"z"`) > strings.Index(got, `"a"`) {
		t.Errorf("property order lost: %s", got)
	}
	// The strict form validates what it describes.
	if err := strict.Validate(json.RawMessage(`{"z":null,"a":{"v":null},"e":null,"u":3}`)); err != nil {
		t.Error(err)
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{`{`, `{"type":12}`, `{"minLength":"x"}`} {
		if _, err := schema.Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%s): want error", doc)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, seed := range []string{
		`{"title":"t","summary":"s","labels":["a"]}`, `{}`, `null`, `[]`, `1e400`, `"x"`,
		`{"name":"n","home":{"city":1},"friends":[{"x":1}],"born":"2026-01-01T00:00:00Z","prio":"low"}`,
		`{"a":`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	schemas := []*schema.Schema{}
	for _, get := range []func() (*schema.Schema, error){
		schema.For[TriageDraft], schema.For[Person], schema.For[Optional], schema.For[map[string]int], schema.For[any],
	} {
		s, err := get()
		if err != nil {
			f.Fatal(err)
		}
		schemas = append(schemas, s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range schemas {
			err := s.Validate(data)
			if err == nil {
				continue
			}
			var ve *schema.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) == 0 {
				t.Fatalf("Validate(%q) = %v", data, err)
			}
		}
	})
}
