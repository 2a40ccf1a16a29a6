// Package gbnf writes grammars in llama.cpp's GBNF dialect (the one parsed by
// src/llama-grammar.cpp) for OpenAI-style structured outputs: JSONObject for
// response_format {"type":"json_object"}, FromSchema for
// {"type":"json_schema"} and Regex for vLLM's guided_regex.
//
// # Grammar shape
//
// Every grammar has the start rule "root". Whitespace between JSON tokens is
// limited, as in llama.cpp's own converter, so a small model cannot emit
// whitespace forever:
//
//	space ::= | " " | "\n"{1,2} [ \t]{0,20}
//
// The top-level value has no whitespace before or after it. Strings are JSON
// strings (no raw control characters or DEL); numbers and integers are
// standard JSON numbers (integers without fraction or exponent). Rules never
// put two `space` symbols next to each other, so every document has one parse.
//
// # Supported JSON Schema subset
//
//   - type: "object", "array", "string", "number", "integer", "boolean",
//     "null", or a list of those. Without type, the type-specific keywords
//     present decide (properties/required/additionalProperties: object,
//     items/prefixItems/minItems/maxItems: array, minLength/maxLength/format:
//     string); with none of them (including {} and true) any JSON value.
//   - object: properties (emitted in the schema's order; optional ones may be
//     left out), required, additionalProperties. With properties and no
//     additionalProperties (or false) only the listed properties are allowed;
//     a schema (or true) allows extra properties of that schema after the
//     listed ones, with names other than the listed ones. Without properties
//     and additionalProperties: any object.
//   - array: items (a schema, or false), prefixItems, minItems, maxItems, with
//     JSON Schema 2020-12 meaning (prefixItems entries are optional unless
//     minItems says otherwise; without items, more items may be any value).
//   - string: minLength, maxLength, format "date", "time", "date-time" and
//     "uuid" (as llama.cpp writes them); other formats are ignored.
//     pattern, a regular expression in the dialect of regex.go, with JSON
//     Schema's meaning: the string's value contains a match (anchor it with
//     ^ and $ for a whole match); it cannot be combined with minLength,
//     maxLength or format.
//   - enum and const of any JSON values, matched in compact spelling (strings
//     re-encoded, numbers spelled as in the schema); they may be combined with
//     type, which filters the values.
//   - anyOf; oneOf, treated as anyOf; allOf with exactly one element.
//   - $ref to "#", "#/$defs/NAME" or "#/definitions/NAME", with $defs or
//     definitions at the schema root. Recursive definitions work; a
//     definition that refers to itself without an object or array in between
//     is refused.
//   - Ignored annotations: description, title, $schema, $id, default,
//     examples, strict, $comment, deprecated, readOnly, writeOnly.
//
// Everything else is refused with an error naming the keyword and the JSON
// pointer of the schema holding it: among others not, if/then/else,
// patternProperties, propertyNames, dependentRequired, minProperties,
// uniqueItems, contains, and the numeric bounds minimum, maximum,
// exclusiveMinimum, exclusiveMaximum and multipleOf (which a grammar cannot
// enforce for arbitrary numbers, so they are refused rather than ignored).
// anyOf, oneOf, allOf and $ref cannot be combined with other validation
// keywords, nor enum/const with keywords other than type, and a known format
// cannot be combined with minLength/maxLength.
//
// Known gaps in exactness: string lengths count JSON characters (an escape
// counts as one, a surrogate pair as two); extra property names written with
// \u escapes are not compared with the listed names; numbers that are
// integers but written with a fraction or exponent (1.0, 1e2) are not
// accepted as "integer".
//
// # Limits
//
// minItems, maxItems, minLength and maxLength must be at most 1,000 (llama.cpp
// expands {m,n} into rules); the repetitions of a grammar may add up to at
// most 10,000; a grammar has at most 1,000 rules and 64 KiB of text; the schema
// itself may be at most 256 KiB.
package gbnf

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// JSONObject is a GBNF grammar (root rule "root") whose language is any JSON
// object (OpenAI's response_format {"type":"json_object"}): an object at top
// level, any JSON values inside.
const JSONObject = `root ::= object
` + objectRule + `
` + memberRule + `
` + valueRule + `
` + arrayRule + `
` + stringRule + `
` + charRule + `
` + numberRule + `
` + integerRule + `
` + booleanRule + `
` + nullRule + `
` + spaceRule + `
`

// The rules of any JSON value, shared by JSONObject and FromSchema.
const (
	spaceRule   = `space ::= | " " | "\n"{1,2} [ \t]{0,20}`
	valueRule   = `value ::= object | array | string | number | boolean | null`
	objectRule  = `object ::= "{" space ( member ( "," space member )* )? "}"`
	memberRule  = `member ::= string space ":" space value space`
	arrayRule   = `array ::= "[" space ( value space ( "," space value space )* )? "]"`
	stringRule  = `string ::= "\"" char* "\""`
	charRule    = `char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})`
	numberRule  = `number ::= integer ("." [0-9]+)? ([eE] [-+]? [0-9]+)?`
	integerRule = `integer ::= "-"? ("0" | [1-9] [0-9]*)`
	booleanRule = `boolean ::= "true" | "false"`
	nullRule    = `null ::= "null"`
)

// primitive is a fixed rule and the other fixed rules it refers to.
type primitive struct {
	rule string // the whole "name ::= body" line
	deps []string
}

