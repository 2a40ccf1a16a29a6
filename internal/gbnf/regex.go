package gbnf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Regular expressions as grammars: Regex for vLLM's guided_regex (the whole
// output matches), and JSON Schema's "pattern" (a JSON string whose value
// contains a match, see converter.str).
//
// The dialect is the common core of Python's re, ECMAScript and RE2:
//
//   - literals, and escapes of punctuation (\. \* \\ ...);
//   - . (any character but a newline), classes [a-z_] and [^...], and the
//     escapes \d \w \s \D \W \S (ASCII: \d is [0-9], \w [A-Za-z0-9_], \s
//     [ \t\n\r\f\v]), \n \t \r \f \v \0, \xHH, \uHHHH and \UHHHHHHHH;
//   - groups (...), (?:...), (?P<name>...) and (?<name>...); alternation |;
//   - quantifiers * + ? {n} {n,} {n,m} ({,m} as Python's {0,m}); the lazy
//     forms (*? ...) match the same strings and are accepted;
//   - ^ at the start and $ at the end of the pattern or of one of its
//     top-level alternatives.
//
// Refused, with the offset of the construct: backreferences, lookaround,
// inline flags, possessive quantifiers, \b \B \A \Z \p{...}, POSIX classes
// ([[:alpha:]]), and anchors anywhere else. A grammar cannot express
// lookaround or backreferences; the rest differ between dialects.

const (
	maxRegex      = 4 << 10 // bytes of a pattern
	maxRegexDepth = 64      // nested groups
	maxRune       = unicode.MaxRune
)

type runeRange struct{ lo, hi rune }

type reKind uint8

const (
	reLit  reKind = iota // runes, in order
	reSet                // one character of set
	reCat                // subs in order
	reAlt                // one of subs
	reRep                // subs[0] repeated lo..hi times (hi < 0: unbounded)
	reText               // any JSON string content (JSON Schema's unanchored ends)
)

type reNode struct {
	kind   reKind
	runes  []rune
	set    []runeRange
	subs   []*reNode
	lo, hi int
}

// regexError is a user-facing parse error; the parser panics with it and
// regex recovers it.
type regexError string

type reParser struct {
	src   []rune
	pos   int
	depth int
}

func (p *reParser) fail(format string, args ...any) {
	panic(regexError(fmt.Sprintf(format, args...) + fmt.Sprintf(" (at character %d)", p.pos+1)))
}

func (p *reParser) more() bool { return p.pos < len(p.src) }

func (p *reParser) peek(r rune) bool { return p.pos < len(p.src) && p.src[p.pos] == r }

// Regex is a grammar (root rule "root") whose language is the strings that
// pattern matches as a whole (vLLM's guided_regex; ^ and $ at the ends
// change nothing).
func Regex(pattern string) (string, error) {
	g := newGrammar()
	body, err := g.regex(pattern, false)
	if err != nil {
		return "", err
	}
	g.define("root", body)
	return g.finish("the regular expression")
}

// regex converts pattern to a GBNF sequence, or with inJSON to one GBNF
// item (possibly empty). inJSON: the text is the
// content of a JSON string (characters escaped as JSON requires, one
// spelling each) and the pattern searches, as JSON Schema's "pattern"
// does: an alternative without ^ may have any text before its match, one
// without $ any text after it.
func (g *grammar) regex(pattern string, inJSON bool) (expr string, err error) {
	if len(pattern) > maxRegex {
		return "", fmt.Errorf("regex: the pattern has %d bytes, more than the limit of %d", len(pattern), maxRegex)
	}
	if !utf8.ValidString(pattern) {
		return "", fmt.Errorf("regex: the pattern is not valid UTF-8")
	}
	defer func() {
		if r := recover(); r != nil {
			re, ok := r.(regexError)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("regex: %s", string(re))
		}
	}()
	p := &reParser{src: []rune(pattern)}
	n := p.top(inJSON)
	e := reEmitter{g: g, json: inJSON}
	if inJSON { // one item, to sit between the string's quotes
		return e.item(n), nil
	}
	return e.seq(n), nil
}

// top parses the whole pattern: top-level alternatives with their anchors.
func (p *reParser) top(search bool) *reNode {
	var alts []*reNode
	for {
		start := p.peek('^')
		if start {
			p.pos++
		}
		n, end := p.concat(true)
		if search {
			parts := []*reNode{n}
			if !start {
				parts = slices.Insert(parts, 0, &reNode{kind: reText})
			}
			if !end {
				parts = append(parts, &reNode{kind: reText})
			}
			n = &reNode{kind: reCat, subs: parts}
		}
		alts = append(alts, n)
		if !p.peek('|') {
			break
		}
		p.pos++
	}
	if p.more() { // only an unmatched ')' stops a top-level concatenation
		p.fail("unbalanced ')'")
	}
	return oneOf(alts)
}

