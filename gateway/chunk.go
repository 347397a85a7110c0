package gateway

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/spigot-llm/spigot/api/openai"
)

// chunk is what the gateway reads of an OpenAI stream chunk. It is read
// for every event relayed, so parseChunk fills it in one pass over the
// bytes, reusing its slices, instead of through encoding/json's
// reflection; what it reads is what json.Unmarshal would give the
// equivalent struct (FuzzParseChunk checks), with numbers that are not
// integers or out of range taken leniently rather than refused.
type chunk struct {
	ID      json.RawMessage // as sent; a view of the data
	Choices []choice
	Usage   *openai.Usage
	Error   *chunkError
}

// choice is one element of a chunk's choices. Strings are views of the
// data parsed (copies when they held escapes).
type choice struct {
	Index          int
	Delta          bool   // a delta object came (chat)
	Role           string // delta.role
	Content        string // delta.content
	HasContent     bool
	Text           string // text (completions)
	HasText        bool
	FinishReason   string
	HasFinish      bool // finish_reason is a string, not null or absent
	TokenIDs       []int64
	HasTokenIDs    bool
	PromptTokenIDs []int64 // nil when absent; a fresh slice
	Logprobs       json.RawMessage
}

// text is the choice's new text: delta.content, else text.
func (c *choice) text() string {
	if c.Delta && c.HasContent {
		return c.Content
	}
	if c.HasText {
		return c.Text
	}
	return ""
}

type chunkError struct {
	Message string
	Type    string
	Code    string // a string code; others are dropped
}

// parseChunk reads data, an SSE event's data, into c, reusing c's
// slices. It reports false when data is not a JSON object. Strings in c
// may refer to data: copy what outlives it.
func parseChunk(data []byte, c *chunk) bool {
	if len(data) == 0 || !gjson.Valid(view(data)) {
		return false
	}
	root := gjson.Parse(view(data))
	if !root.IsObject() {
		return false
	}
	choices := c.Choices[:0]
	*c = chunk{}
	ok := true
	root.ForEach(func(k, v gjson.Result) bool {
		switch {
		case match(k.Str, "id"):
			c.ID = json.RawMessage(v.Raw)
		case match(k.Str, "choices"):
			choices = choices[:0]
			if v.Type == gjson.Null {
				break
			}
			if !v.IsArray() {
				ok = false
				return false
			}
			v.ForEach(func(_, cv gjson.Result) bool {
				choices = append(choices, choice{TokenIDs: reuseIDs(choices)})
				if cv.Type == gjson.Null {
					return true
				}
				if !cv.IsObject() || !parseChoice(cv, &choices[len(choices)-1]) {
					ok = false
				}
				return ok
			})
		case match(k.Str, "usage"):
			c.Usage = nil
			if v.Type == gjson.Null {
				break
			}
			if !v.IsObject() {
				ok = false
				return false
			}
			var u openai.Usage
			v.ForEach(func(k, v gjson.Result) bool {
				var n *int
				switch {
				case match(k.Str, "prompt_tokens"):
					n = &u.PromptTokens
				case match(k.Str, "completion_tokens"):
					n = &u.CompletionTokens
				case match(k.Str, "total_tokens"):
					n = &u.TotalTokens
				default:
					return true
				}
				if v.Type != gjson.Null {
					if v.Type != gjson.Number {
						ok = false
					}
					*n = int(v.Int())
				}
				return ok
			})
			c.Usage = &u
		case match(k.Str, "error"):
			c.Error = nil
			if v.Type == gjson.Null {
				break
			}
			if !v.IsObject() {
				ok = false
				return false
			}
			e := &chunkError{}
			v.ForEach(func(k, v gjson.Result) bool {
				switch {
				case match(k.Str, "message"):
					ok = str(v, &e.Message)
				case match(k.Str, "type"):
					ok = str(v, &e.Type)
				case match(k.Str, "code"):
					e.Code = ""
					if v.Type == gjson.String {
						e.Code = validUTF8(v.Str)
					}
				}
				return ok
			})
			e.Message, e.Type, e.Code = strings.Clone(e.Message), strings.Clone(e.Type), strings.Clone(e.Code)
			c.Error = e
		}
		return ok
	})
	c.Choices = choices
	return ok
}

