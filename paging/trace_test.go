package paging

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt traces")

// TestTraces runs the command scripts under testdata/. Each case is a
// command, a line "----", the expected output, and a blank line:
//
//	new blocks=8 block=4 slots=2 [cached=N] [nocache]
//	                                        a fresh allocator (cached: MaxCachedBlocks)
//	admit NAME prompt=0..10,7,7             tokens 0…9 then 7 7
//	probe prompt=SPEC
//	grow NAME N                             tokens past the prompt are 1000+position
//	trim NAME N
//	commit NAME [N]                         the first N tokens (default Len)
//	free NAME
//	stats
//	slots                                   every slot's state and blocks
//
// The output lists every KVOps call the command made, then its result.
// After every command the fake KV cells are checked against paging's view,
// as in the property test. `go test ./paging -run TestTraces -rewrite`
// regenerates the expected output.
func TestTraces(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no traces: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { runTrace(t, file) })
	}
}

type traceCase struct {
	comments []string
	cmd      string
	want     string
	line     int
}

func parseTrace(t *testing.T, file string) []traceCase {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []traceCase
	var cur traceCase
	state := 0 // 0: before command, 1: after command, 2: in output
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch state {
		case 0:
			switch {
			case strings.HasPrefix(line, "#"):
				cur.comments = append(cur.comments, line)
			case strings.TrimSpace(line) == "":
			default:
				cur.cmd, cur.line, state = line, n, 1
			}
		case 1:
			if line != "----" {
				t.Fatalf("%s:%d: want ---- after the command", file, n)
			}
			state, out = 2, nil
		case 2:
			if strings.TrimSpace(line) == "" {
				cur.want = strings.Join(out, "\n")
				cases = append(cases, cur)
				cur, state = traceCase{}, 0
				continue
			}
			out = append(out, line)
		}
	}
	if state == 2 {
		cur.want = strings.Join(out, "\n")
		cases = append(cases, cur)
	} else if state == 1 {
		t.Fatalf("%s: last command has no ----", file)
	}
	return cases
}

type tracer struct {
	t    *testing.T
	h    *harness
	log  strings.Builder
	seqs map[string]*tseq
}

func runTrace(t *testing.T, file string) {
	cases := parseTrace(t, file)
	tr := &tracer{t: t}
	var b strings.Builder
	for i, c := range cases {
		got := tr.run(c)
		for _, cm := range c.comments {
			b.WriteString(cm + "\n")
		}
		fmt.Fprintf(&b, "%s\n----\n%s\n", c.cmd, got)
		if i < len(cases)-1 {
			b.WriteString("\n")
		}
		if !*rewrite && got != c.want {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, c.line, c.cmd, got, c.want)
		}
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func parseTokens(t *testing.T, spec string) []int32 {
	var out []int32
	if spec == "" {
		return out
	}
	for _, part := range strings.Split(spec, ",") {
		if lo, hi, ok := strings.Cut(part, ".."); ok {
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				t.Fatalf("bad token range %q", part)
			}
			for v := a; v < b; v++ {
				out = append(out, int32(v))
			}
			continue
		}
		v, err := strconv.Atoi(part)
		if err != nil {
			t.Fatalf("bad token %q", part)
		}
		out = append(out, int32(v))
	}
	return out
}