func oneOf(alts []*reNode) *reNode {
	if len(alts) == 1 {
		return alts[0]
	}
	return &reNode{kind: reAlt, subs: alts}
}

// alternation parses alternatives inside a group.
func (p *reParser) alternation() *reNode {
	var alts []*reNode
	for {
		n, _ := p.concat(false)
		alts = append(alts, n)
		if !p.peek('|') {
			return oneOf(alts)
		}
		p.pos++
	}
}

// concat parses items up to '|', ')' or the end. At top level a '$' before
// one of those ends it and is reported.
func (p *reParser) concat(top bool) (n *reNode, end bool) {
	var items []*reNode
	for p.more() {
		c := p.src[p.pos]
		if c == '|' || c == ')' {
			break
		}
		if c == '$' {
			if top && (p.pos+1 == len(p.src) || p.src[p.pos+1] == '|') {
				p.pos++
				end = true
				break
			}
			p.fail("'$' is supported only at the end of the pattern or of a top-level alternative")
		}
		if c == '^' {
			p.fail("'^' is supported only at the start of the pattern or of a top-level alternative")
		}
		it := p.quantified()
		if k := len(items) - 1; k >= 0 && it.kind == reLit && items[k].kind == reLit {
			items[k].runes = append(items[k].runes, it.runes...)
			continue
		}
		items = append(items, it)
	}
	if len(items) == 1 {
		return items[0], end
	}
	return &reNode{kind: reCat, subs: items}, end
}

func (p *reParser) quantified() *reNode {
	at := p.pos
	n := p.atom()
	lo, hi, ok := p.quantifier()
	if !ok {
		return n
	}
	if p.peek('?') { // lazy: the same strings
		p.pos++
	} else if p.peek('+') {
		p.fail("possessive quantifiers are not supported")
	}
	if _, _, again := p.quantifier(); again {
		p.pos = at
		p.fail("multiple repeat")
	}
	return &reNode{kind: reRep, subs: []*reNode{n}, lo: lo, hi: hi}
}

// quantifier reads * + ? {n} {n,} {n,m} {,m} at pos, if one is there.
func (p *reParser) quantifier() (lo, hi int, ok bool) {
	if !p.more() {
		return 0, 0, false
	}
	switch p.src[p.pos] {
	case '*':
		p.pos++
		return 0, -1, true
	case '+':
		p.pos++
		return 1, -1, true
	case '?':
		p.pos++
		return 0, 1, true
	case '{':
		end := slices.Index(p.src[p.pos:], '}')
		if end < 0 {
			return 0, 0, false
		}
		body := string(p.src[p.pos+1 : p.pos+end])
		a, b, comma := strings.Cut(body, ",")
		num := func(s string) (int, bool) {
			if s == "" || len(s) > 7 || strings.Trim(s, "0123456789") != "" {
				return 0, false
			}
			v, err := strconv.Atoi(s)
			return v, err == nil
		}
		lo, okLo := num(a)
		if a == "" && comma { // Python's {,m}
			lo, okLo = 0, true
		}
		hi, okHi := lo, okLo
		if comma {
			hi, okHi = -1, true
			if b != "" {
				hi, okHi = num(b)
			}
		}
		if !okLo || !okHi || (a == "" && b == "") {
			return 0, 0, false // not a quantifier: '{' is a literal
		}
		if hi >= 0 && hi < lo {
			p.fail("bad repeat {%s}: the maximum is below the minimum", body)
		}
		if lo > maxRepeat || hi > maxRepeat {
			p.fail("repeat {%s} over the limit of %d", body, maxRepeat)
		}
		p.pos += end + 1
		return lo, hi, true
	}
	return 0, 0, false
}

