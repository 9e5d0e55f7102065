package proto

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is an error code that travels on the wire (header HeaderErrorCode). Codes follow
// HTTP status numbers so that operators read them at a glance.
type Code int

// Codes; the one table of them. Retryable says whether another attempt (on another
// replica) may succeed.
const (
	CodeBadRequest  Code = 400 // the message is malformed or inconsistent
	CodeNotFound    Code = 404 // the card does not hold (a ready replica of) an expert asked for
	CodeVersion     Code = 409 // protocol version not spoken by the receiver
	CodeTooLarge    Code = 413 // the batch (or a prompt) exceeds what the receiver accepts
	CodeTooMany     Code = 429 // the tenant's queue or quota is full; later may succeed
	CodeInternal    Code = 500 // a bug or device fault on the receiver
	CodeUnavailable Code = 503 // draining, overloaded or shutting down
	CodeDeadline    Code = 504 // the request's deadline passed before it ran
	CodeOutOfMemory Code = 507 // the card could not allocate
)

var codeNames = map[Code]string{
	CodeBadRequest:  "bad request",
	CodeNotFound:    "expert not on card",
	CodeVersion:     "protocol version",
	CodeTooLarge:    "too large",
	CodeTooMany:     "too many requests",
	CodeInternal:    "internal",
	CodeUnavailable: "unavailable",
	CodeDeadline:    "deadline exceeded",
	CodeOutOfMemory: "out of memory",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "code " + strconv.Itoa(int(c))
}

// Retryable: the same request may succeed on another replica or a bit later.
func (c Code) Retryable() bool {
	switch c {
	case CodeNotFound, CodeUnavailable, CodeOutOfMemory, CodeInternal:
		return true
	}
	return false
}

// Error is a service error as received from (or sent to) the wire.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, int(e.Code), e.Msg) }

// Is matches sentinel *Error values by code, so errors.Is(err, ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Code == e.Code
}

// Errorf builds a wire error.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is.
var (
	ErrBadRequest  = &Error{Code: CodeBadRequest}
	ErrNotFound    = &Error{Code: CodeNotFound}
	ErrUnavailable = &Error{Code: CodeUnavailable}
	ErrDeadline    = &Error{Code: CodeDeadline}
	ErrTooMany     = &Error{Code: CodeTooMany}

	// ErrDecode: a body could not be decoded (malformed, truncated, inconsistent).
	ErrDecode = errors.New("proto: decode")
	// ErrBadID: a card or daemon id is not a subject token.
	ErrBadID = errors.New("proto: bad id")
)

// CodeOf extracts the wire code of err: an *Error's code, CodeBadRequest for ErrDecode,
// else CodeInternal.
func CodeOf(err error) Code {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	if errors.Is(err, ErrDecode) {
		return CodeBadRequest
	}
	return CodeInternal
}

// ParseError rebuilds an *Error from the two header values; ok is false when code is empty.
func ParseError(code, desc string) (err *Error, ok bool) {
	if code == "" {
		return nil, false
	}
	n, convErr := strconv.Atoi(code)
	if convErr != nil {
		return &Error{Code: CodeInternal, Msg: "unparseable error code " + strconv.Quote(code) + ": " + desc}, true
	}
	return &Error{Code: Code(n), Msg: desc}, true
}
