package scheduler

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden traces in testdata/traces")

// TestGoldenTraces replays the scripts in testdata/traces on the fake
// engine, one step at a time, and compares the narrated plan with the
// golden text after "----". Commands:
//
//	config ctx=N block=N running=N batch=N kmax=N proposer=P preemption=M k=N
//	add NAME prompt=N max=N [prop=P] [k=N] [ignore_eos] [repeat]
//	step [N]    run N steps (default 1), printing each step's plan
//	run         step until nothing is left
//	cancel NAME
//
// A plan line shows each scheduled sequence as NAME[from:to)+k, with "*"
// when the step reads its logits.
func TestGoldenTraces(t *testing.T) {
	files, _ := filepath.Glob("testdata/traces/*.txt")
	if len(files) == 0 {
		t.Fatal("no traces")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			script, golden, _ := strings.Cut(string(raw), "----\n")
			got := replay(t, script)
			if *rewrite {
				if err := os.WriteFile(f, []byte(script+"----\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != golden {
				t.Fatalf("trace differs (run with -rewrite to accept):\n%s", diffLines(golden, got))
			}
		})
	}
}

func replay(t *testing.T, script string) string {
	var out strings.Builder
	var s *Scheduler
	names := map[uint64]string{}
	cancels := map[string]context.CancelFunc{}
	nstep := 0
	prompts := 0
	var notes strings.Builder
	doStep := func() {
		nstep++
		fmt.Fprintf(&out, "step %d:", nstep)
		s.drainInbox()
		s.step()
		defer func() { out.WriteString(notes.String()); notes.Reset() }()
		for _, it := range s.items {
			if it.q == nil {
				continue
			}
			mark := ""
			if it.logits {
				mark = "*"
			}
			fmt.Fprintf(&out, " %s[%d:%d)+%d%s", names[it.q.id], it.from, it.to, it.k, mark)
		}
		st := s.alloc.Stats()
		fmt.Fprintf(&out, "  | blocks used %d cached %d free %d\n", st.Used, st.Cached, st.Free)
	}
	sc := bufio.NewScanner(strings.NewReader(script))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		kv := map[string]string{}
		for _, a := range f[1:] {
			k, v, _ := strings.Cut(a, "=")
			kv[k] = v
		}
		num := func(k string, def int) int {
			if v, ok := kv[k]; ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return n
			}
			return def
		}
		switch f[0] {
		case "config":
			cfg := Config{CtxSize: num("ctx", 256), BlockSize: num("block", 8), MaxRunning: num("running", 4),
				MaxBatchTokens: num("batch", 64), KMax: num("kmax", 4), Proposer: kv["proposer"],
				Preemption: kv["preemption"], SpecK: num("k", 0)}
			var draft Model
			if cfg.Proposer == "draft" {
				draft = newFake(fakeVocabN, cfg.CtxSize+64, 77)
			}
			var err error
			s, err = New(cfg, newFake(fakeVocabN, cfg.CtxSize+64, 0), draft, fakeVocab{fakeVocabN}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s.trace = func(format string, args ...any) {
				msg := fmt.Sprintf(format, args...)
				for id, n := range names {
					msg = strings.Replace(msg, " "+strconv.FormatUint(id, 10)+" ", " "+n+" ", 1)
				}
				fmt.Fprintf(&notes, "  %s\n", msg)
			}
		case "add":
			prompts++
			n := num("prompt", 8)
			p := make([]int32, n)
			for i := range p {
				p[i] = int32(3 + (i*7+prompts*13)%(fakeVocabN-3))
				if _, ok := kv["repeat"]; ok {
					p[i] = int32(3 + i%5)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancels[f[1]] = cancel
			_, ignore := kv["ignore_eos"]
			r := Request{Prompt: p, MaxTokens: num("max", 4), IgnoreEOS: ignore,
				Speculative: Speculative{Proposer: kv["prop"], K: num("k", 0)}}
			if _, err := s.Submit(ctx, r); err != nil {
				fmt.Fprintf(&out, "add %s: %v\n", f[1], err)
				continue
			}
			names[s.nextID.Load()] = f[1]
		case "step":
			for i := 0; i < max(num("n", 1), 1); i++ {
				doStep()
			}
		case "run":
			for i := 0; i < 1000; i++ {
				s.drainInbox()
				if len(s.running) == 0 && len(s.waiting) == 0 {
					break
				}
				doStep()
			}
		case "cancel":
			cancels[f[1]]()
			fmt.Fprintf(&out, "cancel %s\n", f[1])
		default:
			t.Fatalf("unknown command %q", line)
		}
	}
	return out.String()
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, a, c)
		}
	}
	return b.String()
}
