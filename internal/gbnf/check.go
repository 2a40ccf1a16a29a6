package gbnf

import (
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits Check adds to llama.cpp's own (see Check).
const (
	llamaMaxRepetition = 2000    // llama.cpp's MAX_REPETITION_THRESHOLD
	maxCheckRules      = 1 << 18 // rules after expanding repetitions and groups
	maxCheckElements   = 1 << 22 // llama.cpp grammar elements (8 bytes each)
	maxCheckNesting    = 1000    // parentheses in parentheses (llama.cpp's parser recurses)
	maxCheckDepth      = 20000   // depth of llama.cpp's (recursive) left recursion check
)

// Check reports whether text is a GBNF grammar llama.cpp's parser accepts
// with start rule root: the same syntax, every referenced rule defined,
// root defined. Its error names the problem and where (line:column), e.g.
// `grammar: line 2, column 14: expecting ::=`.
//
// It mirrors llama.cpp's parser (llama_grammar_parser::parse in
// src/llama-grammar.cpp) and the checks of llama_grammar_init_impl, so a
// user's grammar can be refused with a precise message before llama.cpp
// sees it (llama.cpp prints its parser's errors, with the whole grammar, to
// stderr, and tells its caller only that parsing failed). What llama.cpp
// accepts, quirks included: rules are "name ::= alternates" with names of
// [a-zA-Z0-9-]; a newline ends a rule except inside parentheses or right
// after "|"; "#" starts a comment; a rule may be defined twice (the last
// definition counts); "" and [] match the empty string; a multi-byte UTF-8
// lead byte takes the next bytes whatever they are (even a closing quote);
// `<[id]>` takes any id below 2^64 (llama.cpp keeps its low 32 bits);
// `<text>` is accepted as syntax only (llama.cpp also needs it to be exactly
// one token of the model's vocabulary); {m,n} with n > 2000 means {m,};
// m > 2000 is refused, and so is a repetition llama.cpp would expand into
// more than 2000 rules, counted its way; left recursion is refused where
// llama.cpp finds it.
//
// Check also refuses, unlike llama.cpp, grammars llama.cpp would not come
// back from or that would cost it too much: text with a NUL byte (llama.cpp
// reads a C string and would ignore the rest), {m,n} with n < m (llama.cpp
// loops until memory runs out), a start rule known only from a reference
// since overwritten (llama.cpp reads out of bounds), left recursion among
// the rules the start rule uses through rules that can match the empty
// string without an empty alternative (llama.cpp does not see it, and may
// build parse stacks until memory runs out), parentheses nested more than
// 1,000 deep and chains of more than 20,000 rules each able to start with
// the next (llama.cpp recurses there; 20,000 nested parentheses overflow
// its stack), and grammars that expand into more than 2^18 rules or 2^22
// elements (8 bytes each in llama.cpp).
//
// Not bounded: llama.cpp's start-up and matching can take time exponential
// in the size of a very ambiguous grammar (say a chain of rules each using
// the next twice, each able to match the empty string).
func Check(text, root string) error {
	if _, err := check(text, root); err != nil {
		return err
	}
	return nil
}

// checkKind says how llama.cpp takes a grammar Check refuses.
type checkKind uint8

const (
	llamaRefuses checkKind = iota // llama.cpp refuses it too
	llamaUnsafe                   // llama.cpp hangs, crashes, uses too much memory or sees other text
)

// checkError is Check's error: a message and where it applies.
type checkError struct {
	line, col int // 1-based; 0 when about the whole grammar
	msg       string
	kind      checkKind
}

func (e *checkError) Error() string {
	if e.line == 0 {
		return "grammar: " + e.msg
	}
	return fmt.Sprintf("grammar: line %d, column %d: %s", e.line, e.col, e.msg)
}

// checkInfo is what check learns about a grammar it accepts.
type checkInfo struct {
	tokens []string // the <text> tokens, which must each be one token of the vocabulary
}

// Kinds of items in a rule. An item stands for one or more of llama.cpp's
// grammar elements.
const (
	itemTerm   = iota // characters, a character class, ., a token: consumes input
	itemRef           // a rule reference
	itemAlt           // the separator of alternatives
	itemCopies        // extra copies of the items just before it ({m,n}, m > 1)
)

type item struct {
	kind uint8
	ref  uint32 // itemRef: the rule
	size uint64 // llama.cpp elements
	pos  int    // itemRef: where in the text
}

type checkRule struct {
	items []item // alternatives separated by itemAlt
	added bool
	pos   int // where it is defined
}

type symbol struct {
	name      string // the rule name; for a generated rule, the rule it is made for
	generated bool
	pos       int // first seen
}

type checker struct {
	text     string
	ids      map[string]uint32 // names of the text's rules
	syms     []symbol          // by id, as llama.cpp numbers them
	rules    []checkRule       // by id; as long as llama.cpp's rules vector
	elements uint64
	nesting  int // parentheses open
	tokens   []string
}

// check is Check with what the tests need to know.
func check(text, root string) (info checkInfo, err *checkError) {
	c := &checker{text: text, ids: map[string]uint32{}}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(*checkError)
			if !ok {
				panic(r)
			}
			err = e
		}
	}()
	if i := strings.IndexByte(text, 0); i >= 0 {
		c.failKind(i, llamaUnsafe, "NUL byte (llama.cpp would ignore the rest of the grammar)")
	}
	i := c.space(0, true)
	for c.at(i) != 0 {
		i = c.rule(i)
	}
	c.validate(root)
	return checkInfo{tokens: c.tokens}, nil
}

