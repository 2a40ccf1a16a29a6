package gbnf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"specd/engine"
	"specd/internal/testenv"
)

// validGrammars are grammars llama.cpp accepts (start rule root), quirks
// of its parser included.
var validGrammars = []string{
	`root ::= "a"`,
	"root ::= \"a\"\n",
	`root::="a"`,
	"root ::=",         // nothing but the empty string
	"root ::= \"a\" |", //
	"#\rroot::=",       // a comment ends at CR too
	"\n\n  # comment\nroot ::= \"a\" # comment\n# another\n\n",
	"root ::= \"a\" |\n  \"b\"",              // a newline after | continues the rule
	"root ::= (\"a\"\n  \"b\"\n  | \"c\"\n)", // and so does one inside parentheses
	"root ::= \"a\"\r\nb ::= \"c\"\r\n",      // CRLF, an unused rule
	"root ::= \"a\"\rb ::= \"c\"",            // CR alone ends a rule too
	"root ::= \"a\"\n  b ::= \"c\"\n\t\n",    // blanks before a rule
	"root ::= x\nroot ::= \"a\"",             // defined twice: the last counts, x is forgotten
	"root ::= \"a\"\nroot ::= \"b\"",         //
	"root ::= 1\n1 ::= \"a\"",                // names may start with a digit
	"root ::= a-b-\na-b- ::= \"a\"",          // and have dashes anywhere
	"root ::= [] \"a\" [^] \"\"",             // empty literals and classes match nothing
	"root ::= \"\" | [] | \"x\"",             //
	"root ::= \"\xc3\"\"",                    // a UTF-8 lead byte takes the next byte, a quote included
	"root ::= [\xf0]]]]",                     // and a 4-byte one three
	"root ::= \"\xff\"\"\"\"",                //
	"root ::= \"\x80\xbf\"",                  // no UTF-8 check otherwise
	"root ::= \"a\nb\" [\n]",                 // raw newlines in literals and classes
	`root ::= "\x41\u00e9\U0001F600\t\r\n\\\"\[\]\-"`,
	`root ::= [\x00-\x1F\u00e9-\U0010FFFF^\]\-\[]`,
	`root ::= [a-] [-a] [a-z-] [a-c-e] [z-a] [^a-z0-9_]`, // no check that ranges are ordered
	`root ::= [\]-\\]`,
	`root ::= "a"* "b"+ "c"? . [x]*`,
	`root ::= "a"{0} "b"`,
	`root ::= "a"{2000} "b"{0,2000} "c"{3,} "d"{ 2 , 3 } "e"{1,1}`,
	`root ::= "a"{0,5000}`, // a maximum over 2000 means none
	`root ::= "a"{0,18446744073709551615}`,
	`root ::= "a"{0000002}`,
	`root ::= "a"{2}{3}{4}`,
	`root ::= "a"+?{2}`,
	`root ::= ("a" ("b"){1000}){2}`,
	`root ::= ("a"{0,1000} | "b"){1}`,
	`root ::= (((("a"))))`,
	`root ::= ( "a" | ) "b" ( | "c" )`,
	`root ::= <[0]> !<[1]> <[99999999999]> <[18446744073709551615]> <[0000000000000000000000001]>`,
	`root ::= <s> !</s> "a"`,
	`root ::= x y | z
x ::= "x"? y
y ::= z*
z ::= "z"`,
	`root ::= a root | "y"` + "\na ::= \"b\"",    // recursion, not left recursion
	`root ::= "(" root ")" root | ""`,            //
	"root ::= \"a\" \t# comment without newline", //
	"root ::= a\na ::= (\"b\"\n# comment in a group\n)",
	`root ::= "a" ` + strings.Repeat(`"b"{0,2000} `, 100),
	"root ::= " + strings.Repeat("(", maxCheckNesting) + `"a"` + strings.Repeat(")", maxCheckNesting),
	`root ::= (){3} "a"{0,0} ( ) "b"`,
	"root ::= \"a\" |\n  | \"b\"",
	chain(10000),
}