var (
	digitSet = []runeRange{{'0', '9'}}
	wordSet  = []runeRange{{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}
	spaceSet = []runeRange{{'\t', '\r'}, {' ', ' '}} // \t \n \v \f \r and space
	dotSet   = complement([]runeRange{{'\n', '\n'}})
)

func (p *reParser) atom() *reNode {
	c := p.src[p.pos]
	switch c {
	case '(':
		p.depth++
		if p.depth > maxRegexDepth {
			p.fail("groups nested deeper than %d", maxRegexDepth)
		}
		p.pos++
		p.groupPrefix()
		n := p.alternation()
		if !p.peek(')') {
			p.fail("missing ')'")
		}
		p.pos++
		p.depth--
		return n
	case '[':
		p.pos++
		return &reNode{kind: reSet, set: p.class()}
	case '.':
		p.pos++
		return &reNode{kind: reSet, set: dotSet}
	case '\\':
		r, set := p.escape(false)
		if set != nil {
			return &reNode{kind: reSet, set: set}
		}
		return &reNode{kind: reLit, runes: []rune{r}}
	case '*', '+', '?':
		p.fail("nothing to repeat")
	case '{':
		save := p.pos
		if _, _, ok := p.quantifier(); ok {
			p.pos = save
			p.fail("nothing to repeat")
		}
	}
	p.pos++
	return &reNode{kind: reLit, runes: []rune{c}}
}

// groupPrefix reads what follows '(' up to the group's content.
func (p *reParser) groupPrefix() {
	if !p.peek('?') {
		return
	}
	rest := string(p.src[p.pos+1 : min(len(p.src), p.pos+3)])
	switch {
	case strings.HasPrefix(rest, ":"):
		p.pos += 2
	case strings.HasPrefix(rest, "P<") || strings.HasPrefix(rest, "<") && !strings.HasPrefix(rest, "<=") && !strings.HasPrefix(rest, "<!"):
		end := slices.Index(p.src[p.pos:], '>')
		if end < 0 {
			p.fail("unterminated group name")
		}
		p.pos += end + 1
	case strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, "!") || strings.HasPrefix(rest, "<=") || strings.HasPrefix(rest, "<!"):
		p.pos-- // at the '('
		p.fail("lookaround is not supported")
	default:
		p.pos--
		p.fail("inline flags and other (?...) groups are not supported")
	}
}

// escape reads the escape at pos ('\\'): one rune, or a set for \d and the
// like. inClass: \b is a backspace there.
func (p *reParser) escape(inClass bool) (rune, []runeRange) {
	p.pos++
	if !p.more() {
		p.fail("the pattern ends with '\\'")
	}
	c := p.src[p.pos]
	p.pos++
	switch c {
	case 'd':
		return 0, digitSet
	case 'D':
		return 0, complement(digitSet)
	case 'w':
		return 0, wordSet
	case 'W':
		return 0, complement(wordSet)
	case 's':
		return 0, spaceSet
	case 'S':
		return 0, complement(spaceSet)
	case 'n':
		return '\n', nil
	case 't':
		return '\t', nil
	case 'r':
		return '\r', nil
	case 'f':
		return '\f', nil
	case 'v':
		return '\v', nil
	case '0':
		if p.more() && '0' <= p.src[p.pos] && p.src[p.pos] <= '9' {
			p.fail("octal escapes are not supported")
		}
		return 0, nil
	case 'x':
		return p.hexEscape(2), nil
	case 'u':
		return p.hexEscape(4), nil
	case 'U':
		return p.hexEscape(8), nil
	case 'b':
		if inClass {
			return '\b', nil
		}
	}
	p.pos--
	switch {
	case '1' <= c && c <= '9':
		p.fail("backreferences are not supported")
	case c == 'b' || c == 'B' || c == 'A' || c == 'Z' || c == 'z' || c == 'G':
		p.fail("the assertion \\%c is not supported", c)
	case c == 'p' || c == 'P':
		p.fail("Unicode property classes (\\%c{...}) are not supported", c)
	case c < utf8.RuneSelf && (unicode.IsLetter(c) || unicode.IsDigit(c)):
		p.fail("unknown escape \\%c", c)
	}
	p.pos++
	return c, nil // an escaped punctuation or non-ASCII character
}

func (p *reParser) hexEscape(n int) rune {
	if p.pos+n > len(p.src) {
		p.fail("a \\x, \\u or \\U escape needs %d hex digits", n)
	}
	v, err := strconv.ParseUint(string(p.src[p.pos:p.pos+n]), 16, 32)
	if err != nil || v > maxRune {
		p.fail("bad hex escape %q", string(p.src[p.pos:p.pos+n]))
	}
	p.pos += n
	return rune(v)
}

