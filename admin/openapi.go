package admin

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"go.yaml.in/yaml/v4"
)

// openapiYAML is the API's OpenAPI 3.1 document; the handler serves it at
// /api/v1/openapi.yaml and, as JSON, at /api/v1/openapi.json.
//
//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPIYAML returns the API's OpenAPI 3.1 document, in YAML.
func OpenAPIYAML() []byte { return append([]byte(nil), openapiYAML...) }

// openAPIToJSON converts the document to JSON.
func openAPIToJSON() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openapiYAML, &doc); err != nil {
		return nil, fmt.Errorf("admin: the embedded OpenAPI document: %w", err)
	}
	return json.Marshal(doc)
}

func (h *handler) openAPIJSON(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	return json.RawMessage(h.openapiJSON), nil
}

func (h *handler) openAPIYAML(r *http.Request) (any, error) {
	if _, err := readQuery(r); err != nil {
		return nil, err
	}
	return rawBody{contentType: "application/yaml", body: openapiYAML}, nil
}

// rawBody is an answer that is not JSON.
type rawBody struct {
	contentType string
	body        []byte
}
