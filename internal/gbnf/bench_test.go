package gbnf

import (
	"testing"
)

// BenchmarkGrammar: what a constrained request adds per verify row on the
// loop, with the stories260K vocabulary (512 tokens): masking a whole row,
// asking about one token, accepting one, and cloning the state (once per
// verify step with a draft). States: inside a JSON string (most tokens
// allowed) and between members (few allowed).
func BenchmarkGrammar(b *testing.B) {
	v, bt := storiesVocab(b)
	schema := `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"pets":{"type":"array","items":{"type":"string"}}},"required":["name","age","pets"]}`
	text, err := FromSchema([]byte(schema))
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range []struct{ name, prefix string }{{"in-string", `{"name": "Lily and`}, {"between", `{"name": "Lily", "age": 3`}} {
		g, err := v.NewGrammar(text, "root")
		if err != nil {
			b.Fatal(err)
		}
		for i := range len(st.prefix) {
			if err := g.Accept(bt[st.prefix[i]]); err != nil {
				b.Fatalf("%s: byte %d refused", st.name, i)
			}
		}
		row := make([]float32, v.NTokens())
		b.Run(st.name+"/mask", func(b *testing.B) {
			for b.Loop() {
				g.Mask(row)
			}
		})
		b.Run(st.name+"/allowed", func(b *testing.B) {
			for b.Loop() {
				g.Allowed(bt['a'])
			}
		})
		b.Run(st.name+"/clone+accept", func(b *testing.B) {
			for b.Loop() {
				c, _ := g.Clone()
				_ = c.Accept(bt[' '])
				c.Free()
			}
		})
		g.Free()
	}
}
