package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestShutdownFake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		grace     time.Duration
		maxTokens string
		wantLast  string // the stream's last event
	}{
		{"in-flight finish within grace", 3 * time.Second, "40", "[DONE]"},
		{"grace runs out", 200 * time.Millisecond, "400", `"code":"shutting_down"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.tokenDelay = 5 * time.Millisecond
			s, url := startServer(t, Config{ShutdownGrace: tc.grace}, f)
			resp, err := http.Post(url+"/v1/completions", "application/json",
				strings.NewReader(`{"prompt":"a","ignore_eos":true,"stream":true,"max_tokens":`+tc.maxTokens+`}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			events := make(chan []string, 1)
			go func() { events <- sseEvents(t, resp.Body) }()
			time.Sleep(50 * time.Millisecond)

			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			took := time.Since(start)
			if tc.grace < time.Second && took > tc.grace+time.Second {
				t.Errorf("Shutdown took %v with a grace of %v", took, tc.grace)
			}
			ev := <-events
			if last := ev[len(ev)-1]; !strings.Contains(last, tc.wantLast) {
				t.Errorf("last event %q, want %q", last, tc.wantLast)
			}
			if _, err := http.Get(url + "/health"); err == nil {
				t.Error("still accepting connections after Shutdown")
			}
			if s.inFlight.Load() != 0 {
				t.Errorf("%d in flight after Shutdown", s.inFlight.Load())
			}
		})
	}
}

func TestHealthWhileDraining(t *testing.T) {
	s, err := New(Config{}, newFake(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	s.draining.Store(true)
	if e := s.unavailable(); e == nil || e.Status != 503 || e.Code != "shutting_down" {
		t.Errorf("draining: %+v", e)
	}
}
