package spigotpb

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spigot-llm/spigot/api/openai"
	spigotv1 "github.com/spigot-llm/spigot/api/spigotpb/spigot/v1"
)

// This file puts the gRPC API in the OpenAI API's terms, for every server
// of it (spigot serve, spigot gateway): a request becomes the OpenAI
// request it means, and an OpenAI error the status it is.

// OpenAIRequest returns the OpenAI request a GenerateRequest means: a
// *openai.CompletionRequest (text or tokens) or a *openai.ChatRequest
// (messages), always streamed. Delivery options go in stream_options:
// pacing, and cancel_on_disconnect for a request not resumable. Only what
// the OpenAI request cannot express is checked here; the rest is the
// OpenAI API's validation.
func OpenAIRequest(req *spigotv1.GenerateRequest) (openai.Kind, any, error) {
	p := openai.Params{
		Model: req.GetModel(), Stream: true, Temperature: req.Temperature, TopP: req.TopP, MinP: req.MinP,
		PresencePenalty: req.PresencePenalty, FrequencyPenalty: req.FrequencyPenalty, RepetitionPenalty: req.RepetitionPenalty,
		Seed: req.Seed, IgnoreEOS: req.GetIgnoreEos(), Priority: int(req.GetPriority()),
		StreamOptions: &openai.StreamOptions{PaceTokensPerSecond: req.PaceTokensPerSecond, MinIntervalMS: req.MinIntervalMs,
			CancelOnDisconnect: !req.GetResumable()},
	}
	if req.MaxTokens != nil {
		n := int(*req.MaxTokens)
		p.MaxTokens = &n
	}
	if req.TopK != nil {
		k := int(*req.TopK)
		p.TopK = &k
	}
	if len(req.GetLogitBias()) > 0 {
		p.LogitBias = make(map[string]float64, len(req.GetLogitBias()))
		for id, b := range req.GetLogitBias() {
			p.LogitBias[strconv.Itoa(int(id))] = b
		}
	}
	if len(req.GetStop()) > 0 {
		p.Stop, _ = json.Marshal(req.GetStop())
	}
	switch pr := req.GetPrompt().(type) {
	case *spigotv1.GenerateRequest_Text, *spigotv1.GenerateRequest_Tokens:
		var raw []byte
		if t, ok := pr.(*spigotv1.GenerateRequest_Text); ok {
			raw, _ = json.Marshal(t.Text)
		} else {
			ids := pr.(*spigotv1.GenerateRequest_Tokens).Tokens.GetIds()
			if len(ids) == 0 {
				return 0, nil, openai.BadRequest("tokens", "tokens is empty")
			}
			raw, _ = json.Marshal(ids)
		}
		r := &openai.CompletionRequest{Params: p, Prompt: raw, Echo: req.GetEcho()}
		if req.GetLogprobs() {
			n := int(req.GetTopLogprobs())
			r.Logprobs = &n
		}
		return openai.Completion, r, nil
	case *spigotv1.GenerateRequest_Messages:
		if req.GetEcho() {
			return 0, nil, openai.BadRequest("echo", "echo is for completions (text or tokens), not messages")
		}
		r := &openai.ChatRequest{Params: p}
		for _, msg := range pr.Messages.GetMessages() {
			content, _ := json.Marshal(msg.GetContent())
			r.Messages = append(r.Messages, openai.Message{Role: msg.GetRole(), Content: content, Name: msg.GetName()})
		}
		lp := req.GetLogprobs()
		r.Logprobs = &lp
		if n := int(req.GetTopLogprobs()); n != 0 {
			r.TopLogprobs = &n
		}
		return openai.Chat, r, nil
	}
	return 0, nil, openai.BadRequest("prompt", "one of text, tokens or messages is required")
}

// Code is the gRPC code of an HTTP status from [openai.ErrorFor].
func Code(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusConflict:
		return codes.Aborted
	case http.StatusRequestedRangeNotSatisfiable:
		return codes.OutOfRange
	case openai.StatusClientClosed:
		return codes.Canceled
	}
	return codes.Internal
}

// Error returns err's code, message and the field at fault: the message
// names the field first when it does not already.
func Error(err error) (codes.Code, string, string) {
	e := openai.ErrorFor(err)
	msg := e.Message
	if e.Param != "" && !strings.Contains(msg, e.Param) {
		msg = e.Param + ": " + msg
	}
	return Code(e.Status), msg, e.Param
}

// Status returns the status a call ends with for err, with a
// google.rpc.BadRequest detail naming the field at fault, if any.
func Status(err error) error {
	code, msg, field := Error(err)
	st := status.New(code, msg)
	if field != "" {
		if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: field, Description: msg},
		}}); err == nil {
			st = d
		}
	}
	return st.Err()
}
