package engine

import (
	"math"
	"regexp"
	"strings"
	"testing"
)

// byteTokens maps each byte to a token whose piece is exactly that byte.
func byteTokens(t testing.TB, v *Vocab) map[byte]int32 {
	t.Helper()
	m := map[byte]int32{}
	for tok := range int32(v.NTokens()) {
		if p := v.AppendPiece(nil, tok, false); len(p) == 1 {
			if _, ok := m[p[0]]; !ok {
				m[p[0]] = tok
			}
		}
	}
	return m
}

// feed accepts s byte by byte and reports whether every byte was allowed.
func feed(t testing.TB, g *Grammar, bt map[byte]int32, s string) bool {
	t.Helper()
	for i := range len(s) {
		tok, ok := bt[s[i]]
		if !ok {
			t.Fatalf("no byte token for %q", s[i])
		}
		if !g.Allowed(tok) {
			if err := g.Accept(tok); err == nil {
				t.Fatalf("Accept took %q, which Allowed refused", s[i])
			}
			return false
		}
		if err := g.Accept(tok); err != nil {
			t.Fatalf("Accept(%q): %v", s[i], err)
		}
	}
	return true
}

func TestGrammarAcceptsItsLanguage(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	bt := byteTokens(t, v)
	const gbnf = `root ::= ("yes" | "no") " " [0-9]{1,3}`
	for _, tc := range []struct {
		s          string
		ok, isDone bool
	}{
		{"yes 1", true, true}, {"no 123", true, true}, {"no", true, false},
		{"yes 1234", false, false}, {"maybe", false, false}, {"yes x", false, false},
	} {
		g, err := v.NewGrammar(gbnf, "root")
		if err != nil {
			t.Fatal(err)
		}
		ok := feed(t, g, bt, tc.s)
		if ok != tc.ok || (ok && g.Done() != tc.isDone) {
			t.Errorf("%q: accepted %v (want %v), done %v (want %v)", tc.s, ok, tc.ok, g.Done(), tc.isDone)
		}
		if g.Allowed(v.EOS()) != g.Done() {
			t.Errorf("%q: EOS allowed %v, Done %v", tc.s, g.Allowed(v.EOS()), g.Done())
		}
		g.Free()
	}
}

func TestGrammarErrors(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	for _, bad := range []string{"", `root ::= "a`, `root ::= other`, `start ::= "a"`, `root ::= root "a"`} {
		if g, err := v.NewGrammar(bad, "root"); err == nil {
			g.Free()
			t.Errorf("NewGrammar(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "grammar") {
			t.Errorf("NewGrammar(%q): %v does not say grammar", bad, err)
		}
	}
	g, err := v.NewGrammar(`root ::= "a"`, "root")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free()
	bt := byteTokens(t, v)
	// Tokens the grammar refuses, out of range, or EOG before the end: an
	// error each, and the grammar is unchanged.
	for _, tok := range []int32{bt['b'], -1, int32(v.NTokens()), v.EOS()} {
		if g.Accept(tok) == nil {
			t.Errorf("Accept(%d) took a refused token", tok)
		}
	}
	if !feed(t, g, bt, "a") || !g.Done() {
		t.Error(`"a" not accepted after the refusals`)
	}
	if g.Accept(v.EOS()) != nil {
		t.Error("EOS refused at the end")
	}
}

func TestGrammarCloneIsIndependent(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	bt := byteTokens(t, v)
	g, err := v.NewGrammar(`root ::= "ab" | "ac"`, "root")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free()
	feed(t, g, bt, "a")
	c, err := g.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if !feed(t, c, bt, "b") || !c.Done() {
		t.Error("clone refused b")
	}
	c.Free()
	if !g.Allowed(bt['c']) || g.Done() {
		t.Error("the original moved with its clone")
	}
}

// Greedy decoding with the mask: the text is in the grammar's language and
// the mask leaves allowed logits exactly as they were.
func TestGrammarMaskConstrainsDecoding(t *testing.T) {
	_, m := stories(t)
	v := m.Vocab()
	ctx := newCtx(t, m, ContextParams{})
	g, err := v.NewGrammar(`root ::= " " [A-Z] [a-z]+ (" " [a-z]+){2,5} "."`, "root")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free()
	toks := tokenize(t, v, "Once upon a time")
	b, err := m.lib.NewBatch(64)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pos := int32(0)
	var text []byte
	for step := 0; step < 60; step++ {
		b.Reset()
		for i, tok := range toks {
			b.Add(tok, pos, 0, i == len(toks)-1)
			pos++
		}
		if err := ctx.Decode(b); err != nil {
			t.Fatal(err)
		}
		row := append([]float32(nil), ctx.Logits(len(toks)-1)...)
		orig := append([]float32(nil), row...)
		kept := g.Mask(row)
		if kept == 0 {
			t.Fatal("the mask left nothing")
		}
		best, n := int32(0), 0
		for i, x := range row {
			if !math.IsInf(float64(x), -1) {
				n++
				if x != orig[i] {
					t.Fatalf("allowed logit %d changed: %v -> %v", i, orig[i], x)
				}
			}
			if x > row[best] {
				best = int32(i)
			}
		}
		if n != kept {
			t.Fatalf("Mask said %d kept, %d finite", kept, n)
		}
		if v.IsEOG(best) {
			break
		}
		if err := g.Accept(best); err != nil {
			t.Fatalf("token %d chosen from the mask refused: %v", best, err)
		}
		text = v.AppendPiece(text, best, false)
		toks = []int32{best}
	}
	if !g.Done() || !regexp.MustCompile(`^ [A-Z][a-z]+( [a-z]+){2,5}\.$`).Match(text) {
		t.Errorf("generated %q (done %v)", text, g.Done())
	}
}