// class reads a character class after its '[' up to and including ']'.
func (p *reParser) class() []runeRange {
	neg := p.peek('^')
	if neg {
		p.pos++
	}
	var rs []runeRange
	for first := true; ; first = false {
		if !p.more() {
			p.fail("missing ']'")
		}
		c := p.src[p.pos]
		if c == ']' && !first {
			p.pos++
			break
		}
		if c == '[' && p.pos+1 < len(p.src) && (p.src[p.pos+1] == ':' || p.src[p.pos+1] == '=' || p.src[p.pos+1] == '.') {
			p.fail("POSIX classes like [[:alpha:]] are not supported")
		}
		lo, set := p.classAtom()
		if set != nil {
			rs = append(rs, set...)
			continue
		}
		if p.pos+1 < len(p.src) && p.src[p.pos] == '-' && p.src[p.pos+1] != ']' {
			p.pos++
			hi, set := p.classAtom()
			if set != nil {
				p.fail("a range cannot end in a class escape")
			}
			if hi < lo {
				p.fail("bad range %q-%q", lo, hi)
			}
			rs = append(rs, runeRange{lo, hi})
			continue
		}
		rs = append(rs, runeRange{lo, lo})
	}
	rs = normalize(rs)
	if neg {
		rs = complement(rs)
	}
	if len(rs) == 0 {
		p.fail("the class matches no character")
	}
	return rs
}

func (p *reParser) classAtom() (rune, []runeRange) {
	if p.src[p.pos] == '\\' {
		return p.escape(true)
	}
	p.pos++
	return p.src[p.pos-1], nil
}

