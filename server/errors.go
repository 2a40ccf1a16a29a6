package server

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"
)

// apiError is an error answer in OpenAI's shape:
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int
	Message string
	Type    string // invalid_request_error, authentication_error, ...
	Param   string // the offending field, "" when none
	Code    string // machine-readable, "" when none
}

func (e *apiError) Error() string { return e.Message }

// Error types, as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuth           = "authentication_error"
	typeNotFound       = "not_found_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeUnavailable    = "service_unavailable_error"
	typeTimeout        = "timeout_error"
)

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: fasthttp.StatusBadRequest, Type: typeInvalidRequest, Param: param,
		Message: fmt.Sprintf(format, args...)}
}

func invalidValue(param, format string, args ...any) *apiError {
	e := badRequest(param, format, args...)
	e.Code = "invalid_value"
	return e
}

// unsupportedParam is a 400 for a field this server knows and cannot
// honour (code unsupported_parameter).
func unsupportedParam(param, format string, args ...any) *apiError {
	e := badRequest(param, format, args...)
	e.Code = "unsupported_parameter"
	return e
}

func wrongType(param, want string) *apiError {
	e := badRequest(param, "'%s' must be %s", param, want)
	e.Code = "invalid_type"
	return e
}

// body is the JSON of the error object.
func (e *apiError) body() []byte {
	type obj struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	o := obj{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		o.Param = &e.Param
	}
	if e.Code != "" {
		o.Code = &e.Code
	}
	b, _ := json.Marshal(struct {
		Error obj `json:"error"`
	}{o})
	return b
}

func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.Reset()
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	if e.Status == fasthttp.StatusTooManyRequests {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	if e.Status == fasthttp.StatusUnauthorized {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="specd"`)
	}
	ctx.SetBody(e.body())
}

// retryAfterSeconds is the Retry-After of a 429: the queue drains at the
// speed of generation, so a second is a fair first wait.
const retryAfterSeconds = 1