// reuseIDs returns the token-id slice of the element append will reuse
// next, emptied, so that ids are parsed without allocating.
func reuseIDs(cs []choice) []int64 {
	if len(cs) < cap(cs) {
		return cs[: len(cs)+1 : cap(cs)][len(cs)].TokenIDs[:0]
	}
	return nil
}

// parseChoice reads one element of choices; false for a field of the
// wrong type.
func parseChoice(v gjson.Result, ch *choice) bool {
	ok := true
	v.ForEach(func(k, v gjson.Result) bool {
		switch {
		case match(k.Str, "index"):
			if v.Type != gjson.Null {
				ok = v.Type == gjson.Number
				ch.Index = int(v.Int())
			}
		case match(k.Str, "delta"):
			if v.Type == gjson.Null {
				ch.Delta, ch.Role, ch.Content, ch.HasContent = false, "", "", false
				break
			}
			if !v.IsObject() {
				ok = false
				break
			}
			ch.Delta = true
			v.ForEach(func(k, v gjson.Result) bool {
				switch {
				case match(k.Str, "role"):
					ok = str(v, &ch.Role)
				case match(k.Str, "content"):
					ch.HasContent = v.Type != gjson.Null
					ok = str(v, &ch.Content) && (ch.HasContent || empty(&ch.Content))
				}
				return ok
			})
		case match(k.Str, "text"):
			ch.HasText = v.Type != gjson.Null
			ok = str(v, &ch.Text) && (ch.HasText || empty(&ch.Text))
		case match(k.Str, "finish_reason"):
			ch.HasFinish = v.Type != gjson.Null
			ok = str(v, &ch.FinishReason) && (ch.HasFinish || empty(&ch.FinishReason))
		case match(k.Str, "logprobs"):
			ch.Logprobs = json.RawMessage(v.Raw)
		case match(k.Str, "token_ids"):
			ch.TokenIDs, ch.HasTokenIDs = ch.TokenIDs[:0], v.Type != gjson.Null
			ok = ids(v, &ch.TokenIDs)
		case match(k.Str, "prompt_token_ids"):
			ch.PromptTokenIDs = nil
			ok = ids(v, &ch.PromptTokenIDs)
			if ok && v.Type != gjson.Null && ch.PromptTokenIDs == nil {
				ch.PromptTokenIDs = []int64{}
			}
		}
		return ok
	})
	return ok
}

// ids appends an array of integers to dst: null leaves it; anything but
// an array of numbers is false.
func ids(v gjson.Result, dst *[]int64) bool {
	if v.Type == gjson.Null {
		return true
	}
	if !v.IsArray() {
		return false
	}
	ok := true
	v.ForEach(func(_, n gjson.Result) bool {
		if n.Type != gjson.Number {
			ok = false
			return false
		}
		*dst = append(*dst, n.Int())
		return true
	})
	return ok
}

// empty empties a string field that a null cleared; it returns true.
func empty(s *string) bool {
	*s = ""
	return true
}

// str sets *dst from a string value (null leaves it); false for another
// type.
func str(v gjson.Result, dst *string) bool {
	switch v.Type {
	case gjson.Null:
		return true
	case gjson.String:
		*dst = validUTF8(v.Str)
		return true
	}
	return false
}

// match reports whether an object key names field, as encoding/json
// matches them: exactly, or else without regard to case.
func match(key, field string) bool { return key == field || strings.EqualFold(key, field) }

// validUTF8 replaces each byte of s that is not valid UTF-8 with U+FFFD,
// as encoding/json does in the strings it decodes.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// view is b as a string, without a copy: valid while b is unchanged.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
