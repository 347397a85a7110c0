package openai

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spigot-llm/spigot/engine"
	"github.com/spigot-llm/spigot/engine/sample"
)

// Error is an API error: the HTTP status and the fields of OpenAI's error
// object, {"error":{"message","type","param","code"}}. Empty Param and
// Code are sent as null.
type Error struct {
	Status  int
	Message string
	Type    string // invalid_request_error, rate_limit_error, server_error …
	Param   string // the request field at fault, if any
	Code    string // a machine-readable code, such as model_not_found
	// RetryAfter, when positive, is sent as the Retry-After header (in
	// seconds).
	RetryAfter int
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Error types, as OpenAI names them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// StatusClientClosed is the status recorded (never seen by anyone) for a
// request whose client went away: nginx's 499.
const StatusClientClosed = 499

// BadRequest returns a 400 invalid_request_error about param (which may be
// empty).
func BadRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// ModelNotFound returns the 404 error for a request naming a model that is
// not served.
func ModelNotFound(model string) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist; GET /v1/models lists the models served", model)}
}

// Unauthorized returns the 401 error for a missing or wrong API key.
func Unauthorized(missing bool) *Error {
	msg := "incorrect API key provided"
	if missing {
		msg = "no API key provided: send it as the header \"Authorization: Bearer KEY\""
	}
	return &Error{Status: http.StatusUnauthorized, Type: TypeInvalidRequest, Code: "invalid_api_key", Message: msg}
}

// MethodNotAllowed returns the 405 error for a route called with the wrong
// method.
func MethodNotAllowed(method, path, allow string) *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Type: TypeInvalidRequest, Code: "method_not_allowed",
		Message: fmt.Sprintf("%s %s is not allowed; use %s", method, path, allow)}
}

// NotFound returns the 404 error for an unknown path.
func NotFound(path string) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "not_found",
		Message: fmt.Sprintf("no such route: %s", path)}
}

// StreamNotFound returns the 404 error for a stream id that is not (or no
// longer) known: resumable streams are kept for window after their client
// went away (window <= 0: streams are not kept at all).
func StreamNotFound(id string, window time.Duration) *Error {
	why := "streams cannot be resumed on this server (--resume-window 0)"
	if window > 0 {
		why = fmt.Sprintf("it never existed, or it ended more than %v after its client went away", window)
	}
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "stream_not_found",
		Message: fmt.Sprintf("no stream %q: %s", id, why)}
}

// Unavailable returns a 503 server_error (the model is loading, or the
// server is shutting down).
func Unavailable(code, msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: code, Message: msg, RetryAfter: 1}
}

// ErrorFor maps any error to the API error sent for it. It is the one place
// where errors become HTTP statuses:
//
//   - *Error: itself;
//   - *sample.ParamError, engine.ErrInvalidRequest: 400;
//   - *http.MaxBytesError: 413;
//   - engine.ErrQueueFull: 429 with Retry-After;
//   - engine.ErrShutdown: 503;
//   - engine.ErrCanceled, context.Canceled: 499 (the client went away);
//   - anything else: 500.
func ErrorFor(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var pe *sample.ParamError
	if errors.As(err, &pe) {
		return BadRequest(pe.Field, "invalid %s: %s", pe.Field, pe.Reason)
	}
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &mb):
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("the request body is larger than %d bytes", mb.Limit)}
	case errors.Is(err, engine.ErrInvalidRequest):
		return BadRequest("", "%s", err.Error())
	case errors.Is(err, engine.ErrQueueFull):
		return &Error{Status: http.StatusTooManyRequests, Type: TypeRateLimit, Code: "queue_full", RetryAfter: 1,
			Message: "the server is busy: too many requests are waiting; retry later"}
	case errors.Is(err, engine.ErrShutdown):
		return Unavailable("shutting_down", "the server is shutting down")
	case errors.Is(err, engine.ErrCanceled), errors.Is(err, context.Canceled):
		return &Error{Status: StatusClientClosed, Type: TypeInvalidRequest, Code: "canceled", Message: "the request was canceled"}
	}
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: "internal_error", Message: err.Error()}
}

// WriteError sends err, mapped by [ErrorFor], as a JSON error response. Use
// it only before anything of the response was written; after that, send
// [AppendErrorEvent] in the stream.
func WriteError(w http.ResponseWriter, err error) *Error {
	e := ErrorFor(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	b := AppendError(make([]byte, 0, 256), e)
	w.Write(append(b, '\n'))
	return e
}

// AppendError appends e's JSON, {"error":{...}}, to dst.
func AppendError(dst []byte, e *Error) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendString(dst, e.Message)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type)
	dst = append(dst, `,"param":`...)
	dst = appendStringOrNull(dst, e.Param)
	dst = append(dst, `,"code":`...)
	dst = appendStringOrNull(dst, e.Code)
	return append(dst, "}}"...)
}

func appendStringOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}
