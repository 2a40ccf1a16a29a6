package gbnf

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"specd/engine"
	"specd/internal/testenv"
)

// These tests run the grammars through llama.cpp's own grammar engine, fed
// one byte token at a time with the stories260K vocabulary. They skip when
// the backend or model is missing (they fail under SPECD_REQUIRE_MODELS=1).

var (
	vocabOnce sync.Once
	vocab     *engine.Vocab
	byteTok   map[byte]int32
	vocabErr  error
)

// storiesVocab is the stories260K vocabulary and, for each byte, a token
// whose piece is exactly that byte.
func storiesVocab(t testing.TB) (*engine.Vocab, map[byte]int32) {
	t.Helper()
	dir := testenv.LibDir(t)
	path := testenv.StoriesModel(t)
	vocabOnce.Do(func() {
		lib, err := engine.Open(engine.Options{LibDir: dir})
		if err != nil {
			vocabErr = err
			return
		}
		m, err := lib.LoadModel(context.Background(), engine.ModelParams{Path: path})
		if err != nil {
			vocabErr = err
			return
		}
		vocab = m.Vocab()
		byteTok = map[byte]int32{}
		for tok := range int32(vocab.NTokens()) {
			if p := vocab.AppendPiece(nil, tok, false); len(p) == 1 {
				if _, ok := byteTok[p[0]]; !ok {
					byteTok[p[0]] = tok
				}
			}
		}
	})
	if vocabErr != nil {
		t.Fatal(vocabErr)
	}
	return vocab, byteTok
}

// accepts reports whether grammar text accepts s as a whole document, and
// if not, why.
func accepts(t *testing.T, text, s string) (bool, string) {
	t.Helper()
	v, bt := storiesVocab(t)
	g, err := v.NewGrammar(text, "root")
	if err != nil {
		t.Fatalf("llama.cpp cannot parse the grammar: %v\n%s", err, text)
	}
	defer g.Free()
	for i := range len(s) {
		tok, ok := bt[s[i]]
		if !ok {
			t.Fatalf("no byte token for %q", s[i])
		}
		if !g.Allowed(tok) {
			return false, fmt.Sprintf("byte %d %q refused after %q", i, s[i], s[:i])
		}
		if err := g.Accept(tok); err != nil {
			t.Fatalf("Accept(%q) after Allowed: %v", s[i], err)
		}
	}
	if !g.Done() {
		return false, "cannot end there"
	}
	return true, ""
}

// checkLanguage checks that grammar text accepts every good document and
// rejects every bad one.
func checkLanguage(t *testing.T, text string, good, bad []string) {
	t.Helper()
	for _, s := range good {
		if ok, why := accepts(t, text, s); !ok {
			t.Errorf("rejects valid %q: %s\ngrammar:\n%s", s, why, text)
		}
	}
	for _, s := range bad {
		if ok, _ := accepts(t, text, s); ok {
			t.Errorf("accepts invalid %q\ngrammar:\n%s", s, text)
		}
	}
}

func TestJSONObjectLanguage(t *testing.T) {
	checkLanguage(t, JSONObject,
		[]string{
			`{}`, `{ }`, `{"a":1}`, `{"a": [1, 2.5e-3, -0, true, false, null, "x", {}, []]}`,
			`{"a":{"b":[1,2,{"c":null}]},"d":"x\"\\\n\u00e9 é"}`,
			"{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}",
			"{\n\n\t\"a\" : {\"\" : \"\"}\n}",
		},
		[]string{
			`[1]`, `"x"`, `1`, `null`, `{"a":}`, `{"a":1}}`, `{"a":1,}`, `{a:1}`, `{"a":01}`,
			`{"a":1} `, ` {"a":1}`, `{"a":"` + "\n" + `"}`, `{"a":"\x"}`, `{"a":tru}`, `{"a":1`,
			"{   \"a\":1}", "{\n\n\n\"a\":1}",
		})
}