var primitives = map[string]primitive{
	"space":            {spaceRule, nil},
	"value":            {valueRule, []string{"object", "array", "string", "number", "boolean", "null"}},
	"object":           {objectRule, []string{"space", "member"}},
	"member":           {memberRule, []string{"string", "space", "value"}},
	"array":            {arrayRule, []string{"space", "value"}},
	"string":           {stringRule, []string{"char"}},
	"char":             {charRule, nil},
	"number":           {numberRule, []string{"integer"}},
	"integer":          {integerRule, nil},
	"boolean":          {booleanRule, nil},
	"null":             {nullRule, nil},
	"uuid":             {`uuid ::= "\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\""`, nil},
	"date":             {`date ::= [0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])`, nil},
	"time":             {`time ::= ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? ("Z" | ("+" | "-") ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])`, nil},
	"date-time":        {`date-time ::= date "T" time`, []string{"date", "time"}},
	"date-string":      {`date-string ::= "\"" date "\""`, []string{"date"}},
	"time-string":      {`time-string ::= "\"" time "\""`, []string{"time"}},
	"date-time-string": {`date-time-string ::= "\"" date-time "\""`, []string{"date-time"}},
}

// Limits on what FromSchema produces (see the package doc).
const (
	maxRepeat      = 1000      // minItems, maxItems, minLength, maxLength
	maxRepeatTotal = 10000     // sum of the bounds of all {m,n} written
	maxRules       = 1000      // rules in the grammar
	maxGrammar     = 64 << 10  // bytes of grammar text
	maxSchema      = 256 << 10 // bytes of schema
)

// grammar collects rules in order of definition; root comes first.
type grammar struct {
	names  map[string]bool // every name taken (defined or reserved)
	suffix map[string]int  // last number tried after a base name, less one
	order  []string        // defined rule names in definition order
	body   map[string]string
	prims  map[string]bool // primitives added
	reps   int             // sum of repetition bounds written
}

func newGrammar() *grammar {
	g := &grammar{names: map[string]bool{}, suffix: map[string]int{}, body: map[string]string{}, prims: map[string]bool{}}
	for name := range primitives {
		g.names[name] = true
	}
	g.names["root"] = true
	return g
}

// fresh reserves a new rule name made from hint.
func (g *grammar) fresh(hint string) string {
	base := ruleName(hint)
	name := base
	for g.names[name] {
		g.suffix[base]++
		name = fmt.Sprintf("%s%d", base, g.suffix[base]+1)
	}
	g.names[name] = true
	return name
}

// define sets the body of a reserved rule.
func (g *grammar) define(name, body string) {
	if _, ok := g.body[name]; !ok {
		g.order = append(g.order, name)
	}
	g.body[name] = body
}

// prim adds a fixed rule (and those it uses) and returns its name.
func (g *grammar) prim(name string) string {
	if !g.prims[name] {
		g.prims[name] = true
		p := primitives[name]
		g.define(name, strings.TrimPrefix(p.rule, name+" ::= "))
		for _, d := range p.deps {
			g.prim(d)
		}
	}
	return name
}

// repeat writes sym repeated between lo and hi times (hi < 0: no upper
// bound), or "" for zero times. sym must be a single symbol.
func (g *grammar) repeat(sym string, lo, hi int) string {
	g.reps += max(lo, hi)
	switch {
	case hi == 0:
		return ""
	case lo == 0 && hi < 0:
		return sym + "*"
	case lo == 1 && hi < 0:
		return sym + "+"
	case lo == 0 && hi == 1:
		return sym + "?"
	case hi < 0:
		return fmt.Sprintf("%s{%d,}", sym, lo)
	case lo == hi:
		return fmt.Sprintf("%s{%d}", sym, lo)
	}
	return fmt.Sprintf("%s{%d,%d}", sym, lo, hi)
}

func (g *grammar) String() string {
	var b strings.Builder
	order := g.order
	if i := slices.Index(order, "root"); i > 0 {
		order = slices.Concat([]string{"root"}, order[:i], order[i+1:])
	}
	for _, name := range order {
		b.WriteString(name)
		b.WriteString(" ::= ")
		b.WriteString(g.body[name])
		b.WriteByte('\n')
	}
	return b.String()
}

// ruleName makes a valid rule name ([a-zA-Z0-9-]+, not too long) from s.
func ruleName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		} else {
			dash = true
		}
	}
	name := b.String()
	if len(name) > 40 { // keep the most specific part
		name = strings.TrimLeft(name[len(name)-40:], "-")
	}
	if name == "" {
		name = "r"
	}
	return name
}

// literal quotes s as a GBNF string literal.
func literal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			writeChar(&b, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// classChar writes r for use inside a GBNF character class.
func classChar(b *strings.Builder, r rune) {
	switch r {
	case '"', '\\', ']', '[', '-', '^':
		b.WriteByte('\\')
		if r == '^' {
			b.WriteString("x5E")
			return
		}
		b.WriteRune(r)
	default:
		writeChar(b, r)
	}
}

// writeChar writes r, escaping control characters.
func writeChar(b *strings.Builder, r rune) {
	switch {
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r == '\t':
		b.WriteString(`\t`)
	case r < 0x20 || r == 0x7F:
		fmt.Fprintf(b, `\x%02X`, r)
	case r == utf8.RuneError:
		b.WriteString(`\uFFFD`)
	default:
		b.WriteRune(r)
	}
}

// Choice is a grammar (root rule "root") whose language is exactly the
// given strings (vLLM's guided_choice).
func Choice(choices []string) (string, error) {
	if len(choices) == 0 {
		return "", fmt.Errorf("choice: the list is empty")
	}
	alts := make([]string, len(choices))
	for i, c := range choices {
		if c == "" {
			return "", fmt.Errorf("choice: choice %d is empty", i)
		}
		alts[i] = literal(c)
	}
	return "root ::= " + strings.Join(alts, " | ") + "\n", nil
}
