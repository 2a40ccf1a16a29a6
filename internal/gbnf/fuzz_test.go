package gbnf

import (
	"fmt"
	"testing"
	"time"
)

// FuzzFromSchema: whatever the schema, FromSchema returns a grammar or an
// error (no panic), and every grammar it returns is within the limits and
// is one llama.cpp accepts.
func FuzzFromSchema(f *testing.F) {
	for _, s := range []string{
		`{}`, `true`, `false`, `{"type":"object","properties":{"a":{"type":"string","maxLength":3}},"required":["a"]}`,
		`{"type":["string","null"]}`, `{"enum":[1,"a",null,{"b":[]}]}`, `{"anyOf":[{"type":"integer"},{"type":"array","items":{"$ref":"#"}}]}`,
		`{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		`{"type":"array","prefixItems":[{"const":1}],"minItems":1,"maxItems":4}`, `{"type":"string","format":"date-time"}`,
		`{"type":"object","additionalProperties":{"type":"number"}}`, `{"$ref":"#"}`, `{"properties":{"x\"y":{}}}`,
		`{"type":"object","properties":{"zip":{"type":"string","pattern":"^[0-9]{5}(-[0-9]{4})?$"}}}`, `{"pattern":"a|b$"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, schema []byte) {
		// A hang is a failure too: the fuzzer records the input that
		// crashed its worker.
		watchdog := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("schema %q: still converting after 5 s", schema)) })
		defer watchdog.Stop()
		text, err := FromSchema(schema)
		if err != nil {
			return
		}
		if len(text) > maxGrammar {
			t.Fatalf("grammar of %d bytes", len(text))
		}
		v, _ := storiesVocab(t)
		g, err := v.NewGrammar(text, "root")
		if err != nil {
			t.Fatalf("schema %s: llama.cpp refuses the grammar: %v\n%s", schema, err, text)
		}
		g.Free()
	})
}
