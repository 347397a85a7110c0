// Package wsapi is Spigot's WebSocket protocol (GET /v1/ws), as both
// spigot serve and spigot gateway speak it: JSON text messages both ways,
// several generations on one socket, each under an id the client picks.
// The requests are the HTTP endpoints' bodies; the events are those of
// the stream behind SSE and gRPC, so a stream started on a socket can be
// resumed on another, over SSE or over gRPC, and the other way round.
//
// Client to server:
//
//	{"type":"chat","id":"a","request":{…a /v1/chat/completions body…}}
//	{"type":"completion","id":"b","request":{…a /v1/completions body…}}
//	{"type":"cancel","id":"a"}
//	{"type":"resume","id":"c","stream":"chatcmpl-…","after":17}
//	{"type":"ping"}
//
// Server to client (seq is the stream's event number, as in SSE ids):
//
//	{"type":"start","id":"a","stream":"chatcmpl-…","model":"…","created":1700000000}
//	{"type":"delta","id":"a","seq":5,"index":0,"text":"Once","logprobs":{…}}   (logprobs when asked for)
//	{"type":"done","id":"a","seq":90,"finish_reason":"length","finish_reasons":["length"],"usage":{…}}
//	{"type":"error","id":"a","seq":90,"status":499,"error":{"message","type","param","code"}}
//	{"type":"pong"}
//
// Every generation ends with exactly one done or error. An error about a
// message (malformed, unknown type, a request the API refuses) leaves the
// socket open; its id is the message's, if it had one, and it has no seq.
package wsapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/spigot-llm/spigot/api/openai"
)

// Limits of one socket.
const (
	MaxGenerations = 128 // generations running on one socket at once
	MaxClientID    = 256 // bytes of a client-chosen id
)

// Subprotocols: a socket offers Protocol, and a browser, which cannot
// send an Authorization header, may add KeyPrefix+KEY (as OpenAI's
// Realtime API does with its keys).
const (
	Protocol  = "spigot.v1"
	KeyPrefix = "spigot-key."
)

// Key returns the API key a WebSocket handshake offers as a subprotocol,
// or "".
func Key(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(p), KeyPrefix); ok {
				return k
			}
		}
	}
	return ""
}

// Message is any message a client sends.
type Message struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Request json.RawMessage `json:"request"` // chat, completion
	Stream  string          `json:"stream"`  // resume
	After   uint64          `json:"after"`   // resume
}

// ParseMessage decodes a client's message and checks its type and id.
// Its errors are 400 *openai.Errors; the message returned with one
// carries the id to answer under, if the message had a usable one.
func ParseMessage(data []byte) (Message, error) {
	var msg Message
	if err := json.Unmarshal(data, &msg); err != nil {
		return Message{}, openai.BadRequest("", "the message is not a JSON object of this API: %v", err)
	}
	switch msg.Type {
	case "ping":
		return msg, nil
	case "chat", "completion", "cancel", "resume":
	default:
		if len(msg.ID) > MaxClientID {
			msg.ID = ""
		}
		return msg, openai.BadRequest("type", "message type %q is not one of chat, completion, cancel, resume, ping", msg.Type)
	}
	if msg.ID == "" || len(msg.ID) > MaxClientID {
		msg.ID = ""
		return msg, openai.BadRequest("id", "a %s message needs an id: a string of 1 to %d bytes that names the generation on this socket", msg.Type, MaxClientID)
	}
	return msg, nil
}

// Pong is the answer to a ping.
var Pong = []byte(`{"type":"pong"}`)

// AppendStart appends the start message of generation id, stream's.
func AppendStart(dst []byte, id, stream, model string, created int64) []byte {
	dst = append(dst, `{"type":"start","id":`...)
	dst = openai.AppendString(dst, id)
	dst = append(dst, `,"stream":`...)
	dst = openai.AppendString(dst, stream)
	dst = append(dst, `,"model":`...)
	dst = openai.AppendString(dst, model)
	dst = append(dst, `,"created":`...)
	dst = strconv.AppendInt(dst, created, 10)
	return append(dst, '}')
}

// AppendDelta appends a delta message up to its text, open: the caller
// may add `,"logprobs":…`, then closes it with '}'.
func AppendDelta(dst []byte, id string, seq uint64, index int, text string) []byte {
	dst = append(dst, `{"type":"delta","id":`...)
	dst = openai.AppendString(dst, id)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	dst = append(dst, `,"text":`...)
	return openai.AppendString(dst, text)
}

// AppendDone appends the done message: every choice's finish reason (at
// least one) and, if not nil, the usage.
func AppendDone(dst []byte, id string, seq uint64, finishReasons []string, usage *openai.Usage) []byte {
	dst = append(dst, `{"type":"done","id":`...)
	dst = openai.AppendString(dst, id)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"finish_reason":`...)
	dst = openai.AppendString(dst, finishReasons[0])
	dst = append(dst, `,"finish_reasons":[`...)
	for i, r := range finishReasons {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = openai.AppendString(dst, r)
	}
	dst = append(dst, ']')
	if usage != nil {
		dst = append(dst, `,"usage":`...)
		dst = openai.AppendUsageObject(dst, *usage)
	}
	return append(dst, '}')
}

// AppendError appends an error message; id "" and seq 0 are left out
// (seq 0: an error about a message rather than a stream's end).
func AppendError(dst []byte, id string, seq uint64, e *openai.Error) []byte {
	dst = append(dst, `{"type":"error"`...)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = openai.AppendString(dst, id)
	}
	if seq > 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, seq, 10)
	}
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(e.Status), 10)
	dst = append(dst, ',')
	inner := openai.AppendError(nil, e) // {"error":{…}}
	return append(dst, bytes.TrimPrefix(inner, []byte("{"))...)
}
