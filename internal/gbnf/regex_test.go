package gbnf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

// regexCases are patterns in the dialect Regex takes that Go's regexp
// (RE2) reads with the same meaning, so RE2 is the reference.
var regexCases = []string{
	`abc`, ``, `a|`, `a*`, `a+b?`, `(ab)*c`, `(?:ab|c){2,3}`, `a{3}`, `a{2,}`, `x{0,2}y`,
	`[0-9]{3}-[0-9]{4}`, `[^a-c]`, `[a\-z]+`, `[]a]`, `[\d.]+`, `\d+\.\d{2}`, `\w+@\w+\.com`,
	`\s*\S+`, `\W\D`, `.`, `a.c`, `(yes|no)`, `^(yes|no)$`, `^a|b$`, `(a|b)*abb`, `((a|b)(c|d))+`,
	`(?P<x>a)b`, `a*?b+?`, `[\n\t]`, `\x41B`, `\\\.\*\+\?\(\)\[\]\{\}\|\^\$`, `"q"`, `a{`, `{}`,
	`[a-c][^a-c]*`, `[\s\S]`, `(a*)*`, `(a|)+b`, `x{0}y`, `[-a]`, `[a-]`, `\/`,
	`(a?b?)*c`, `(a*|b)+`, `((a?)*)*`, `(x{0})*y`, `(a?){2,3}`, `(a?b*){2,}`, `(|a)*`,
}

func randomStrings(r *rand.Rand, pattern string, n int) []string {
	alpha := []rune("ab0 -\n\".\\")
	for _, c := range pattern {
		if c < 0x7F && c >= ' ' || c == '\n' || c == '\t' {
			alpha = append(alpha, c)
		}
	}
	alpha = append(alpha, []rune("cdxyzABq@m-9_")...)
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for range r.IntN(9) {
			b.WriteRune(alpha[r.IntN(len(alpha))])
		}
		out[i] = b.String()
	}
	return out
}

// fixedStrings are strings each case should see: some in its language.
var fixedStrings = []string{"", "a", "abc", "abb", "ababc", "c", "aaa", "aa", "xy", "y", "123-4567", "12-345",
	"d", "1.5", "12.34", "ab@cd.com", " x", "yes", "no", "b", "ac", "cd", "adbc", "xab", "AB", "\n", "\t", "a{", "{}", "]", "]a", "-", "\"q\"", "/",
	`\.*+?()[]{}|^$`}

// TestRegexLanguage: llama.cpp's grammar engine, fed byte by byte, accepts
// exactly the strings RE2 matches, for the whole output (Regex) and inside
// a JSON string (the JSON Schema form, which searches).
func TestRegexLanguage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range regexCases {
		whole, err := Regex(p)
		if err != nil {
			t.Fatalf("Regex(%q): %v", p, err)
		}
		checkGrammar(t, whole)
		if err := Check(whole, "root"); err != nil {
			t.Fatalf("Regex(%q) fails Check: %v\n%s", p, err, whole)
		}
		g := newGrammar()
		expr, err := g.regex(p, true)
		if err != nil {
			t.Fatalf("pattern %q: %v", p, err)
		}
		g.define("root", `"\"" `+expr+` "\""`)
		inJSON := g.String()
		full := regexp.MustCompile(`^(?:` + p + `)$`)
		search := regexp.MustCompile(p)
		for _, s := range append(randomStrings(r, p, 40), fixedStrings...) {
			if got, _ := accepts(t, whole, s); got != full.MatchString(s) {
				t.Errorf("Regex(%q) on %q: grammar %v, RE2 %v\n%s", p, s, got, !got, whole)
			}
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(s); err != nil {
				t.Fatal(err)
			}
			js := strings.TrimSuffix(b.String(), "\n")
			if got, _ := accepts(t, inJSON, js); got != search.MatchString(s) {
				t.Errorf("pattern %q on %s: grammar %v, RE2 %v\n%s", p, js, got, !got, inJSON)
			}
		}
	}
}

func TestRegexEscapes(t *testing.T) {
	text, err := Regex(`\u0041\U00000042\x43\t[\u0044-\u0046]`)
	if err != nil {
		t.Fatal(err)
	}
	checkLanguage(t, text, []string{"ABC\tD", "ABC\tF"}, []string{"ABC\tG", "ABCD", `\u0041BC\tD`})
}