// normalize sorts ranges and merges those that overlap or touch.
func normalize(rs []runeRange) []runeRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b runeRange) int { return int(a.lo - b.lo) })
	var out []runeRange
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && r.lo <= out[k].hi+1 {
			out[k].hi = max(out[k].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// complement is every code point not in rs (rs normalized).
func complement(rs []runeRange) []runeRange {
	var out []runeRange
	next := rune(0)
	for _, r := range normalize(rs) {
		if r.lo > next {
			out = append(out, runeRange{next, r.lo - 1})
		}
		next = r.hi + 1
	}
	if next <= maxRune {
		out = append(out, runeRange{next, maxRune})
	}
	return out
}

// jsonUnsafe are the characters a JSON string holds only as escapes (DEL
// too, as the string rule writes it).
var jsonUnsafe = []runeRange{{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0x7F, 0x7F}}

// jsonEscape is r as a JSON string writes it (one spelling).
func jsonEscape(r rune) string {
	switch r {
	case '"':
		return `\"`
	case '\\':
		return `\\`
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	}
	if r < 0x20 || r == 0x7F {
		return fmt.Sprintf(`\u%04x`, r)
	}
	return string(r)
}

type reEmitter struct {
	g    *grammar
	json bool
}

// seq writes n as a GBNF sequence (alternatives allowed at its top).
func (e reEmitter) seq(n *reNode) string {
	switch n.kind {
	case reCat:
		parts := make([]string, 0, len(n.subs))
		for _, s := range n.subs {
			if it := e.item(s); it != "" {
				parts = append(parts, it)
			}
		}
		if len(parts) == 0 {
			return `""`
		}
		return strings.Join(parts, " ")
	case reAlt:
		alts := make([]string, len(n.subs))
		for i, s := range n.subs {
			alts[i] = e.seq(s)
		}
		return strings.Join(alts, " | ")
	}
	if it := e.item(n); it != "" {
		return it
	}
	return `""`
}

// item writes n as one GBNF item ("" for what matches only the empty
// string by repetition zero times).
func (e reEmitter) item(n *reNode) string {
	switch n.kind {
	case reLit:
		if !e.json {
			return literal(string(n.runes))
		}
		var b strings.Builder
		for _, r := range n.runes {
			b.WriteString(jsonEscape(r))
		}
		return literal(b.String())
	case reSet:
		return e.set(n.set)
	case reText:
		return e.g.prim("char") + "*"
	case reCat:
		if len(n.subs) == 0 {
			return ""
		}
	case reRep:
		if n.hi == 0 {
			return ""
		}
		lo, inner := n.lo, n.subs[0]
		if n.hi < 0 && nullable(inner) {
			// llama.cpp refuses an unbounded repetition of what can be
			// empty (its expansion is left-recursive). (X)* is (X')*
			// where X' is X without the empty string.
			if inner = nonEmpty(inner); inner == nil {
				return ""
			}
			lo = 0
		}
		sub := e.item(inner)
		if sub == "" {
			return ""
		}
		if strings.HasSuffix(sub, "*") || strings.HasSuffix(sub, "+") || strings.HasSuffix(sub, "?") || strings.HasSuffix(sub, "}") {
			sub = "( " + sub + " )"
		}
		return e.g.repeat(sub, lo, n.hi)
	}
	return "( " + e.seq(n) + " )"
}

// set writes one character of rs; in a JSON string the characters JSON
// escapes become their escapes.
func (e reEmitter) set(rs []runeRange) string {
	if !e.json {
		return classText(rs)
	}
	safe := rs
	for _, u := range jsonUnsafe {
		safe = subtract(safe, u)
	}
	var alts []string
	if len(safe) > 0 {
		alts = append(alts, classText(safe))
	}
	// The escaped members: control characters as \u00XX (any hex case)
	// or their short escape, the others with one spelling each.
	var nibbles [2]strings.Builder // hex digits after \u000 and \u001
	var short strings.Builder      // letters after '\'
	for _, r := range rs {
		for _, u := range jsonUnsafe {
			for c := max(r.lo, u.lo); c <= min(r.hi, u.hi); c++ {
				switch {
				case c < 0x20:
					d := "0123456789abcdef"[c&0xF]
					nibbles[c>>4].WriteByte(d)
					if d >= 'a' {
						nibbles[c>>4].WriteByte(d - 'a' + 'A')
					}
					if e := jsonEscape(c); len(e) == 2 {
						short.WriteByte(e[1])
					}
				case c == 0x7F:
					alts = append(alts, `"\\u007" [fF]`)
				default:
					alts = append(alts, literal(jsonEscape(c)))
				}
			}
		}
	}
	for i, n := range nibbles {
		if n.Len() > 0 {
			alts = append(alts, fmt.Sprintf(`"\\u00%d" [%s]`, i, n.String()))
		}
	}
	if short.Len() > 0 {
		alts = append(alts, `"\\" [`+short.String()+`]`)
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return "( " + strings.Join(alts, " | ") + " )"
}

// subtract is rs without the code points of u.
func subtract(rs []runeRange, u runeRange) []runeRange {
	var out []runeRange
	for _, r := range rs {
		if r.hi < u.lo || r.lo > u.hi {
			out = append(out, r)
			continue
		}
		if r.lo < u.lo {
			out = append(out, runeRange{r.lo, u.lo - 1})
		}
		if r.hi > u.hi {
			out = append(out, runeRange{u.hi + 1, r.hi})
		}
	}
	return out
}

// classText writes rs as a GBNF class, negated when that is shorter.
func classText(rs []runeRange) string {
	var b strings.Builder
	b.WriteByte('[')
	if c := complement(rs); rs[len(rs)-1].hi == maxRune && len(c) > 0 && len(c) <= len(rs) {
		b.WriteByte('^')
		rs = c
	}
	for _, r := range rs {
		regexClassChar(&b, r.lo)
		if r.hi > r.lo {
			if r.hi > r.lo+1 {
				b.WriteByte('-')
			}
			regexClassChar(&b, r.hi)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// regexClassChar writes r in a class, with hex escapes for what is not a
// printable character (surrogates, non-characters, code points beyond the
// BMP).
func regexClassChar(b *strings.Builder, r rune) {
	switch {
	case r > 0xFFFF:
		fmt.Fprintf(b, `\U%08X`, r)
	case r >= utf8.RuneSelf && (0xD800 <= r && r <= 0xDFFF || !unicode.IsPrint(r)):
		fmt.Fprintf(b, `\u%04X`, r)
	default:
		classChar(b, r)
	}
}

// nullable reports whether n matches the empty string.
func nullable(n *reNode) bool {
	switch n.kind {
	case reLit, reSet:
		return false
	case reRep:
		return n.lo == 0 || n.hi == 0 || nullable(n.subs[0])
	case reAlt:
		return slices.ContainsFunc(n.subs, nullable)
	}
	for _, s := range n.subs { // reCat
		if !nullable(s) {
			return false
		}
	}
	return true // reCat of nullable items, reText
}

// nonEmpty is n without the empty string, nil if n matches nothing else.
func nonEmpty(n *reNode) *reNode {
	if !nullable(n) {
		return n
	}
	switch n.kind {
	case reRep:
		if n.hi == 0 {
			return nil
		}
		sub := nonEmpty(n.subs[0])
		if sub == nil {
			return nil
		}
		return &reNode{kind: reRep, subs: []*reNode{sub}, lo: 1, hi: n.hi}
	case reAlt:
		var alts []*reNode
		for _, s := range n.subs {
			if s = nonEmpty(s); s != nil {
				alts = append(alts, s)
			}
		}
		if len(alts) == 0 {
			return nil
		}
		return oneOf(alts)
	}
	// A concatenation of nullable items: the first non-empty one is item i,
	// the ones before it are empty, the ones after it anything.
	var alts []*reNode
	for i, s := range n.subs {
		if first := nonEmpty(s); first != nil {
			alts = append(alts, &reNode{kind: reCat, subs: slices.Concat([]*reNode{first}, n.subs[i+1:])})
		}
	}
	if len(alts) == 0 {
		return nil
	}
	return oneOf(alts)
}