func (c *checker) at(i int) byte {
	if i < len(c.text) {
		return c.text[i]
	}
	return 0
}

func (c *checker) fail(pos int, format string, args ...any) {
	c.failKind(pos, llamaRefuses, format, args...)
}

// failKind stops the check with an error at byte offset pos of the text
// (pos < 0: about the whole grammar).
func (c *checker) failKind(pos int, kind checkKind, format string, args ...any) {
	e := &checkError{msg: fmt.Sprintf(format, args...), kind: kind}
	if pos >= 0 {
		e.line, e.col = lineCol(c.text, pos)
	}
	panic(e)
}

// lineCol is the 1-based line and column (in characters) of byte offset pos.
func lineCol(text string, pos int) (line, col int) {
	pos = min(pos, len(text))
	start := 0
	line = 1
	for i := 0; i < pos; i++ {
		if text[i] == '\n' || text[i] == '\r' && (i+1 >= len(text) || text[i+1] != '\n') {
			line++
			start = i + 1
		}
	}
	return line, utf8.RuneCountInString(text[start:pos]) + 1
}

// quoteName is a rule name for a message, shortened if long.
func quoteName(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return "'" + s + "'"
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func isWordChar(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || b == '-' || isDigit(b)
}

// space skips blanks and comments, and newlines if newlineOK (parse_space).
func (c *checker) space(i int, newlineOK bool) int {
	for {
		switch b := c.at(i); {
		case b == ' ' || b == '\t' || newlineOK && (b == '\r' || b == '\n'):
			i++
		case b == '#':
			for b := c.at(i); b != 0 && b != '\r' && b != '\n'; b = c.at(i) {
				i++
			}
		default:
			return i
		}
	}
}

// name is the end of the rule name at i (parse_name).
func (c *checker) name(i int) int { return c.run(i, isWordChar, "expecting name") }

// integer is the end of the digits at i (parse_int).
func (c *checker) integer(i int) int { return c.run(i, isDigit, "expecting integer") }

// run is the end of the bytes from i that in accepts, failing with msg
// if there is none.
func (c *checker) run(i int, in func(byte) bool, msg string) int {
	j := i
	for in(c.at(j)) {
		j++
	}
	if j == i {
		c.fail(i, "%s", msg)
	}
	return j
}

// uint64At is the value of the digits text[i:j], which must fit in 64 bits
// (std::stoull and std::stoul throw otherwise).
func (c *checker) uint64At(i, j int) uint64 {
	var v uint64
	for k := i; k < j; k++ {
		d := uint64(c.text[k] - '0')
		if v > (math.MaxUint64-d)/10 {
			c.fail(i, "number out of range")
		}
		v = v*10 + d
	}
	return v
}

// char is the end of the character (or escape) at i (parse_char).
func (c *checker) char(i int) int {
	switch b := c.at(i); {
	case b == '\\':
		switch e := c.at(i + 1); e {
		case 'x':
			return c.hex(i, 2)
		case 'u':
			return c.hex(i, 4)
		case 'U':
			return c.hex(i, 8)
		case 't', 'r', 'n', '\\', '"', '[', ']', '-':
			return i + 2
		case 0:
			c.fail(i, "unknown escape at the end of the grammar")
		default:
			if r, _ := utf8.DecodeRuneInString(c.text[i+1:]); r != utf8.RuneError && unicode.IsPrint(r) {
				c.fail(i, "unknown escape \\%c", r)
			}
			c.fail(i, "unknown escape (backslash then byte 0x%02X)", c.text[i+1])
		}
	case b != 0:
		// decode_utf8: the lead byte says how many bytes follow, and
		// llama.cpp takes them (if not the end) whatever they are.
		n := [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
		j := i + 1
		for ; j < i+n && c.at(j) != 0; j++ {
		}
		return j
	}
	c.fail(i, "unexpected end of input")
	return 0
}

// hex is the end of the escape at i (\x, \u or \U) of size hex digits.
func (c *checker) hex(i, size int) int {
	j := i + 2
	for ; j < i+2+size; j++ {
		b := c.at(j)
		if !('0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F') {
			c.fail(i, "expecting %d hex digits after \\%c", size, c.text[i+1])
		}
	}
	return j
}

// token is the end of the token (<[id]> or <text>) at i (parse_token).
func (c *checker) token(i int) int {
	if c.at(i) != '<' {
		c.fail(i, "expecting '<'")
	}
	j := i + 1
	if c.at(j) == '[' {
		j++
		end := c.integer(j)
		c.uint64At(j, end)
		j = end
		if c.at(j) != ']' {
			c.fail(j, "expecting ']'")
		}
		j++
		if c.at(j) != '>' {
			c.fail(j, "expecting '>'")
		}
		return j + 1
	}
	for c.at(j) != 0 && c.at(j) != '>' {
		j++
	}
	if c.at(j) != '>' {
		c.fail(j, "expecting '>'")
	}
	c.tokens = append(c.tokens, c.text[i:j+1])
	return j + 1
}

// symbolID is the id of the rule named name (get_symbol_id).
func (c *checker) symbolID(name string, pos int) uint32 {
	if id, ok := c.ids[name]; ok {
		return id
	}
	id := c.newSymbol(symbol{name: name, pos: pos})
	c.ids[name] = id
	return id
}

func (c *checker) newSymbol(s symbol) uint32 {
	if len(c.syms) >= maxCheckRules {
		c.failKind(s.pos, llamaUnsafe, "the grammar expands into more than %d rules", maxCheckRules)
	}
	c.syms = append(c.syms, s)
	return uint32(len(c.syms) - 1)
}

// addRule sets the rule of id (add_rule).
func (c *checker) addRule(id uint32, items []item, pos int) {
	if int(id) >= len(c.rules) {
		c.rules = append(c.rules, make([]checkRule, int(id)+1-len(c.rules))...)
	}
	c.rules[id] = checkRule{items: items, added: true, pos: pos}
	c.elements++ // the end of the rule
	for _, it := range items {
		c.elements += it.size
	}
	if c.elements > maxCheckElements {
		c.failKind(pos, llamaUnsafe, "the grammar expands into more than %d elements", maxCheckElements)
	}
}

// rule parses one rule definition at i (parse_rule).
func (c *checker) rule(i int) int {
	end := c.name(i)
	j := c.space(end, false)
	id := c.symbolID(c.text[i:end], i)
	if !strings.HasPrefix(c.text[j:], "::=") {
		c.fail(j, "expecting ::=")
	}
	j = c.space(j+3, true)
	j = c.alternates(j, c.text[i:end], id, false, i)
	switch c.at(j) {
	case '\r':
		j++
		if c.at(j) == '\n' {
			j++
		}
	case '\n':
		j++
	case 0:
	default:
		c.fail(j, "expecting newline or end")
	}
	return c.space(j, true)
}

// alternates parses the alternatives of rule id at i (parse_alternates).
func (c *checker) alternates(i int, ruleName string, id uint32, nested bool, pos int) int {
	var items []item
	i = c.sequence(i, ruleName, &items, nested)
	for c.at(i) == '|' {
		items = append(items, item{kind: itemAlt, size: 1})
		i = c.space(i+1, true)
		i = c.sequence(i, ruleName, &items, nested)
	}
	c.addRule(id, items, pos)
	return i
}

// sequence parses one alternative at i into *items (parse_sequence).
func (c *checker) sequence(i int, ruleName string, items *[]item, nested bool) int {
	last := len(*items) // where the last symbol starts
	nPrev := uint64(1)  // how many rules that symbol counts for

	// repeat applies {min,max} (max math.MaxUint64: no maximum) to the last
	// symbol; op is where the operator is.
	repeat := func(op int, min, max uint64) {
		noMax := max == math.MaxUint64
		if last == len(*items) {
			c.fail(op, "expecting an item before %c", c.text[op])
		}
		total := uint64(1)
		if !noMax && max > 0 {
			total = max
		} else if min > 0 {
			total = min
		}
		if nPrev*total > llamaMaxRepetition {
			c.fail(op, "the repetition expands into more than %d rules (llama.cpp's limit)", llamaMaxRepetition)
		}
		if !noMax && max < min {
			c.failKind(op, llamaUnsafe, "repetition {%d,%d} has its maximum below its minimum", min, max)
		}
		prev := append([]item(nil), (*items)[last:]...)
		var prevSize uint64
		for _, it := range prev {
			prevSize += it.size
		}
		if min == 0 {
			*items = (*items)[:last]
		} else if min > 1 {
			*items = append(*items, item{kind: itemCopies, size: prevSize * (min - 1)})
		}
		nOpt := uint64(1)
		if !noMax {
			nOpt = max - min
		}
		var lastRec uint32
		for k := uint64(0); k < nOpt; k++ {
			id := c.newSymbol(symbol{name: ruleName, generated: true, pos: op})
			rec := append(make([]item, 0, len(prev)+2), prev...)
			if noMax {
				rec = append(rec, item{kind: itemRef, ref: id, size: 1, pos: op})
			} else if k > 0 {
				rec = append(rec, item{kind: itemRef, ref: lastRec, size: 1, pos: op})
			}
			rec = append(rec, item{kind: itemAlt, size: 1})
			c.addRule(id, rec, op)
			lastRec = id
		}
		if nOpt > 0 {
			*items = append(*items, item{kind: itemRef, ref: lastRec, size: 1, pos: op})
		}
		nPrev *= total
	}

	for {
		switch b := c.at(i); {
		case b == '"': // literal string
			start := i
			i++
			last, nPrev = len(*items), 1
			var n uint64
			for c.at(i) != '"' {
				if c.at(i) == 0 {
					c.fail(start, "unterminated string (unexpected end of input)")
				}
				i = c.char(i)
				n++
			}
			if n > 0 {
				*items = append(*items, item{kind: itemTerm, size: n})
			}
			i = c.space(i+1, nested)
		case b == '[': // character class
			start := i
			i++
			if c.at(i) == '^' {
				i++
			}
			last, nPrev = len(*items), 1
			var n uint64
			for c.at(i) != ']' {
				if c.at(i) == 0 {
					c.fail(start, "unterminated character class (unexpected end of input)")
				}
				i = c.char(i)
				n++
				if c.at(i) == '-' && c.at(i+1) != ']' {
					if c.at(i+1) == 0 {
						c.fail(start, "unterminated character class (unexpected end of input)")
					}
					i = c.char(i + 1)
					n++
				}
			}
			if n > 0 {
				*items = append(*items, item{kind: itemTerm, size: n})
			}
			i = c.space(i+1, nested)
		case b == '<' || b == '!': // token
			if b == '!' {
				i++
			}
			i = c.token(i)
			last, nPrev = len(*items), 1
			*items = append(*items, item{kind: itemTerm, size: 1})
			i = c.space(i, nested)
		case isWordChar(b): // rule reference
			end := c.name(i)
			id := c.symbolID(c.text[i:end], i)
			last, nPrev = len(*items), 1
			*items = append(*items, item{kind: itemRef, ref: id, size: 1, pos: i})
			i = c.space(end, nested)
		case b == '(': // group
			start := i
			if c.nesting++; c.nesting > maxCheckNesting {
				c.failKind(start, llamaUnsafe, "parentheses nested more than %d deep", maxCheckNesting)
			}
			i = c.space(i+1, true)
			before := len(c.syms)
			id := c.newSymbol(symbol{name: ruleName, generated: true, pos: start})
			i = c.alternates(i, ruleName, id, true, start)
			c.nesting--
			nPrev = uint64(max(1, len(c.syms)-before))
			last = len(*items)
			*items = append(*items, item{kind: itemRef, ref: id, size: 1, pos: start})
			if c.at(i) != ')' {
				c.fail(i, "expecting ')'")
			}
			i = c.space(i+1, nested)
		case b == '.': // any character
			last, nPrev = len(*items), 1
			*items = append(*items, item{kind: itemTerm, size: 1})
			i = c.space(i+1, nested)
		case b == '*':
			op := i
			i = c.space(i+1, nested)
			repeat(op, 0, math.MaxUint64)
		case b == '+':
			op := i
			i = c.space(i+1, nested)
			repeat(op, 1, math.MaxUint64)
		case b == '?':
			op := i
			i = c.space(i+1, nested)
			repeat(op, 0, 1)
		case b == '{':
			op := i
			i = c.space(i+1, nested)
			if !isDigit(c.at(i)) {
				c.fail(i, "expecting an integer")
			}
			end := c.integer(i)
			min := c.uint64At(i, end)
			i = c.space(end, nested)
			max := uint64(math.MaxUint64)
			switch c.at(i) {
			case '}':
				max = min
				i = c.space(i+1, nested)
			case ',':
				i = c.space(i+1, nested)
				if isDigit(c.at(i)) {
					end := c.integer(i)
					max = c.uint64At(i, end)
					i = c.space(end, nested)
				}
				if c.at(i) != '}' {
					c.fail(i, "expecting '}'")
				}
				i = c.space(i+1, nested)
			default:
				c.fail(i, "expecting ',' or '}'")
			}
			if min > llamaMaxRepetition {
				c.fail(op, "repetition of %d times; llama.cpp's limit is %d", min, llamaMaxRepetition)
			}
			if max != math.MaxUint64 && max > llamaMaxRepetition {
				max = math.MaxUint64 // llama.cpp reads a large maximum as none
			}
			repeat(op, min, max)
		default:
			return i
		}
	}
}

// validate does the checks after parsing: llama_grammar_parser::parse's
// (every rule defined), llama_grammar_init_impl's (some rule, the start
// rule, no left recursion) and Check's own.
func (c *checker) validate(root string) {
	n := len(c.rules)
	for r := range c.rules {
		if !c.rules[r].added {
			c.fail(c.syms[r].pos, "undefined rule %s", quoteName(c.syms[r].name))
		}
		for _, it := range c.rules[r].items {
			if it.kind == itemRef && (int(it.ref) >= n || !c.rules[it.ref].added) {
				c.fail(it.pos, "undefined rule %s", quoteName(c.syms[it.ref].name))
			}
		}
	}
	if n == 0 {
		c.fail(-1, "no rules")
	}
	start, ok := c.lookup(root)
	if !ok {
		c.fail(-1, "no rule %s (the start rule)", quoteName(root))
	}
	if int(start) >= n {
		// Only referenced, by a rule defined again since: llama.cpp would
		// start from a rule out of bounds.
		c.failKind(c.syms[start].pos, llamaUnsafe, "undefined rule %s (the start rule)", quoteName(root))
	}

	// llama.cpp's left recursion check: a rule reference counts when only
	// references to rules with an empty alternative come before it.
	mayBeEmpty := make([]bool, n)
	for r := range c.rules {
		empty := true
		for _, it := range c.rules[r].items {
			if it.kind == itemAlt {
				if empty {
					break
				}
				empty = true
			} else {
				empty = false
			}
		}
		mayBeEmpty[r] = empty
	}
	cycle, depth := c.leftCycle(nil, mayBeEmpty)
	if cycle != nil {
		c.leftRecursion(cycle, llamaRefuses)
	}
	if depth > maxCheckDepth {
		c.failKind(-1, llamaUnsafe, "a chain of %d rules each able to start with the next, more than %d", depth, maxCheckDepth)
	}

	// Check's own: the same through any rule that can match the empty
	// string, among the rules the start rule uses.
	if cycle, _ := c.leftCycle(c.reachable(start), c.nullable()); cycle != nil {
		c.leftRecursion(cycle, llamaUnsafe)
	}
}

// lookup is the id of rule name, generated ones included (named as
// llama.cpp names them: rule_id).
func (c *checker) lookup(name string) (uint32, bool) {
	if id, ok := c.ids[name]; ok {
		return id, true
	}
	base, num, ok := strings.Cut(name, "_")
	if !ok {
		return 0, false
	}
	for id, s := range c.syms {
		if s.generated && s.name == base && fmt.Sprint(id) == num {
			return uint32(id), true
		}
	}
	return 0, false
}

// reachable marks the rules rule start uses, directly or not.
func (c *checker) reachable(start uint32) []bool {
	seen := make([]bool, len(c.rules))
	seen[start] = true
	todo := []uint32{start}
	for len(todo) > 0 {
		r := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, it := range c.rules[r].items {
			if it.kind == itemRef && !seen[it.ref] {
				seen[it.ref] = true
				todo = append(todo, it.ref)
			}
		}
	}
	return seen
}

// nullable marks the rules that can match the empty string.
func (c *checker) nullable() []bool {
	n := len(c.rules)
	null := make([]bool, n)
	type alt struct {
		rule uint32
		left int // references to rules not yet known nullable
	}
	var alts []alt
	users := make([][]int, n) // alternatives (index in alts) per referenced rule, once per reference
	var todo []uint32
	for r := range c.rules {
		items := c.rules[r].items
		for k := 0; k <= len(items); {
			a := alt{rule: uint32(r)}
			var refs []uint32
			term := false
			for ; k < len(items) && items[k].kind != itemAlt; k++ {
				switch items[k].kind {
				case itemTerm:
					term = true
				case itemRef:
					a.left++
					refs = append(refs, items[k].ref)
				}
			}
			k++
			if term {
				continue
			}
			if a.left == 0 {
				if !null[r] {
					null[r] = true
					todo = append(todo, uint32(r))
				}
				continue
			}
			for _, ref := range refs {
				users[ref] = append(users[ref], len(alts))
			}
			alts = append(alts, a)
		}
	}
	for len(todo) > 0 {
		r := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, a := range users[r] {
			alts[a].left--
			if p := alts[a].rule; alts[a].left == 0 && !null[p] {
				null[p] = true
				todo = append(todo, p)
			}
		}
	}
	return null
}

// leftCycle finds a cycle of rules, among those in (nil: all), where each
// rule references the next with only references to rules marked skip before
// it in an alternative. It returns the rules of the cycle, or nil and the
// length of the longest chain of such references.
func (c *checker) leftCycle(in, skip []bool) (cycle []uint32, depth int) {
	n := len(c.rules)
	edges := make([][]uint32, n)
	for r := range c.rules {
		if in != nil && !in[r] {
			continue
		}
		open := true
		for _, it := range c.rules[r].items {
			switch it.kind {
			case itemAlt:
				open = true
			case itemTerm:
				open = false
			case itemRef:
				if open {
					edges[r] = append(edges[r], it.ref)
					open = skip[it.ref]
				}
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, n)
	longest := make([]int, n) // of the chains from a rule, once black
	type frame struct {
		rule uint32
		next int
	}
	for s := range n {
		if color[s] != white || in != nil && !in[s] {
			continue
		}
		stack := []frame{{rule: uint32(s)}}
		color[s] = grey
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.next == len(edges[f.rule]) {
				color[f.rule] = black
				l := 1
				for _, to := range edges[f.rule] {
					l = max(l, longest[to]+1)
				}
				longest[f.rule] = l
				depth = max(depth, l)
				stack = stack[:len(stack)-1]
				continue
			}
			to := edges[f.rule][f.next]
			f.next++
			switch color[to] {
			case grey:
				for k := len(stack) - 1; k >= 0; k-- {
					cycle = append(cycle, stack[k].rule)
					if stack[k].rule == to {
						break
					}
				}
				for a, b := 0, len(cycle)-1; a < b; a, b = a+1, b-1 {
					cycle[a], cycle[b] = cycle[b], cycle[a]
				}
				return cycle, depth
			case white:
				color[to] = grey
				stack = append(stack, frame{rule: to})
			}
		}
	}
	return nil, depth
}

// leftRecursion fails with the left recursion of cycle, named by the
// grammar's rules (a generated rule by the rule it is part of).
func (c *checker) leftRecursion(cycle []uint32, kind checkKind) {
	var names []string
	for _, r := range cycle {
		name := quoteName(c.syms[r].name)
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
		}
	}
	if len(names) > 1 && names[0] == names[len(names)-1] {
		names = names[:len(names)-1]
	}
	if len(names) == 1 {
		c.failKind(c.rules[cycle[0]].pos, kind, "rule %s is left-recursive (it can start with itself)", names[0])
	}
	c.failKind(c.rules[cycle[0]].pos, kind, "left recursion: %s -> %s", strings.Join(names, " -> "), names[0])
}