func TestRegexJSONSpellings(t *testing.T) {
	g := newGrammar()
	expr, err := g.regex(`^[\x00-\x1F"\\]+$`, true)
	if err != nil {
		t.Fatal(err)
	}
	g.define("root", `"\"" `+expr+` "\""`)
	checkLanguage(t, g.String(),
		[]string{`"\n"`, `"\u000a"`, `"\u000A\u001f"`, `"\"\\"`, `"\b\f\r\t"`},
		[]string{`""`, `"a"`, "\"\n\"", `"\u0041"`, `"\u0022"`, `"\/"`})
}

func TestRegexErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{`a(?=b)`, "lookaround"},
		{`a(?!b)`, "lookaround"},
		{`(?<=a)b`, "lookaround"},
		{`(?i)a`, "inline flags"},
		{`(a)\1`, "backreferences"},
		{`\bword\b`, `\b is not supported`},
		{`\p{L}`, "Unicode property"},
		{`[[:alpha:]]`, "POSIX"},
		{`a++`, "possessive"},
		{`a**`, "multiple repeat"},
		{`*a`, "nothing to repeat"},
		{`a|*`, "nothing to repeat"},
		{`{2}`, "nothing to repeat"},
		{`(a`, "missing ')'"},
		{`a)`, "unbalanced ')'"},
		{`[a`, "missing ']'"},
		{`[z-a]`, "bad range"},
		{`a{3,1}`, "below the minimum"},
		{`a{1001}`, "limit"},
		{`a^b`, "'^' is supported only"},
		{`a$b`, "'$' is supported only"},
		{`(a$)`, "'$' is supported only"},
		{`\q`, "unknown escape"},
		{`a\`, "ends with"},
		{`\x4`, "hex digits"},
		{`\012`, "octal"},
		{`[^\x00-\U0010FFFF]`, "matches no character"},
		{strings.Repeat("(", 70) + strings.Repeat(")", 70), "nested deeper"},
		{strings.Repeat("a", maxRegex+1), "limit"},
		{"\xff", "UTF-8"},
		{strings.Repeat("a{1000}", 11), "repetition counts"},
	} {
		_, err := Regex(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Regex(%.40q): err = %v, want one containing %q", tc.pattern, err, tc.want)
		}
	}
}

func TestSchemaPattern(t *testing.T) {
	text, err := FromSchema([]byte(`{"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"},
		"tag": {"pattern": "x"}}, "required": ["zip", "tag"]}`))
	if err != nil {
		t.Fatal(err)
	}
	checkLanguage(t, text,
		[]string{`{"zip": "12345", "tag": "x"}`, `{"zip": "00000", "tag": "axb"}`},
		[]string{`{"zip": "1234", "tag": "x"}`, `{"zip": "123456", "tag": "x"}`, `{"zip": "12345", "tag": "y"}`, `{"zip": 12345, "tag": "x"}`})
	for _, tc := range []struct{ schema, want string }{
		{`{"type": "string", "pattern": 5}`, `"pattern" must be a string`},
		{`{"type": "string", "pattern": "a", "maxLength": 3}`, `"maxLength" cannot be combined with "pattern"`},
		{`{"type": "string", "pattern": "a", "format": "date"}`, `"format" cannot be combined`},
		{`{"properties": {"p": {"type": "string", "pattern": "(?=a)"}}}`, `#/properties/p`},
		{`{"enum": ["a"], "pattern": "a"}`, `cannot be combined with "enum"`},
	} {
		_, err := FromSchema([]byte(tc.schema))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.schema, err, tc.want)
		}
	}
}

// FuzzRegex: any pattern gives an error or a grammar both parsers take.
func FuzzRegex(f *testing.F) {
	for _, p := range regexCases {
		f.Add(p)
	}
	v, _ := storiesVocab(f)
	f.Fuzz(func(t *testing.T, p string) {
		watchdog := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("pattern %q: still converting after 5 s", p)) })
		defer watchdog.Stop()
		text, err := Regex(p)
		if err != nil {
			return
		}
		if err := Check(text, "root"); err != nil {
			t.Fatalf("Regex(%q) fails Check: %v\n%s", p, err, text)
		}
		g, err := v.NewGrammar(text, "root")
		if err != nil {
			t.Fatalf("Regex(%q): llama.cpp cannot parse it: %v\n%s", p, err, text)
		}
		g.Free()
	})
}