// languageTests are schemas with documents valid and invalid against them.
var languageTests = []struct {
	name      string
	schema    string
	good, bad []string
}{
	{
		name: "nested object",
		schema: `{"type":"object","properties":{
			"name":{"type":"string"},
			"age":{"type":"integer"},
			"email":{"type":"string"},
			"tags":{"type":"array","items":{"type":"string"},"maxItems":2},
			"address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"string","minLength":5,"maxLength":5}},"required":["city"],"additionalProperties":false}
		},"required":["name","age"],"additionalProperties":false}`,
		good: []string{
			`{"name":"Ann","age":30}`,
			`{"name":"Ann","age":-3,"email":"a@b.c"}`,
			`{"name":"","age":0,"tags":[],"address":{"city":"Paris"}}`,
			`{"name":"A\"\\\n\u00e9 Zoë","age":1,"tags":["x","y"]}`,
			"{\n  \"name\": \"Bo\",\n  \"age\": 7,\n  \"address\": {\n    \"city\": \"Oslo\",\n    \"zip\": \"12345\"\n  }\n}",
			`{ "name" : "Bo" , "age" : 7 }`,
		},
		bad: []string{
			`{"age":30}`,                                // missing required name
			`{"name":"Ann"}`,                            // missing required age
			`{"name":"A","age":"30"}`,                   // wrong type
			`{"name":"A","age":1.5}`,                    // not an integer
			`{"name":"A","age":01}`,                     // not JSON
			`{"name":"A","age":1,"x":1}`,                // extra property
			`{"name":"A","age":1,"tags":["a","b","c"]}`, // too many items
			`{"name":"A","age":1,"address":{"city":"P","zip":"1234"}}`, // too short
			`{"name":"A","age":1,"address":{"zip":"12345"}}`,           // nested required
			`{"name":"A","age":1,"address":{"city":"P","x":1}}`,        // nested extra
			`{"name":"A","name":"B","age":1}`,                          // duplicate
			`{"age":1,"name":"A"}`,                                     // schema order is enforced
			`{"name":"A","age":1}x`,                                    // trailing garbage
			`{"name":"A","age":1} `,                                    // trailing whitespace
			` {"name":"A","age":1}`,                                    // leading whitespace
			`{"name":"A","age":1`,                                      // unfinished
			"{\"name\":\"a\nb\",\"age\":1}",                            // raw newline in a string
			"{    \"name\":\"A\",\"age\":1}",                           // too much whitespace
			`[]`, `null`, `"x"`,
		},
	},
	{
		name:   "optional properties in order",
		schema: `{"properties":{"a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"},"d":{"type":"integer"}},"required":["c"]}`,
		good: []string{
			`{"c":1}`, `{"a":1,"c":2}`, `{"b":1,"c":2}`, `{"a":1,"b":2,"c":3,"d":4}`, `{"c":1,"d":2}`, `{"a":1,"c":1,"d":1}`,
			`{ "b" : 1 , "c" : 2 }`,
		},
		bad: []string{
			`{}`, `{"a":1}`, `{"a":1,"d":1}`, `{"c":1,"c":2}`, `{,"c":1}`, `{"c":1,}`, `{"a":1,,"c":1}`, `{"c":"1"}`, `{"e":1,"c":1}`,
		},
	},
	{
		name:   "all optional with additional properties",
		schema: `{"properties":{"a":{"type":"integer"},"b":{"type":"string"}},"additionalProperties":{"type":"boolean"}}`,
		good: []string{
			`{}`, `{"a":1}`, `{"b":"x"}`, `{"a":1,"b":"x"}`, `{"a":1,"x":true}`, `{"x":true,"y":false}`,
			`{"ab":true}`, `{"":false}`, `{"b2":true}`, `{"\n":true}`, `{"a":1,"b":"","ba":false,"é":true}`,
		},
		bad: []string{
			`{"a":true}`, `{"b":true}`, `{"x":1}`, `{"x":true,"a":1}`, `{"a":1,"a":2}`, `{"b":"x","a":1}`,
		},
	},
	{
		name:   "extra property names with special characters",
		schema: `{"properties":{"a\"b":{"type":"integer"},"^]-\\":{"type":"integer"},"é":{"type":"integer"}},"additionalProperties":{"type":"null"}}`,
		good: []string{
			`{"a\"b":1}`, `{"^]-\\":1}`, `{"é":1}`, `{"a\"c":null}`, `{"^":null}`, `{"^]-\\x":null}`, `{"a\\":null}`, `{"e":null}`, `{"éé":null}`,
		},
		bad: []string{
			`{"a\"b":null}`, `{"^]-\\":null}`, `{"é":null}`, `{"a\"b":1,"é":null}`,
		},
	},
	{
		name:   "additional properties of any value",
		schema: `{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":true}`,
		good:   []string{`{"id":1}`, `{"id":1,"x":[1,{"y":null}],"z":"w"}`},
		bad:    []string{`{"x":1,"id":1}`, `{}`, `{"id":1,"id":2}`},
	},
	{
		name:   "array with min and max",
		schema: `{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`,
		good:   []string{`[1]`, `[1,2,3]`, `[ 1 , 2 ]`, "[\n  1,\n  2\n]"},
		bad:    []string{`[]`, `[1,2,3,4]`, `[1,]`, `["a"]`, `[1 2]`, `[1]]`},
	},
	{
		name:   "array of at least two",
		schema: `{"items":{"type":"boolean"},"minItems":2}`,
		good:   []string{`[true,false]`, `[true,false,true,true,true]`},
		bad:    []string{`[]`, `[true]`, `[1,2]`},
	},
	{
		name:   "tuple",
		schema: `{"type":"array","prefixItems":[{"type":"string"},{"type":"number"}],"items":false,"minItems":2}`,
		good:   []string{`["a",1.5e3]`, `[ "a" , -1 ]`},
		bad:    []string{`["a"]`, `["a",1,2]`, `[1,"a"]`, `[]`},
	},
	{
		name:   "open tuple",
		schema: `{"prefixItems":[{"type":"string"},{"type":"integer"}],"items":{"type":"null"},"maxItems":3}`,
		good:   []string{`[]`, `["a"]`, `["a",1]`, `["a",1,null]`},
		bad:    []string{`[1]`, `["a","b"]`, `["a",1,null,null]`, `["a",1,2]`},
	},
	{
		name:   "enum",
		schema: `{"enum":["red","green",42,null,{"k":[1,true]}]}`,
		good:   []string{`"red"`, `"green"`, `42`, `null`, `{"k":[1,true]}`},
		bad:    []string{`"blue"`, `"Red"`, `4`, `420`, `"red" `, `"redd"`, `true`},
	},
	{
		name:   "enum property",
		schema: `{"type":"object","properties":{"color":{"type":"string","enum":["red","green",1]}},"required":["color"]}`,
		good:   []string{`{"color":"red"}`, `{ "color" : "green" }`},
		bad:    []string{`{"color":"blue"}`, `{"color":1}`, `{}`},
	},
	{
		name:   "const",
		schema: `{"properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"]}`,
		good:   []string{`{"kind":"circle","r":1}`},
		bad:    []string{`{"kind":"square","r":1}`, `{"r":1}`},
	},
	{
		name:   "anyOf",
		schema: `{"anyOf":[{"type":"string","maxLength":2},{"type":"array","items":{"type":"boolean"}},{"type":"null"}]}`,
		good:   []string{`""`, `"ab"`, `[true,false]`, `[]`, `null`},
		bad:    []string{`"abc"`, `[1]`, `1`, `{}`},
	},
	{
		name:   "oneOf of objects",
		schema: `{"oneOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"string"}},"required":["b"]}]}`,
		good:   []string{`{"a":1}`, `{"b":"x"}`},
		bad:    []string{`{"a":"x"}`, `{"a":1,"b":"x"}`, `{}`},
	},
	{
		name: "recursive ref",
		schema: `{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["value"]}},
			"$ref":"#/$defs/node"}`,
		good: []string{`{"value":1}`, `{"value":1,"children":[]}`, `{"value":1,"children":[{"value":2,"children":[{"value":3}]},{"value":4}]}`},
		bad:  []string{`{"value":1,"children":[{}]}`, `{"value":1,"children":[{"value":"x"}]}`, `{"children":[]}`},
	},
	{
		name:   "linked list through definitions and anyOf",
		schema: `{"definitions":{"list":{"anyOf":[{"type":"null"},{"type":"object","properties":{"head":{"type":"string"},"tail":{"$ref":"#/definitions/list"}},"required":["head","tail"],"additionalProperties":false}]}},"type":"object","properties":{"items":{"$ref":"#/definitions/list"}},"required":["items"]}`,
		good:   []string{`{"items":null}`, `{"items":{"head":"a","tail":{"head":"b","tail":null}}}`},
		bad:    []string{`{"items":{"head":"a"}}`, `{"items":{"head":"a","tail":1}}`},
	},
	{
		name:   "root recursion",
		schema: `{"type":"array","items":{"anyOf":[{"$ref":"#"},{"type":"integer"}]}}`,
		good:   []string{`[]`, `[1,[2,[]],[[3]]]`},
		bad:    []string{`[1,[2,"x"]]`, `1`},
	},
	{
		name: "string formats",
		schema: `{"type":"object","properties":{"d":{"type":"string","format":"date"},"t":{"format":"time"},
			"dt":{"type":"string","format":"date-time"},"u":{"type":"string","format":"uuid"},"e":{"type":"string","format":"email"}},"additionalProperties":false}`,
		good: []string{
			`{"d":"2024-02-29"}`, `{"t":"23:59:59Z"}`, `{"t":"12:00:00.123+05:30"}`, `{"dt":"2024-01-31T08:15:00-07:00"}`,
			`{"u":"123e4567-e89b-12d3-A456-426614174000"}`, `{"e":"anything at all"}`,
			`{"d":"2024-02-29","t":"00:00:00Z","dt":"1999-12-31T23:59:59.999Z","u":"00000000-0000-0000-0000-000000000000","e":""}`,
		},
		bad: []string{
			`{"d":"2024-13-01"}`, `{"d":"24-01-01"}`, `{"d":"2024-01-32"}`, `{"t":"24:00:00Z"}`, `{"t":"12:00:00"}`,
			`{"u":"123e4567"}`, `{"u":"123e4567-e89b-12d3-a456-42661417400g"}`, `{"dt":"2024-01-31 08:15:00Z"}`, `{"x":1}`,
		},
	},
	{
		name:   "string lengths",
		schema: `{"type":"string","minLength":2,"maxLength":3}`,
		good:   []string{`"ab"`, `"abc"`, `"a\""`, `"é€"`, `"\u00e9x"`},
		bad:    []string{`"a"`, `"abcd"`, `""`, `"\q"`},
	},
	{
		name:   "nullable number",
		schema: `{"type":["number","null"]}`,
		good:   []string{`0`, `-1.5e-3`, `10E+2`, `null`, `-0`, `123456789012345678901234567890`},
		bad:    []string{`01`, `1.`, `.5`, `+1`, `"1"`, `NaN`, `1e`, `--1`},
	},
	{
		name:   "integer",
		schema: `{"type":"integer"}`,
		good:   []string{`0`, `-12`, `7`},
		bad:    []string{`1.0`, `1e2`, `-`, `00`},
	},
	{
		name:   "any value",
		schema: `{}`,
		good:   []string{`{"a":[1,{"b":null}]}`, `"x"`, `1`, `true`, `[]`, `null`},
		bad:    []string{`{"a":}`, `[1,]`, `tru`, ``},
	},
	{
		name:   "closed empty object",
		schema: `{"type":"object","additionalProperties":false}`,
		good:   []string{`{}`, `{ }`},
		bad:    []string{`{"a":1}`},
	},
}

