package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/moemesh/moemesh/proto"
)

// apiError is an error a client sees: an HTTP status and OpenAI's error object.
type apiError struct {
	Status     int
	Type       string // OpenAI's error type
	Code       string // OpenAI's error code, "" for null
	Param      string // the offending request field, "" for null
	Message    string
	RetryAfter time.Duration // > 0: a Retry-After header (429, 503)
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
}

func errUnauthorized(msg string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key", Message: msg}
}

func errForbidden(model, tenantID string) *apiError {
	return &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "model_not_allowed", Param: "model",
		Message: fmt.Sprintf("tenant %s may not use model %q", tenantID, model)}
}

func errNotFound(model string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
		Message: fmt.Sprintf("the model %q does not exist", model)}
}

func errTooLong(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "context_length_exceeded",
		Param: "messages", Message: fmt.Sprintf(format, args...)}
}

func errRate(retry time.Duration, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limit_exceeded",
		Message: fmt.Sprintf(format, args...), RetryAfter: retry}
}

func errUnavailable(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "service_unavailable",
		Message: fmt.Sprintf(format, args...), RetryAfter: time.Second}
}

func errTimeout(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "timeout", Message: fmt.Sprintf(format, args...)}
}

func errInternal(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprintf(format, args...)}
}

// fromMesh maps an error of the NATS side (a mesh.Request failure, a router's service
// error, or an error event) to what the client sees. Codes follow HTTP numbers (proto
// Code), so most map to themselves; retryable router faults become 503 because the
// client's retry may reach another router.
func fromMesh(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errTimeout("the request's deadline passed: %v", err)
	}
	msg := err.Error()
	var pe *proto.Error
	if errors.As(err, &pe) {
		msg = pe.Msg
	}
	switch proto.CodeOf(err) {
	case proto.CodeBadRequest:
		return badRequest("", "router rejected the request: %s", msg)
	case proto.CodeTooLarge:
		return errTooLong("%s", msg)
	case proto.CodeTooMany:
		return errRate(time.Second, "the router's queue for this tenant is full: %s", msg)
	case proto.CodeUnavailable, proto.CodeNotFound, proto.CodeOutOfMemory:
		return errUnavailable("no router can take the request now: %s", msg)
	case proto.CodeDeadline:
		return errTimeout("deadline exceeded: %s", msg)
	case proto.CodeVersion:
		return errInternal("gateway and router speak different protocol versions: %s", msg)
	}
	return errInternal("%s", msg)
}

// errorBody is OpenAI's error object.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) body() errorBody {
	d := errorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		d.Param = &e.Param
	}
	if e.Code != "" {
		d.Code = &e.Code
	}
	return errorBody{Error: d}
}

// writeError writes e as the whole response.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	writeJSON(w, e.Status, e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client is gone
}
