package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkStreamTokens measures the server's cost per streamed token: one
// SSE stream of 500 tokens from the fake (no delay) read to the end.
// go test -run XXX -bench StreamTokens -benchtime 20x ./server/
func BenchmarkStreamTokens(b *testing.B) {
	_, url := startServer(b, Config{}, newFake())
	body := `{"prompt":"a","max_tokens":500,"ignore_eos":true,"temperature":0,"stream":true}`
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n < 500*100 {
			b.Fatalf("short stream: %d bytes", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/token")
}
