package server

import (
	"context"
	"io"
	"testing"
)

// BenchmarkStream streams 100-token completions through the whole server
// (HTTP client included) and reports the cost per token.
func BenchmarkStream(b *testing.B) {
	fx := newFixture(b, fixtureOptions{parallel: 1})
	body := `{"prompt":"Once upon a time","max_tokens":100,"ignore_eos":true,"temperature":0,"stream":true}`
	b.ReportAllocs()
	for b.Loop() {
		resp := fx.stream(context.Background(), b, "/v1/completions", body)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/token")
}
