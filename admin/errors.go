package admin

import (
	"errors"
	"fmt"
	"net/http"

	"agentflow/store"
)

// Error codes of the API's error answers. Each comes with one HTTP status.
const (
	CodeInvalidArgument    = "invalid_argument"    // 400: a field, query parameter or body is not valid
	CodeInvalidPageToken   = "invalid_page_token"  // 400: page_token is not one this API gave
	CodeUnauthenticated    = "unauthenticated"     // 401: the bearer token is missing or wrong
	CodeNotFound           = "not_found"           // 404: no such instance, agent, submission or route
	CodeMethodNotAllowed   = "method_not_allowed"  // 405
	CodeFailedPrecondition = "failed_precondition" // 409: the control does not apply (pause a finished instance)
	CodeAlreadyExists      = "already_exists"      // 409: create with an id that exists
	CodePayloadTooLarge    = "payload_too_large"   // 413
	CodeInternal           = "internal"            // 500
)

// Error is an error answer of the API: {"code": "...", "message": "..."}
// with its HTTP status. Client methods return it (as *Error) for every
// answer that is not a success.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%d %s): %s", e.Code, e.Status, http.StatusText(e.Status), e.Message)
}

func apiErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalidArg(format string, args ...any) *Error {
	return apiErr(http.StatusBadRequest, CodeInvalidArgument, format, args...)
}

// storeErr turns a store error into the API's answer: a missing row is
// 404, a control that does not apply 409, an invalid filter 400; what
// is left is the server's problem, 500, which the handler logs.
func storeErr(err error, what string) *Error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound):
		return apiErr(http.StatusNotFound, CodeNotFound, "%s not found", what)
	case errors.Is(err, store.ErrFinished), errors.Is(err, store.ErrNotPaused):
		return apiErr(http.StatusConflict, CodeFailedPrecondition, "%s", err)
	case errors.Is(err, store.ErrDuplicateID):
		return apiErr(http.StatusConflict, CodeAlreadyExists, "%s", err)
	case isInvalidFilter(err):
		return invalidArg("%s", err)
	}
	return nil
}
