package openai

// AppendString appends s to dst as a JSON string, escaped as this package
// escapes every string it sends (see the encoders): the other wire formats
// (api/tgi, api/ollama) use it so that text is escaped the same way on
// every surface.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendLogprob appends a log probability as a JSON number; -Inf and NaN,
// which JSON cannot carry, become -9999.
func AppendLogprob(dst []byte, lp float32) []byte { return appendLogprob(dst, lp) }
