package gbnf

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

var ruleNameRE = regexp.MustCompile(`^[a-zA-Z0-9-]+$`)

// checkGrammar checks what llama.cpp's parser needs that a test can see
// without it: one rule per line, valid unique names, root first, every
// referenced rule defined.
func checkGrammar(t *testing.T, text string) {
	t.Helper()
	defined := map[string]bool{}
	var refs []string
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		name, body, ok := strings.Cut(line, " ::= ")
		if !ok || !ruleNameRE.MatchString(name) {
			t.Fatalf("bad rule line %q", line)
		}
		if i == 0 && name != "root" {
			t.Fatalf("first rule is %q, want root", name)
		}
		if defined[name] {
			t.Fatalf("rule %q defined twice", name)
		}
		defined[name] = true
		refs = append(refs, words(t, body)...)
	}
	for _, r := range refs {
		if !defined[r] {
			t.Fatalf("rule %q is used but not defined in\n%s", r, text)
		}
	}
}

// words returns the rule names a rule body refers to.
func words(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for i := 0; i < len(body); {
		switch c := body[i]; {
		case c == '"' || c == '[':
			end := byte('"')
			if c == '[' {
				end = ']'
			}
			i++
			for i < len(body) && body[i] != end {
				if body[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(body) {
				t.Fatalf("unterminated literal or class in %q", body)
			}
			i++
		case c == '{':
			i += strings.IndexByte(body[i:], '}') + 1
		case c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(body) && strings.IndexByte("-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", body[j]) >= 0 {
				j++
			}
			out = append(out, body[i:j])
			i = j
		case strings.IndexByte(" ()|*+?", c) >= 0:
			i++
		default:
			t.Fatalf("unexpected %q in rule body %q", c, body)
		}
	}
	return out
}

func TestJSONObject(t *testing.T) {
	checkGrammar(t, JSONObject)
	if !strings.HasPrefix(JSONObject, "root ::= object\n") {
		t.Fatalf("JSONObject does not start with root ::= object:\n%s", JSONObject)
	}
}

func TestFromSchema(t *testing.T) {
	tests := []struct {
		name   string
		schema string
		want   []string // substrings, in this order
	}{
		{"empty", `{}`, []string{"root ::= value\n"}},
		{"true", `true`, []string{"root ::= value\n"}},
		{"annotations only", `{"title":"t","description":"d","$schema":"x","$id":"y","default":1,"examples":[],"strict":true,"$comment":"c"}`, []string{"root ::= value\n"}},
		{"any object", `{"type":"object"}`, []string{"root ::= object\n", "object ::= "}},
		{"closed empty object", `{"type":"object","additionalProperties":false}`, []string{`root ::= "{" space "}"`}},
		{"properties in schema order", `{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"},"mid":{"type":"boolean"}},"required":["alpha","zeta","mid"]}`,
			[]string{`root ::= "{" space root-zeta-kv "," space root-alpha-kv "," space root-mid-kv "}"`, `"\"zeta\"" space ":" space string space`, `"\"alpha\"" space ":" space integer space`}},
		{"optional before required", `{"properties":{"a":{},"b":{}},"required":["b"]}`,
			[]string{`root ::= "{" space ( root-a-kv root-rest1 | root-b-kv ) "}"`, `root-rest1 ::= "," space root-b-kv`}},
		{"all optional", `{"properties":{"a":{},"b":{}}}`,
			[]string{`( root-a-kv root-rest1 | root-b-kv | )`, `root-rest1 ::= ( "," space root-b-kv )?`}},
		{"underscores in names", `{"properties":{"first_name":{"type":"string"}}}`, []string{"root-first-name-kv ::= "}},
		{"additional properties", `{"properties":{"a":{"type":"integer"}},"additionalProperties":{"type":"number"}}`,
			[]string{`root-extra-key ::= "\"" ( | "a" (`, `root-extra-kv ::= root-extra-key space ":" space number space`}},
		{"additional properties only", `{"additionalProperties":{"type":"number"}}`,
			[]string{`root ::= "{" space ( root-extra-kv ( "," space root-extra-kv )* | ) "}"`, `root-extra-kv ::= string space`}},
		{"array", `{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`,
			[]string{`root ::= "[" space integer space root-more{0,2} "]"`, `root-more ::= "," space integer space`}},
		{"any array", `{"type":"array"}`, []string{"root ::= array\n"}},
		{"array inferred", `{"items":{"type":"string"}}`, []string{`root ::= "[" space ( string space root-more* | ) "]"`}},
		{"tuple", `{"prefixItems":[{"type":"string"},{"type":"number"}],"items":false,"minItems":2}`,
			[]string{`root ::= "[" space string space "," space number space "]"`}},
		{"string lengths", `{"type":"string","minLength":2,"maxLength":5}`, []string{`root ::= "\"" char{2,5} "\""`}},
		{"string min", `{"minLength":3}`, []string{`root ::= "\"" char{3,} "\""`}},
		{"date", `{"type":"string","format":"date"}`, []string{"root ::= date-string\n", "date ::= [0-9]{4}"}},
		{"date-time", `{"format":"date-time"}`, []string{"root ::= date-time-string\n", `date-time ::= date "T" time`}},
		{"uuid", `{"type":"string","format":"uuid"}`, []string{"root ::= uuid\n"}},
		{"other format", `{"type":"string","format":"email"}`, []string{"root ::= string\n"}},
		{"enum", `{"enum":["red","green",42,null,{"k":[1, true]},"é\"\n"]}`,
			[]string{`root ::= "\"red\"" | "\"green\"" | "42" | "null" | "{\"k\":[1,true]}" | "\"é\\\"\\n\""`}},
		{"enum filtered by type", `{"type":"string","enum":["a",1,"b"]}`, []string{`root ::= "\"a\"" | "\"b\""` + "\n"}},
		{"const", `{"const":1.50}`, []string{`root ::= "1.50"` + "\n"}},
		{"type list", `{"type":["string","null"]}`, []string{"root ::= string | null\n"}},
		{"number and integer", `{"type":["integer","number"]}`, []string{"root ::= number\n"}},
		{"anyOf", `{"anyOf":[{"type":"string"},{"type":"integer"},false]}`, []string{"root ::= string | integer\n"}},
		{"oneOf", `{"oneOf":[{"type":"boolean"},{"type":"null"}]}`, []string{"root ::= boolean | null\n"}},
		{"allOf one", `{"allOf":[{"type":"boolean"}],"description":"x"}`, []string{"root ::= boolean\n"}},
		{"ref", `{"$defs":{"n":{"type":"integer"}},"type":"object","properties":{"x":{"$ref":"#/$defs/n"}},"required":["x"]}`,
			[]string{"def-n ::= integer\n", `root-x-kv ::= "\"x\"" space ":" space def-n space`}},
		{"recursive ref", `{"definitions":{"node":{"type":"object","properties":{"next":{"anyOf":[{"$ref":"#/definitions/node"},{"type":"null"}]}},"required":["next"]}},"$ref":"#/definitions/node"}`,
			[]string{"root ::= def-node\n", "def-node-next ::= def-node | null\n", `def-node ::= "{" space def-node-next-kv "}"`}},
		{"root ref", `{"type":"array","items":{"anyOf":[{"$ref":"#"},{"type":"integer"}]}}`, []string{"root-item ::= root | integer\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromSchema([]byte(tt.schema))
			if err != nil {
				t.Fatal(err)
			}
			checkGrammar(t, got)
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("grammar lacks %q (in order) in\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			if again, _ := FromSchema([]byte(tt.schema)); again != got {
				t.Fatalf("output is not deterministic")
			}
		})
	}
}

func TestFromSchemaErrors(t *testing.T) {
	tests := []struct{ schema, want string }{
		{`{"properties":{"zip":{"type":"string","pattern":"^[0-9]+(?!x)$"}}}`, `json_schema: pattern "^[0-9]+(?!x)$": regex: lookaround is not supported (at character 8) at #/properties/zip`},
		{`{"properties":{"zip":{"type":"string","not":{}}}}`, `json_schema: unsupported keyword "not" at #/properties/zip`},
		{`{"not":{}}`, `json_schema: unsupported keyword "not" at #`},
		{`{"items":{"if":{}}}`, `unsupported keyword "if" at #/items`},
		{`{"type":"object","patternProperties":{}}`, `unsupported keyword "patternProperties" at #`},
		{`{"properties":{"a/b~":{"dependentRequired":{}}}}`, `unsupported keyword "dependentRequired" at #/properties/a~1b~0`},
		{`{"anyOf":[{},{"uniqueItems":true}]}`, `unsupported keyword "uniqueItems" at #/anyOf/1`},
		{`{"$defs":{"x":{"contains":{}}},"$ref":"#/$defs/x"}`, `unsupported keyword "contains" at #/$defs/x`},
		{`{"prefixItems":[{},{"propertyNames":{}}]}`, `unsupported keyword "propertyNames" at #/prefixItems/1`},
		{`{"properties":{"age":{"type":"integer","minimum":0}}}`, `unsupported keyword "minimum" at #/properties/age`},
		{`{"type":"number","maximum":1}`, `unsupported keyword "maximum" at #`},
		{`{"type":"number","multipleOf":2}`, `unsupported keyword "multipleOf" at #`},
		{`{"type":"number","exclusiveMinimum":2}`, `unsupported keyword "exclusiveMinimum" at #`},
		{`{"additionalProperties":{"minProperties":1}}`, `unsupported keyword "minProperties" at #/additionalProperties`},
		{`{"allOf":[{},{}]}`, `"allOf" is supported only with exactly one schema, not 2 at #`},
		{`{"anyOf":[]}`, `"anyOf" must be a non-empty list of schemas at #`},
		{`{"anyOf":[false]}`, `no schema of "anyOf" matches any value at #`},
		{`{"type":"string","anyOf":[{}]}`, `keyword "type" cannot be combined with "anyOf" at #`},
		{`{"$ref":"#/$defs/a","anyOf":[{}],"$defs":{"a":{}}}`, `keyword "anyOf" cannot be combined with "$ref" at #`},
		{`{"enum":["a"],"minLength":1}`, `keyword "minLength" cannot be combined with "enum" at #`},
		{`{"format":"date","maxLength":3}`, `format "date" cannot be combined with "minLength" or "maxLength" at #`},
		{`{"$ref":"#/properties/a"}`, `unsupported $ref "#/properties/a"`},
		{`{"$ref":"https://example.com/s.json"}`, `unsupported $ref "https://example.com/s.json"`},
		{`{"$ref":"#/$defs/missing"}`, `$ref "#/$defs/missing" points to no definition at #`},
		{`{"properties":{"a":{"$defs":{}}}}`, `"$defs" is supported only at the schema root, not at #/properties/a`},
		{`{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/b"},{"type":"null"}]},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, `recurses without an object or array in between`},
		{`{"anyOf":[{"$ref":"#"},{"type":"null"}]}`, `$ref "#" recurses without an object or array in between at #/anyOf/0`},
		{`{"type":"strin"}`, `unknown type "strin" at #`},
		{`{"type":[]}`, `"type" must not be an empty list at #`},
		{`{"type":"object","properties":{"a":{}},"required":["b"]}`, `required property "b" is not listed in "properties" at #`},
		{`{"properties":{"a":false},"required":["a"]}`, `required property "a" has schema false at #/properties/a`},
		{`{"enum":[1,2],"type":"string"}`, `no value of "enum"/"const" has an allowed "type" at #`},
		{`{"const":3,"enum":[1,2]}`, `"const" is not one of the "enum" values at #`},
		{`{"items":[{}]}`, `"items" must be a schema (use "prefixItems" for tuples) at #`},
		{`{"minItems":3,"maxItems":2}`, `no array has at least 3 and at most 2 items at #`},
		{`{"minItems":-1}`, `"minItems" must be a non-negative integer at #`},
		{`{"maxLength":1.5}`, `"maxLength" must be a non-negative integer at #`},
		{`{"properties":{"a":{"type":"string","maxLength":100000}}}`, `"maxLength" is 100000, more than the limit of 1000 at #/properties/a`},
		{`{"minItems":1001}`, `"minItems" is 1001, more than the limit of 1000 at #`},
		{`{"properties":{"a":[]}}`, `a schema must be a JSON object or a boolean, not an array at #/properties/a`},
		{`false`, `schema false matches no value at #`},
		{`[1]`, `json_schema: the schema must be a JSON object or a boolean, not an array`},
		{`"x"`, `the schema must be a JSON object or a boolean, not a string`},
		{`{"type":`, `json_schema: invalid JSON`},
		{``, `json_schema: invalid JSON`},
		{`{} {}`, `json_schema: invalid JSON`},
		{`{"type":"string","type":"null"}`, `json_schema: invalid JSON: duplicate key "type"`},
	}
	for _, tt := range tests {
		got, err := FromSchema([]byte(tt.schema))
		if err == nil {
			t.Errorf("FromSchema(%s) = no error, grammar\n%s", tt.schema, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FromSchema(%s) error %q, want it to contain %q", tt.schema, err, tt.want)
		}
		if !strings.HasPrefix(err.Error(), "json_schema: ") {
			t.Errorf("error %q lacks the json_schema: prefix", err)
		}
	}
}

func TestLimits(t *testing.T) {
	props := func(n int, value string) string {
		var b strings.Builder
		b.WriteString(`{"type":"object","properties":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"p%d":%s`, i, value)
		}
		b.WriteString("}}")
		return b.String()
	}
	longEnum := func(n, size int) string {
		var vals []string
		for i := range n {
			vals = append(vals, fmt.Sprintf(`"%d%s"`, i, strings.Repeat("x", size)))
		}
		return `{"enum":[` + strings.Join(vals, ",") + `]}`
	}
	tests := []struct{ name, schema, want string }{
		{"rules", props(1200, `{"type":"string"}`), "grammar rules, more than the limit of 1000"},
		{"repetitions", props(11, `{"type":"array","maxItems":1000}`), "repetition counts add up to 10989, more than the limit of 10000"},
		{"grammar size", longEnum(70, 1000), "more than the limit of 64 KiB"},
		{"schema size", longEnum(300, 1000), "the schema is larger than 256 KiB"},
		{"many definitions", manyDefs(3000), "more than the limit of 1000 grammar rules"},
		{"deep nesting", strings.Repeat(`{"items":`, 3000) + "{}" + strings.Repeat("}", 3000), "more than the limit of 1000 grammar rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromSchema([]byte(tt.schema))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	// Just under the limits is fine.
	for _, s := range []string{props(10, `{"type":"array","maxItems":1000}`), `{"type":"string","maxLength":1000}`, props(300, `{"type":"string"}`)} {
		if g, err := FromSchema([]byte(s)); err != nil {
			t.Errorf("FromSchema: %v", err)
		} else {
			checkGrammar(t, g)
		}
	}
}

// manyDefs is n definitions, each referring to the next at its start.
func manyDefs(n int) string {
	var defs []string
	for i := range n {
		defs = append(defs, fmt.Sprintf(`"d%d":{"anyOf":[{"$ref":"#/$defs/d%d"},{"type":"null"}]}`, i, (i+1)%n))
	}
	return `{"$defs":{` + strings.Join(defs, ",") + `},"$ref":"#/$defs/d0"}`
}

func TestLeftRecursionAcrossManyDefinitions(t *testing.T) {
	_, err := FromSchema([]byte(manyDefs(200)))
	if err == nil || !strings.Contains(err.Error(), "recurses without an object or array in between") {
		t.Fatalf("error %v, want left recursion refused", err)
	}
}

func TestNotStringsSpecialNames(t *testing.T) {
	g, err := FromSchema([]byte(`{"properties":{"a\"b":{},"^]-\\":{},"é":{},"":{}},"additionalProperties":{"type":"null"}}`))
	if err != nil {
		t.Fatal(err)
	}
	checkGrammar(t, g)
	for _, w := range []string{`"\\\""`, `"^"`, `"\\\\"`, `[^"\\\x7F\x00-\x1Fa\x5Eé]`, `[^"\\\x7F\x00-\x1F\]]`, `"\\" ([\\/bfnrt] | "u"`, `"\\" ([\"/bfnrt] | "u"`} {
		if !strings.Contains(g, w) {
			t.Errorf("grammar lacks %s:\n%s", w, g)
		}
	}
}