func TestSchemaLanguage(t *testing.T) {
	for _, tt := range languageTests {
		t.Run(tt.name, func(t *testing.T) {
			text, err := FromSchema([]byte(tt.schema))
			if err != nil {
				t.Fatal(err)
			}
			checkLanguage(t, text, tt.good, tt.bad)
		})
	}
}

// TestLlamaParsesLargeGrammars checks that grammars at the limits still
// parse in llama.cpp (which expands {m,n} into rules and caps the product).
func TestLlamaParsesLargeGrammars(t *testing.T) {
	v, _ := storiesVocab(t)
	props := make([]string, 150)
	for i := range props {
		props[i] = fmt.Sprintf(`"p%d":{"type":"array","items":{"type":"string","maxLength":20},"maxItems":30}`, i)
	}
	for _, s := range []string{
		`{"type":"array","items":{"type":"string","maxLength":1000},"minItems":1000,"maxItems":1000}`,
		`{"type":"array","prefixItems":[{},{},{},{},{},{},{},{},{},{}],"items":{"type":"integer"},"maxItems":1000}`,
		`{"type":"object","properties":{` + strings.Join(props, ",") + `}}`,
	} {
		text, err := FromSchema([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		g, err := v.NewGrammar(text, "root")
		if err != nil {
			t.Fatalf("llama.cpp cannot parse the grammar of %.80s...: %v", s, err)
		}
		g.Free()
	}
}