func (tr *tracer) run(c traceCase) string {
	t := tr.t
	f := strings.Fields(c.cmd)
	kv := map[string]string{}
	var pos []string
	for _, w := range f[1:] {
		if k, v, ok := strings.Cut(w, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, w)
		}
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("line %d: bad number %q", c.line, s)
		}
		return n
	}
	seq := func() *tseq {
		if len(pos) == 0 {
			t.Fatalf("line %d: %s needs a sequence name", c.line, f[0])
		}
		q := tr.seqs[pos[0]]
		if q == nil {
			t.Fatalf("line %d: no running sequence %q", c.line, pos[0])
		}
		return q
	}
	if f[0] != "new" && tr.h == nil {
		t.Fatalf("line %d: first command must be new", c.line)
	}
	tr.log.Reset()
	var res string
	switch f[0] {
	case "new":
		cfg := Config{BlockSize: atoi(kv["block"]), NumBlocks: atoi(kv["blocks"]), NumSlots: atoi(kv["slots"]), PrefixCache: true}
		if v, ok := kv["cached"]; ok {
			cfg.MaxCachedBlocks = atoi(v)
		}
		for _, p := range pos {
			if p == "nocache" {
				cfg.PrefixCache = false
			}
		}
		tr.h = newHarness(t, cfg, nil)
		tr.h.kv.log = &tr.log
		tr.seqs = map[string]*tseq{}
		res = "ok"
	case "admit":
		name := pos[0]
		prompt := parseTokens(t, kv["prompt"])
		id, cached, ok := tr.h.a.Admit(prompt)
		if !ok {
			res = "no slot"
			break
		}
		q := &tseq{id: id, toks: prompt, promptLen: len(prompt), committed: cached}
		tr.seqs[name] = q
		tr.h.run = append(tr.h.run, q)
		delete(tr.h.zombie, int(id))
		res = fmt.Sprintf("%s: seq=%d cached=%d", name, id, cached)
	case "probe":
		p := tr.h.a.Probe(parseTokens(t, kv["prompt"]))
		res = fmt.Sprintf("cached=%d slot=%v free=%d", p.Cached, p.Slot, p.FreeBlocks)
	case "grow":
		q, n := seq(), atoi(pos[1])
		l := tr.h.a.Len(q.id)
		if missing := tr.h.a.Grow(q.id, n); missing > 0 {
			res = fmt.Sprintf("missing=%d", missing)
			break
		}
		for len(q.toks) < l+n {
			q.toks = append(q.toks, int32(1000+len(q.toks)))
		}
		pc := prefixContents(q.toks[:l+n])
		for p := l; p < l+n; p++ {
			if err := tr.h.kv.decode(int32(q.id), int32(p), pc[p]); err != nil {
				t.Fatalf("line %d: %v", c.line, err)
			}
		}
		res = fmt.Sprintf("len=%d", l+n)
	case "trim":
		q := seq()
		kept := tr.h.a.Trim(q.id, atoi(pos[1]))
		q.toks = q.toks[:max(kept, q.promptLen)]
		q.committed = min(q.committed, kept)
		res = fmt.Sprintf("kept=%d", kept)
	case "commit":
		q := seq()
		n := tr.h.a.Len(q.id)
		if len(pos) > 1 {
			n = atoi(pos[1])
		}
		tr.h.a.Commit(q.id, q.toks[:n])
		q.committed = max(q.committed, n)
		res = fmt.Sprintf("committed=%d", n)
	case "free":
		q := seq()
		tr.h.zombie[int(q.id)] = append([]int32(nil), q.toks[:tr.h.a.Len(q.id)]...)
		tr.h.a.Free(q.id)
		delete(tr.seqs, pos[0])
		for i, r := range tr.h.run {
			if r == q {
				tr.h.run = append(tr.h.run[:i], tr.h.run[i+1:]...)
				break
			}
		}
		res = "freed"
	case "stats":
		s := tr.h.a.Stats()
		res = fmt.Sprintf("total=%d used=%d cached=%d free=%d slots=%d running=%d zombies=%d queries=%d hits=%d evictions=%d",
			s.Total, s.Used, s.Cached, s.Free, s.Slots, s.Running, s.Zombies, s.PrefixQueries, s.PrefixHits, s.Evictions)
	case "slots":
		res = tr.slots()
	default:
		t.Fatalf("line %d: unknown command %q", c.line, f[0])
	}
	tr.h.check()
	return tr.log.String() + res
}

func (tr *tracer) slots() string {
	a := tr.h.a
	names := map[SeqID]string{}
	for n, q := range tr.seqs {
		names[q.id] = n
	}
	var b strings.Builder
	for z := range a.slots {
		sl := &a.slots[z]
		if z > 0 {
			b.WriteString("\n")
		}
		switch sl.state {
		case slotFree:
			fmt.Fprintf(&b, "slot %d: free", z)
		case slotRunning:
			fmt.Fprintf(&b, "slot %d: running %s len=%d blocks=%v", z, names[SeqID(z)], sl.n, sl.table)
		case slotZombie:
			fmt.Fprintf(&b, "slot %d: zombie holds", z)
			for i, blk := range sl.table {
				if blk >= 0 {
					fmt.Fprintf(&b, " %d@%d", blk, i)
				}
			}
		}
	}
	fmt.Fprintf(&b, "\nlru:")
	for blk := a.lruHead; blk >= 0; blk = a.next[blk] {
		fmt.Fprintf(&b, " %d", blk)
	}
	return b.String()
}
