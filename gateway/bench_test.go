package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkStream measures what the gateway adds to a stream: a scripted
// upstream sends 256 chunks, each written and flushed on its own, read by
// a client directly and through the gateway. Compare the two sub-
// benchmarks' ns/op (per stream) and chunks/s.
func BenchmarkStream(b *testing.B) {
	const chunks = 256
	texts := make([]string, chunks)
	for i := range texts {
		texts[i] = fmt.Sprintf(" word%d", i)
	}
	up := newFake(b, func(w http.ResponseWriter, r *http.Request, body []byte) {
		sseChunks(w, true, "chatcmpl-bench", texts, "stop", 5)
	})
	gwy := newGW(b, fakeConfig(b, KindSpigot, "", nil, up))
	const body = `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`
	for _, tc := range []struct{ name, url string }{{"direct", up.ts.URL}, {"gateway", gwy.ts.URL}} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{}
			for b.Loop() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, tc.url+"/v1/chat/completions", strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				b.SetBytes(n)
			}
			b.ReportMetric(float64(chunks*b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}