// chain is a grammar of n+2 rules, each but the last the next one.
func chain(n int) string {
	var b strings.Builder
	b.WriteString("root ::= a0\n")
	for i := range n {
		fmt.Fprintf(&b, "a%d ::= a%d\n", i, i+1)
	}
	fmt.Fprintf(&b, "a%d ::= \"x\"\n", n)
	return b.String()
}

// invalidGrammars are grammars Check refuses, with the message (and
// position) it gives.
var invalidGrammars = []struct {
	text, want string
	unsafe     bool // llama.cpp does not refuse it cleanly
}{
	{text: "", want: "grammar: no rules"},
	{text: "  \n# only a comment\n", want: "grammar: no rules"},
	{text: `root := "a"`, want: "line 1, column 6: expecting ::="},
	{text: "root ::= item\nabcdefghijklm= \"a\"", want: "line 2, column 14: expecting ::="},
	{text: "root\n::= \"a\"", want: "line 1, column 5: expecting ::="}, // no newline before ::=
	{text: `a ::= "x"`, want: "grammar: no rule 'root' (the start rule)"},
	{text: `::= "x"`, want: "line 1, column 1: expecting name"},
	{text: "root ::= \"a\" b\n::= \"c\"", want: "line 2, column 1: expecting name"},
	{text: "root ::= \"a\" |\nb ::= \"c\"", want: "line 2, column 3: expecting newline or end"}, // b is in root
	{text: `root ::= "a")`, want: "line 1, column 13: expecting newline or end"},
	{text: `root ::= "a" ]`, want: "line 1, column 14: expecting newline or end"},
	{text: `root ::= "a" "b`, want: "line 1, column 14: unterminated string"},
	{text: "root ::= \"\xf0", want: "line 1, column 10: unterminated string"}, // a lead byte takes what is left
	{text: "root ::= \"\xc3\"", want: "line 1, column 10: unterminated string"},
	{text: `root ::= [a-`, want: "line 1, column 10: unterminated character class"},
	{text: `root ::= [a`, want: "line 1, column 10: unterminated character class"},
	{text: `root ::= "\q"`, want: `line 1, column 11: unknown escape \q`},
	{text: `root ::= "\`, want: `line 1, column 11: unknown escape at the end`},
	{text: `root ::= [\/]`, want: `line 1, column 11: unknown escape \/`},
	{text: "root ::= \"\\\n\"", want: `line 1, column 11: unknown escape (backslash then byte 0x0A)`},
	{text: `root ::= "\x4"`, want: `line 1, column 11: expecting 2 hex digits after \x`},
	{text: `root ::= "\u12G4"`, want: `line 1, column 11: expecting 4 hex digits after \u`},
	{text: `root ::= "\U0001F60"`, want: `line 1, column 11: expecting 8 hex digits after \U`},
	{text: `root ::= *`, want: "line 1, column 10: expecting an item before *"},
	{text: `root ::= "a" | +`, want: "line 1, column 16: expecting an item before +"},
	{text: `root ::= ""?`, want: "line 1, column 12: expecting an item before ?"},
	{text: `root ::= []{2}`, want: "line 1, column 12: expecting an item before {"},
	{text: `root ::= "a"{0}*`, want: "line 1, column 16: expecting an item before *"},
	{text: `root ::= "a"{2001}`, want: "line 1, column 13: repetition of 2001 times"},
	{text: `root ::= "a"{2001,}`, want: "line 1, column 13: repetition of 2001 times"},
	{text: `root ::= "a"{,3}`, want: "line 1, column 14: expecting an integer"},
	{text: `root ::= "a"{3`, want: "line 1, column 15: expecting ',' or '}'"},
	{text: `root ::= "a"{3,4`, want: "line 1, column 17: expecting '}'"},
	{text: `root ::= "a"{3,x}`, want: "line 1, column 16: expecting '}'"},
	{text: "root ::= \"a\"{3\n}", want: "line 1, column 15: expecting ',' or '}'"},
	{text: `root ::= "a"{18446744073709551616}`, want: "line 1, column 14: number out of range"},
	{text: `root ::= "a"{1,99999999999999999999}`, want: "line 1, column 16: number out of range"},
	{text: `root ::= ("a"{0,1000}){3}`, want: "line 1, column 23: the repetition expands into more than 2000 rules"},
	{text: `root ::= ("a"{0,1000}){2}`, want: "line 1, column 23: the repetition expands into more than 2000 rules"},
	{text: `root ::= "a"{50}{50}`, want: "line 1, column 17: the repetition expands into more than 2000 rules"},
	{text: `root ::= (a b c){600}` + "\na ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"", want: "line 1, column 17: the repetition expands"}, // a, b, c are new rules in the group
	{text: `root ::= ("a"`, want: "line 1, column 14: expecting ')'"},
	{text: `root ::= ("a" ]`, want: "line 1, column 15: expecting ')'"},
	{text: `root ::= x`, want: "line 1, column 10: undefined rule 'x'"},
	{text: "root ::= \"a\"\nb ::= c d\nd ::= \"d\"", want: "line 2, column 7: undefined rule 'c'"},
	{text: "root ::= x\nroot ::= (\"a\")", want: "line 1, column 10: undefined rule 'x'"}, // x's reference is forgotten, not x
	{text: `root ::= <[1`, want: "line 1, column 13: expecting ']'"},
	{text: `root ::= <[1]`, want: "line 1, column 14: expecting '>'"},
	{text: `root ::= <[]>`, want: "line 1, column 12: expecting integer"},
	{text: `root ::= <[18446744073709551616]>`, want: "line 1, column 12: number out of range"},
	{text: `root ::= <abc`, want: "line 1, column 14: expecting '>'"},
	{text: `root ::= !"a"`, want: "line 1, column 11: expecting '<'"},
	{text: `root ::= root "a" | "b"`, want: "line 1, column 1: rule 'root' is left-recursive"},
	{text: "root ::= a\na ::= b \"x\"\nb ::= \"\" a | \"y\"", want: "line 2, column 1: left recursion: 'a' -> 'b' -> 'a'"},
	{text: "root ::= a\na ::= \"x\"? a", want: "line 2, column 1: rule 'a' is left-recursive"},
	{text: "root ::= \"x\"\na ::= (a \"b\")*", want: "rule 'a' is left-recursive"}, // unused, llama.cpp still refuses it
	{text: "root ::= a root \"x\" | \"y\"\na ::= \"z\"?", want: "line 1, column 1: rule 'root' is left-recursive", unsafe: true},
	{text: "root ::= a b\na ::= \"x\"*\nb ::= a root", want: "line 1, column 1: left recursion: 'root' -> 'b' -> 'root'", unsafe: true},
	{text: `root ::= "a"**`, want: "line 1, column 14: rule 'root' is left-recursive"}, // x* where x can be empty
	{text: `root ::= ()*`, want: "line 1, column 12: rule 'root' is left-recursive"},
	{text: "root ::= x+\nx ::= \"a\" |", want: "line 1, column 11: rule 'root' is left-recursive"},
	{text: `root ::= "a"?*`, want: "line 1, column 14: rule 'root' is left-recursive"},
	{text: `root ::= "a"{2,1}`, want: "line 1, column 13: repetition {2,1} has its maximum below its minimum", unsafe: true},
	{text: `root ::= "a"{3,0}`, want: "line 1, column 13: repetition {3,0}", unsafe: true},
	{text: "a ::= root\na ::= \"x\"", want: "line 1, column 7: undefined rule 'root' (the start rule)", unsafe: true},
	{text: "root ::= \"a\"\x00 | x", want: "line 1, column 13: NUL byte", unsafe: true},
	{text: "root ::= \"a\"\n\x00", want: "line 2, column 1: NUL byte", unsafe: true},
	{text: `root ::= "` + strings.Repeat("a", 3000) + `"{2000}`, want: "more than 4194304 elements", unsafe: true},
	{text: `root ::= ` + strings.Repeat(`"b"{0,2000} `, 132), want: "more than 262144 rules", unsafe: true},
	{text: chain(maxCheckDepth), want: "grammar: a chain of 20002 rules each able to start with the next, more than 20000", unsafe: true},
	{text: "root ::= " + strings.Repeat("(", maxCheckNesting+1) + `"a"` + strings.Repeat(")", maxCheckNesting+1), want: "line 1, column 1010: parentheses nested more than 1000 deep", unsafe: true},
}

// llamaGrammars are the example grammars of llama.cpp's source, if there.
func llamaGrammars(t *testing.T) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), ".cache", "llama.cpp", "grammars", "*.gbnf"))
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = string(b)
	}
	return out
}

// schemaGrammars are grammars FromSchema makes.
func schemaGrammars(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"JSONObject": JSONObject}
	for _, tt := range languageTests {
		text, err := FromSchema([]byte(tt.schema))
		if err != nil {
			t.Fatal(err)
		}
		out[tt.name] = text
	}
	return out
}

func TestCheckValid(t *testing.T) {
	for i, text := range validGrammars {
		if err := Check(text, "root"); err != nil {
			t.Errorf("valid grammar %d %q: %v", i, text, err)
		}
	}
	for name, text := range schemaGrammars(t) {
		if err := Check(text, "root"); err != nil {
			t.Errorf("FromSchema grammar %s: %v\n%s", name, err, text)
		}
	}
	files := llamaGrammars(t)
	for name, text := range files {
		if err := Check(text, "root"); err != nil {
			t.Errorf("llama.cpp's %s: %v", name, err)
		}
	}
	if len(files) == 0 {
		t.Log("no llama.cpp grammars folder: its grammars not checked")
	}
}

func TestCheckInvalid(t *testing.T) {
	for _, tt := range invalidGrammars {
		_, err := check(tt.text, "root")
		if err == nil {
			t.Errorf("%.200q: no error, want %q", tt.text, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%.200q: error %q, want %q", tt.text, err, tt.want)
		}
		if !strings.HasPrefix(err.Error(), "grammar: ") {
			t.Errorf("%.200q: error %q does not start with grammar:", tt.text, err)
		}
		if unsafe := err.kind == llamaUnsafe; unsafe != tt.unsafe {
			t.Errorf("%.200q: unsafe = %v, want %v", tt.text, unsafe, tt.unsafe)
		}
		if e := Check(tt.text, "root"); e == nil || e.Error() != err.Error() {
			t.Errorf("%.200q: Check = %v, check = %v", tt.text, e, err)
		}
	}
}

func TestCheckRoot(t *testing.T) {
	text := "a ::= \"x\"+ (\"y\")?\nb ::= a" // generates a_1, a_2 and a_3
	for _, root := range []string{"a", "b", "a_1", "a_2", "a_3"} {
		if err := Check(text, root); err != nil {
			t.Errorf("root %q: %v", root, err)
		}
	}
	for _, root := range []string{"root", "", "c", "a_0", "a_4", "b_4", "a_02", "a_", "_1"} {
		if err := Check(text, root); err == nil || !strings.Contains(err.Error(), "(the start rule)") {
			t.Errorf("root %q: %v, want no such start rule", root, err)
		}
	}
}

func TestCheckLineColumn(t *testing.T) {
	for _, tt := range []struct {
		text      string
		pos       int
		line, col int
	}{
		{"abc", 0, 1, 1}, {"abc", 3, 1, 4}, {"a\nbc", 3, 2, 2}, {"a\r\nbc", 4, 2, 2},
		{"a\rbc", 3, 2, 2}, {"é\nxé", 5, 2, 3}, {"\n\n", 2, 3, 1},
	} {
		if l, c := lineCol(tt.text, tt.pos); l != tt.line || c != tt.col {
			t.Errorf("lineCol(%q, %d) = %d, %d; want %d, %d", tt.text, tt.pos, l, c, tt.line, tt.col)
		}
	}
}

// llamaVerdict is whether llama.cpp (stories260K's vocabulary) builds a
// grammar from text with start rule root.
func llamaVerdict(t *testing.T, v *engine.Vocab, text string) bool {
	t.Helper()
	g, err := v.NewGrammar(text, "root")
	if err != nil {
		return false
	}
	g.Free()
	return true
}

// checkVerdict is what Check says llama.cpp does with text, and whether
// llama.cpp can be asked (not for grammars Check finds unsafe). <text>
// tokens are looked up in v as llama.cpp does.
func checkVerdict(t *testing.T, v *engine.Vocab, text string) (ok, ask bool, err error) {
	t.Helper()
	info, cerr := check(text, "root")
	if cerr != nil {
		return false, cerr.kind != llamaUnsafe, cerr
	}
	for _, tok := range info.tokens {
		toks, terr := v.Tokenize(tok, false, true)
		if terr != nil || len(toks) != 1 {
			return false, true, fmt.Errorf("token %q is %d tokens (%v)", tok, len(toks), terr)
		}
	}
	return true, true, nil
}

// TestCheckAgreesWithLlama runs the table's grammars through llama.cpp.
func TestCheckAgreesWithLlama(t *testing.T) {
	v, _ := storiesVocab(t)
	texts := append([]string(nil), validGrammars...)
	for _, tt := range invalidGrammars {
		texts = append(texts, tt.text)
	}
	for _, m := range []map[string]string{llamaGrammars(t), schemaGrammars(t)} {
		for _, text := range m {
			texts = append(texts, text)
		}
	}
	for _, text := range texts {
		want, ask, err := checkVerdict(t, v, text)
		if !ask {
			continue
		}
		if got := llamaVerdict(t, v, text); got != want {
			t.Errorf("%.300q: llama.cpp accepts = %v, Check: %v", text, got, err)
		}
	}
}

// FuzzCheck: Check accepts exactly the grammars llama.cpp accepts, but for
// those it finds unsafe to give llama.cpp.
func FuzzCheck(f *testing.F) {
	for _, text := range validGrammars {
		if len(text) < 1000 {
			f.Add(text)
		}
	}
	for _, tt := range invalidGrammars {
		if len(tt.text) < 1000 {
			f.Add(tt.text)
		}
	}
	for _, s := range []string{
		"root ::= a\na ::= \"b\" | [c-d] a", "root ::= (\"a\" | \"b\")* \"c\"{1,3}\n", "root ::= x\nx ::= [^\"\\\\]+ # c\n",
		"root ::= \"a\"\n\nb ::= (\n  \"c\"\n)\n", "root ::= <[3]> !<[4]>* .", "root ::= <s> | </s> | <unk> | <a>",
		"root ::= a{0,3}\na ::= \"\"", "root ::= a? b\na ::= b\nb ::= \"\" | a", "root ::= (\"a\"{0,2} a)\na ::= root? \"x\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		v, _ := storiesVocab(t)
		// A hang is a failure too: the fuzzer records the input that
		// crashed its worker.
		watchdog := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("grammar %q: still checking after 10 s", text)) })
		defer watchdog.Stop()
		want, ask, err := checkVerdict(t, v, text)
		if !ask {
			return
		}
		if got := llamaVerdict(t, v, text); got != want {
			t.Fatalf("%q: llama.cpp accepts = %v, Check: %v", text, got, err)
		}
	})
}
