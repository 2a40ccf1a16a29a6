package server

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"specd/scheduler"
)

// observingBackend wraps any Backend and records, per submitted request,
// whether its context was cancelled before the scheduler's Done event
// arrived (a cancellation mid-generation) or it finished on its own.
type observingBackend struct {
	Backend
	mu   sync.Mutex
	seen map[string]*observed // by fmt.Sprint(prompt tokens)
}

type observed struct {
	done      chan struct{} // closed once the Done event went through
	cancelled bool          // ctx had ended when Done arrived
	finish    string
}

func (o *observingBackend) Submit(ctx context.Context, r scheduler.Request) (<-chan scheduler.Event, error) {
	in, err := o.Backend.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	ob := &observed{done: make(chan struct{})}
	o.mu.Lock()
	o.seen[fmt.Sprint(r.Prompt)] = ob
	o.mu.Unlock()
	out := make(chan scheduler.Event)
	go func() {
		defer close(out)
		for ev := range in {
			if ev.Done {
				ob.cancelled, ob.finish = ctx.Err() != nil, ev.FinishReason
				close(ob.done)
			}
			out <- ev
		}
	}()
	return out, nil
}

// TestConcurrentStreamsWithDisconnects: 64 streaming clients at once, a
// third of them hanging up at a random point. Every one that hung up before
// its stream ended must have its request cancelled in the backend (promptly),
// the others must get complete streams, and the server must stay up.
func TestConcurrentStreamsWithDisconnects(t *testing.T) {
	const clients = 64
	inner := newTestBackend(t)
	maxTokens := 150
	if f, ok := inner.(*fakeBackend); ok {
		f.tokenDelay = 3 * time.Millisecond // ≈0.5 s per stream: disconnects land mid-stream
	} else {
		// Real model: short streams keep the run to tens of seconds on a
		// small machine; clients that hang up after the end are allowed.
		maxTokens = 48
	}
	ob := &observingBackend{Backend: inner, seen: map[string]*observed{}}
	s, url := startServer(t, Config{}, ob)
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	type result struct {
		hungUp   bool
		complete bool // saw [DONE]
		err      error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hangUpAfter := -1
			if i%3 == 0 {
				hangUpAfter = 1 + rand.IntN(40)
			}
			body := fmt.Sprintf(`{"prompt":"client %03d","max_tokens":%d,"ignore_eos":true,"stream":true}`, i, maxTokens)
			resp, err := hc.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				results[i].err = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			sc := bufio.NewScanner(resp.Body)
			events := 0
			for sc.Scan() {
				line := sc.Text()
				if line == "data: [DONE]" {
					results[i].complete = true
				}
				if strings.HasPrefix(line, "data: ") {
					events++
				}
				if events == hangUpAfter {
					results[i].hungUp = true
					return // closing the body closes the connection
				}
			}
			if err := sc.Err(); err != nil {
				results[i].err = err
			}
		}()
	}
	wg.Wait()

	hungUp, cancelled := 0, 0
	for i, r := range results {
		if r.err != nil {
			t.Errorf("client %d: %v", i, r.err)
			continue
		}
		toks, _ := inner.Tokenize(fmt.Sprintf("client %03d", i), true)
		ob.mu.Lock()
		o := ob.seen[fmt.Sprint(toks)]
		ob.mu.Unlock()
		if o == nil {
			t.Errorf("client %d: request never reached the backend", i)
			continue
		}
		select {
		case <-o.done:
		case <-time.After(3 * time.Second):
			t.Errorf("client %d (hung up %v): backend request still running 3s later", i, r.hungUp)
			continue
		}
		switch {
		case r.hungUp:
			hungUp++
			if o.cancelled {
				cancelled++
			} else if _, fake := inner.(*fakeBackend); fake {
				t.Errorf("client %d hung up but its request finished (%s) uncancelled", i, o.finish)
			}
		case !r.complete:
			t.Errorf("client %d: stream ended without [DONE]", i)
		case o.cancelled:
			t.Errorf("client %d: complete stream, but its request was cancelled", i)
		}
	}
	t.Logf("%d clients hung up, %d requests cancelled mid-generation", hungUp, cancelled)
	if hungUp != (clients+2)/3 {
		t.Errorf("%d clients hung up, want %d", hungUp, (clients+2)/3)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.inFlight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.inFlight.Load(); n != 0 {
		t.Errorf("%d requests still in flight", n)
	}
	if res := do(t, "GET", url+"/health", ""); res.status != 200 {
		t.Errorf("server unhealthy after the storm: %d", res.status)
	}
	if res := do(t, "POST", url+"/v1/completions", `{"prompt":"after","max_tokens":2}`); res.status != 200 {
		t.Errorf("server not serving after the storm: %d", res.status)
	}
}

// TestDisconnectWhileWaitingFake: a client that hangs up before the first
// token (here: a non-streamed request) is noticed by the socket probe and
// its request cancelled, without any write to fail.
func TestDisconnectWhileWaitingFake(t *testing.T) {
	f := newFake()
	f.tokenDelay = 50 * time.Millisecond
	_, url := startServer(t, Config{}, f)
	for _, stream := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		body := fmt.Sprintf(`{"prompt":"slow","max_tokens":400,"ignore_eos":true,"stream":%v}`, stream)
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/completions", strings.NewReader(body))
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				// Streamed: headers arrive at once; hang up while waiting.
				time.Sleep(120 * time.Millisecond)
				resp.Body.Close()
			}
			errc <- err
		}()
		time.Sleep(120 * time.Millisecond)
		cancel()
		<-errc
		reqs := f.requests()
		fr := reqs[len(reqs)-1]
		select {
		case <-fr.done:
			if !fr.cancelled.Load() {
				t.Errorf("stream=%v: request finished uncancelled", stream)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("stream=%v: request not cancelled 2s after the client left", stream)
		}
	}
}
