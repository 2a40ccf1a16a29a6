package gbnf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FromSchema converts a JSON Schema (the bytes of the schema object) to a
// GBNF grammar with root rule "root" whose language is exactly the JSON texts
// valid against the schema (within the supported subset, see the package
// doc). Errors are user-facing messages that name the unsupported keyword or
// bad value and its location as a JSON pointer, e.g.
// `json_schema: unsupported keyword "pattern" at #/properties/zip`.
func FromSchema(schema []byte) (string, error) {
	g := newGrammar()
	if err := g.addSchema(schema, "root"); err != nil {
		return "", err
	}
	return g.finish("json_schema: the schema")
}

// addSchema converts schema into rules of g whose start is the rule name
// (reserved; a "#" $ref refers to it).
func (g *grammar) addSchema(schema []byte, name string) (err error) {
	if len(schema) > maxSchema {
		return fmt.Errorf("json_schema: the schema is larger than %d KiB", maxSchema>>10)
	}
	root, perr := parseJSON(schema)
	if perr != nil {
		return fmt.Errorf("json_schema: invalid JSON: %v", perr)
	}
	if root.kind != 'o' && root.kind != 'b' {
		return fmt.Errorf("json_schema: the schema must be a JSON object or a boolean, not %s", kindName(root))
	}
	c := &converter{g: g, root: root, rootName: name, defs: map[string]string{}}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(schemaError)
			if !ok {
				panic(r)
			}
			err = e
		}
	}()
	if sym := c.schema(root, "#", name, name); sym != name {
		c.g.define(name, sym)
	}
	c.checkCycles()
	return nil
}

// finish checks g against the limits and writes it; what names the input
// in errors.
func (g *grammar) finish(what string) (string, error) {
	if n := len(g.order); n > maxRules {
		return "", fmt.Errorf("%s needs %d grammar rules, more than the limit of %d", what, n, maxRules)
	}
	if g.reps > maxRepeatTotal {
		return "", fmt.Errorf("%s's repetition counts add up to %d, more than the limit of %d", what, g.reps, maxRepeatTotal)
	}
	text := g.String()
	if len(text) > maxGrammar {
		return "", fmt.Errorf("%s needs a grammar of %d bytes, more than the limit of %d KiB", what, len(text), maxGrammar>>10)
	}
	return text, nil
}

// schemaError is a user-facing conversion error; converter methods panic with
// it and FromSchema recovers it.
type schemaError string

func (e schemaError) Error() string { return string(e) }

// Keyword sets.
var (
	annotations = set("description", "title", "$schema", "$id", "default", "examples",
		"strict", "$comment", "deprecated", "readOnly", "writeOnly")
	objectWords = set("properties", "required", "additionalProperties")
	arrayWords  = set("items", "prefixItems", "minItems", "maxItems")
	stringWords = set("minLength", "maxLength", "format", "pattern")
	combinators = []string{"$ref", "anyOf", "oneOf", "allOf"}
	knownTypes  = []string{"object", "array", "string", "number", "integer", "boolean", "null"}
	formats     = map[string]string{"date": "date-string", "time": "time-string", "date-time": "date-time-string", "uuid": "uuid"}
)

func set(words ...string) map[string]bool {
	m := map[string]bool{}
	for _, w := range words {
		m[w] = true
	}
	return m
}

// converter turns schema nodes into rules of g.
type converter struct {
	g        *grammar
	root     *node
	rootName string            // the rule of the schema's root ("#")
	defs     map[string]string // $ref -> rule name, for definitions visited
	edges    []edge            // refs met before any input is consumed
}

// edge says rule from may begin with rule to, through ref at path.
type edge struct{ from, to, ref, path string }

func (c *converter) fail(path, format string, args ...any) {
	panic(schemaError(fmt.Sprintf("json_schema: "+format, args...) + " at " + path))
}

// fresh reserves a rule name, stopping runaway schemas early.
func (c *converter) fresh(hint, path string) string {
	if len(c.g.names) > 4*maxRules {
		c.fail(path, "the schema needs more than the limit of %d grammar rules", maxRules)
	}
	return c.g.fresh(hint)
}

// rule defines name as body and returns name.
func (c *converter) rule(name, body string) string {
	c.g.define(name, body)
	return name
}

// schema returns a symbol matching the values valid against n (at path). If
// it needs a new rule, that rule is name (reserved by the caller). lead is
// the rule whose text would begin with this value, or "" if some input comes
// first; it is used to find left recursion through $ref.
func (c *converter) schema(n *node, path, name, lead string) string {
	if n.kind == 'b' {
		if !n.b {
			c.fail(path, "schema false matches no value")
		}
		return c.g.prim("value")
	}
	if n.kind != 'o' {
		c.fail(path, "a schema must be a JSON object or a boolean, not %s", kindName(n))
	}
	var combinator, validation []string
	for _, k := range n.keys {
		switch {
		case annotations[k]:
		case k == "$defs" || k == "definitions":
			if path != "#" {
				c.fail(path, "%q is supported only at the schema root, not", k)
			}
		case slices.Contains(combinators, k):
			combinator = append(combinator, k)
		case k == "type" || k == "enum" || k == "const" || objectWords[k] || arrayWords[k] || stringWords[k]:
			validation = append(validation, k)
		default:
			c.fail(path, "unsupported keyword %q", k)
		}
	}
	if len(combinator) > 0 {
		if len(combinator) > 1 {
			c.fail(path, "keyword %q cannot be combined with %q", combinator[1], combinator[0])
		}
		if len(validation) > 0 {
			c.fail(path, "keyword %q cannot be combined with %q", validation[0], combinator[0])
		}
		return c.combinator(n, combinator[0], path, name, lead)
	}
	types := c.types(n, path)
	if n.get("enum") != nil || n.get("const") != nil {
		for _, k := range validation {
			if k != "type" && k != "enum" && k != "const" {
				word := "enum"
				if n.get("enum") == nil {
					word = "const"
				}
				c.fail(path, "keyword %q cannot be combined with %q", k, word)
			}
		}
		return c.enum(n, types, path, name)
	}
	if types == nil {
		for _, k := range validation {
			switch {
			case objectWords[k] && !slices.Contains(types, "object"):
				types = append(types, "object")
			case arrayWords[k] && !slices.Contains(types, "array"):
				types = append(types, "array")
			case stringWords[k] && !slices.Contains(types, "string"):
				types = append(types, "string")
			}
		}
		if types == nil {
			return c.g.prim("value")
		}
	}
	var alts []string
	for _, t := range types {
		if t == "integer" && slices.Contains(types, "number") {
			continue // number already includes integer
		}
		sub := name
		if len(types) > 1 {
			sub = c.fresh(name+"-"+t, path)
		}
		switch t {
		case "object":
			alts = append(alts, c.object(n, path, sub))
		case "array":
			alts = append(alts, c.array(n, path, sub))
		case "string":
			alts = append(alts, c.str(n, path, sub))
		default: // number, integer, boolean, null
			alts = append(alts, c.g.prim(t))
		}
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return c.rule(name, strings.Join(alts, " | "))
}

// types reads the type keyword: nil if absent.
func (c *converter) types(n *node, path string) []string {
	t := n.get("type")
	if t == nil {
		return nil
	}
	var list []*node
	switch t.kind {
	case 's':
		list = []*node{t}
	case 'a':
		list = t.elems
		if len(list) == 0 {
			c.fail(path, `"type" must not be an empty list`)
		}
	default:
		c.fail(path, `"type" must be a string or a list of strings`)
	}
	var types []string
	for _, e := range list {
		if e.kind != 's' {
			c.fail(path, `"type" must be a string or a list of strings`)
		}
		if !slices.Contains(knownTypes, e.str) {
			c.fail(path, "unknown type %q", e.str)
		}
		if !slices.Contains(types, e.str) {
			types = append(types, e.str)
		}
	}
	return types
}

// combinator handles $ref, anyOf, oneOf and allOf.
func (c *converter) combinator(n *node, word, path, name, lead string) string {
	v := n.get(word)
	if word == "$ref" {
		if v.kind != 's' {
			c.fail(path, `"$ref" must be a string`)
		}
		return c.ref(v.str, path, lead)
	}
	if v.kind != 'a' || len(v.elems) == 0 {
		c.fail(path, "%q must be a non-empty list of schemas", word)
	}
	if word == "allOf" {
		if len(v.elems) != 1 {
			c.fail(path, `"allOf" is supported only with exactly one schema, not %d`, len(v.elems))
		}
		return c.schema(v.elems[0], path+"/allOf/0", name, lead)
	}
	var alts []string
	for i, e := range v.elems {
		if e.kind == 'b' && !e.b {
			continue // matches nothing
		}
		p := fmt.Sprintf("%s/%s/%d", path, word, i)
		sym := c.schema(e, p, c.fresh(fmt.Sprintf("%s-%d", name, i), p), lead)
		if !slices.Contains(alts, sym) {
			alts = append(alts, sym)
		}
	}
	switch len(alts) {
	case 0:
		c.fail(path, "no schema of %q matches any value", word)
	case 1:
		return alts[0]
	}
	return c.rule(name, strings.Join(alts, " | "))
}

// ref resolves a $ref to the rule of its definition, converting the
// definition the first time.
func (c *converter) ref(ref, path, lead string) string {
	target, defPath, hint := c.root, "#", "root"
	if ref != "#" {
		frag := ref
		if strings.Contains(frag, "%") {
			if u, err := url.PathUnescape(frag); err == nil {
				frag = u
			}
		}
		var ok bool
		for _, prefix := range []string{"#/$defs/", "#/definitions/"} {
			if rest, found := strings.CutPrefix(frag, prefix); found && rest != "" && !strings.Contains(rest, "/") {
				defName := strings.NewReplacer("~1", "/", "~0", "~").Replace(rest)
				defs := c.root.get(prefix[2 : len(prefix)-1])
				if c.root.kind != 'o' || defs == nil || defs.kind != 'o' || defs.get(defName) == nil {
					c.fail(path, "$ref %q points to no definition", ref)
				}
				target, defPath, hint, ok = defs.get(defName), prefix[:len(prefix)-1]+"/"+rest, "def-"+defName, true
			}
		}
		if !ok {
			c.fail(path, `unsupported $ref %q (only "#", "#/$defs/NAME" and "#/definitions/NAME" are supported)`, ref)
		}
	}
	name, seen := c.defs[defPath]
	if defPath == "#" {
		name, seen = c.rootName, true
	}
	if !seen {
		name = c.fresh(hint, path)
		c.defs[defPath] = name
		if sym := c.schema(target, defPath, name, name); sym != name {
			c.rule(name, sym)
		}
	}
	if lead != "" {
		c.edges = append(c.edges, edge{from: lead, to: name, ref: ref, path: path})
	}
	return name
}

// checkCycles refuses a definition that can begin with itself (left
// recursion, which llama.cpp rejects): a cycle in the graph of edges, found
// by one depth-first search.
func (c *converter) checkCycles() {
	next := map[string][]edge{}
	for _, e := range c.edges {
		next[e.from] = append(next[e.from], e)
	}
	const onPath, done = 1, 2
	state := map[string]int{}
	var visit func(rule string)
	visit = func(rule string) {
		state[rule] = onPath
		for _, e := range next[rule] {
			switch state[e.to] {
			case onPath:
				c.fail(e.path, "$ref %q recurses without an object or array in between", e.ref)
			case 0:
				visit(e.to)
			}
		}
		state[rule] = done
	}
	for _, e := range c.edges {
		if state[e.from] == 0 {
			visit(e.from)
		}
	}
}

// enum handles enum and const, keeping the values allowed by types.
func (c *converter) enum(n *node, types []string, path, name string) string {
	var values []*node
	if e := n.get("enum"); e != nil {
		if e.kind != 'a' || len(e.elems) == 0 {
			c.fail(path, `"enum" must be a non-empty list`)
		}
		values = e.elems
	}
	if k := n.get("const"); k != nil {
		if values != nil && !slices.ContainsFunc(values, func(v *node) bool { return text(v) == text(k) }) {
			c.fail(path, `"const" is not one of the "enum" values`)
		}
		values = []*node{k}
	}
	var alts []string
	for _, v := range values {
		t := v.jsonType()
		if types != nil && !slices.Contains(types, t) && !(t == "integer" && slices.Contains(types, "number")) {
			continue
		}
		if lit := literal(text(v)); !slices.Contains(alts, lit) {
			alts = append(alts, lit)
		}
	}
	if len(alts) == 0 {
		c.fail(path, `no value of "enum"/"const" has an allowed "type"`)
	}
	return c.rule(name, strings.Join(alts, " | "))
}

// text is v as compact JSON.
func text(v *node) string {
	var b strings.Builder
	v.compact(&b)
	return b.String()
}

// member is one property of an object rule.
type member struct {
	kv       string // rule matching `"name": value` and the space after
	required bool
	extra    bool // additional properties: any number of them
}

// object converts the object keywords of n.
func (c *converter) object(n *node, path, name string) string {
	props, addl := n.get("properties"), n.get("additionalProperties")
	if props != nil && props.kind != 'o' {
		c.fail(path, `"properties" must be an object`)
	}
	var required []string
	if r := n.get("required"); r != nil {
		if r.kind != 'a' {
			c.fail(path, `"required" must be a list of strings`)
		}
		for _, e := range r.elems {
			if e.kind != 's' {
				c.fail(path, `"required" must be a list of strings`)
			}
			if props == nil || props.get(e.str) == nil {
				c.fail(path, "required property %q is not listed in \"properties\"", e.str)
			}
			required = append(required, e.str)
		}
	}
	if props == nil && (addl == nil || addl.kind == 'b' && addl.b) {
		return c.g.prim("object")
	}
	c.g.prim("space")
	var members []member
	var names []string // every listed name, for keeping extra names apart
	if props != nil {
		for i, k := range props.keys {
			v := props.vals[i]
			names = append(names, k)
			req := slices.Contains(required, k)
			p := path + "/properties/" + pointerEscape(k)
			if v.kind == 'b' && !v.b {
				if req {
					c.fail(p, "required property %q has schema false", k)
				}
				continue // may not appear
			}
			val := c.schema(v, p, c.fresh(name+"-"+k, p), "")
			kv := c.rule(c.fresh(name+"-"+k+"-kv", p), literal(quote(k))+` space ":" space `+val+" space")
			members = append(members, member{kv: kv, required: req})
		}
	}
	if addl != nil && !(addl.kind == 'b' && !addl.b) {
		p := path + "/additionalProperties"
		val := c.schema(addl, p, c.fresh(name+"-extra", p), "")
		key := c.g.prim("string")
		if len(names) > 0 {
			key = c.rule(c.fresh(name+"-extra-key", p), notStrings(names, c.g.prim("char")))
		}
		kv := c.rule(c.fresh(name+"-extra-kv", p), key+` space ":" space `+val+" space")
		members = append(members, member{kv: kv, extra: true})
	}
	return c.rule(name, `"{" space `+c.members(members, name, path)+`"}"`)
}

// members writes the members of an object in order: required ones always,
// optional ones maybe, extra ones any number of times at the end, with
// commas between them. The text ends with a space if not empty.
//
// After the first member present, each later member i is the unit
// `"," space kv` (required), `( "," space kv )?` (optional) or
// `( "," space kv )*` (extra). The first member present is some optional
// member before the first required one, or the first required one, so the
// members are the alternatives kv_j rest(j+1), with rest(i) the units from i
// on. With several alternatives, rest(i) becomes a chain of rules so the
// grammar stays linear in the number of properties.
func (c *converter) members(ms []member, name, path string) string {
	if len(ms) == 0 {
		return ""
	}
	units := make([]string, len(ms))
	for i, m := range ms {
		switch {
		case m.extra:
			units[i] = `( "," space ` + m.kv + " )*"
		case m.required:
			units[i] = `"," space ` + m.kv
		default:
			units[i] = `( "," space ` + m.kv + " )?"
		}
	}
	first := len(ms) // index of the first required member
	for i, m := range ms {
		if m.required {
			first = i
			break
		}
	}
	starts := first + 1
	if first == len(ms) {
		starts = len(ms)
	}
	rest := func(i int) string { return strings.Join(units[i:], " ") }
	if starts > 1 {
		refs := make([]string, len(ms)+1)
		for i := len(ms) - 1; i >= 1; i-- {
			body := units[i]
			if refs[i+1] != "" {
				body += " " + refs[i+1]
			}
			refs[i] = c.rule(c.fresh(fmt.Sprintf("%s-rest%d", name, i), path), body)
		}
		rest = func(i int) string { return refs[i] }
	}
	var alts []string
	for j := 0; j < starts; j++ {
		alt := ms[j].kv
		if ms[j].extra {
			alt += " " + units[j]
		}
		if j+1 < len(ms) {
			alt += " " + rest(j+1)
		}
		alts = append(alts, alt)
	}
	if first == len(ms) {
		alts = append(alts, "") // no member at all
	}
	if len(alts) == 1 {
		return alts[0] + " "
	}
	return group(alts) + " "
}

// notStrings is a rule body matching a JSON string other than the given
// ones (compared in their canonical JSON spelling), built on a trie of the
// spellings' characters (an escape sequence counts as one character).
func notStrings(words []string, char string) string {
	type trie struct {
		units    []string // child order
		children map[string]*trie
		end      bool
	}
	root := &trie{children: map[string]*trie{}}
	for _, w := range words {
		t := root
		for _, u := range jsonUnits(w) {
			next := t.children[u]
			if next == nil {
				next = &trie{children: map[string]*trie{}}
				t.children[u] = next
				t.units = append(t.units, u)
			}
			t = next
		}
		t.end = true
	}
	var visit func(t *trie) string
	visit = func(t *trie) string {
		var alts []string
		if !t.end {
			alts = append(alts, "")
		}
		var plain, escaped strings.Builder
		for _, u := range t.units {
			sub := visit(t.children[u])
			alts = append(alts, literal(u)+" "+sub)
			switch {
			case u[0] != '\\':
				for _, r := range u {
					classChar(&plain, r)
				}
			case len(u) == 2:
				escaped.WriteByte(u[1])
			}
		}
		other := `[^"\\\x7F\x00-\x1F` + plain.String() + `]`
		var esc strings.Builder
		for _, e := range `"\/bfnrt` {
			if !strings.ContainsRune(escaped.String(), e) {
				classChar(&esc, e)
			}
		}
		if esc.Len() > 0 {
			other += ` | "\\" ([` + esc.String() + `] | "u" [0-9a-fA-F]{4})`
		} else {
			other += ` | "\\" "u" [0-9a-fA-F]{4}`
		}
		alts = append(alts, "("+other+") "+char+"*")
		return group(alts)
	}
	return `"\"" ` + visit(root) + ` "\""`
}

// jsonUnits splits the canonical JSON spelling of s (without quotes) into
// characters, an escape sequence being one.
func jsonUnits(s string) []string {
	q := quote(s)
	q = q[1 : len(q)-1]
	var units []string
	for len(q) > 0 {
		_, n := utf8.DecodeRuneInString(q)
		if q[0] == '\\' {
			n = 2
			if q[1] == 'u' {
				n = 6
			}
		}
		units = append(units, q[:n])
		q = q[n:]
	}
	return units
}

// array converts the array keywords of n.
func (c *converter) array(n *node, path, name string) string {
	lo, hi := c.count(n, "minItems", path), c.count(n, "maxItems", path)
	var prefix []string
	if p := n.get("prefixItems"); p != nil {
		if p.kind != 'a' {
			c.fail(path, `"prefixItems" must be a list of schemas`)
		}
		for i, e := range p.elems {
			if e.kind == 'b' && !e.b {
				hi = minBound(hi, i) // no item i, so no later ones
				break
			}
			pp := fmt.Sprintf("%s/prefixItems/%d", path, i)
			prefix = append(prefix, c.schema(e, pp, c.fresh(fmt.Sprintf("%s-%d", name, i), pp), ""))
		}
	}
	item := ""
	switch items := n.get("items"); {
	case items != nil && items.kind == 'b' && !items.b:
		hi = minBound(hi, len(prefix))
	case items != nil && items.kind == 'a':
		c.fail(path, `"items" must be a schema (use "prefixItems" for tuples)`)
	case items != nil:
		p := path + "/items"
		item = c.schema(items, p, c.fresh(name+"-item", p), "")
	default:
		if prefix == nil && lo == 0 && hi < 0 {
			return c.g.prim("array")
		}
		item = c.g.prim("value")
	}
	if hi >= 0 && lo > hi {
		c.fail(path, "no array has at least %d and at most %d items", lo, hi)
	}
	c.g.prim("space")
	more := "" // rule for `"," space item space`, made when first needed
	repeatMore := func(lo, hi int) string {
		if hi == 0 {
			return ""
		}
		if more == "" {
			more = c.rule(c.fresh(name+"-more", path), `"," space `+item+" space")
		}
		return c.g.repeat(more, lo, hi)
	}
	// tail is the grammar for items i and later, i items being written.
	var tail func(i int) string
	tail = func(i int) string {
		if hi >= 0 && i >= hi {
			return ""
		}
		if i < len(prefix) {
			x := prefix[i] + " space"
			if i > 0 {
				x = `"," space ` + x
			}
			if t := tail(i + 1); t != "" {
				x += " " + t
			}
			if i >= lo {
				x = "( " + x + " | )"
			}
			return x
		}
		need, room := max(lo-i, 0), -1
		if hi >= 0 {
			room = hi - i
		}
		if i > 0 {
			return repeatMore(need, room)
		}
		x := item + " space"
		if room > 0 {
			room--
		}
		if r := repeatMore(max(need-1, 0), room); r != "" {
			x += " " + r
		}
		if need == 0 {
			x = "( " + x + " | )"
		}
		return x
	}
	body := `"[" space `
	if t := tail(0); t != "" {
		body += t + " "
	}
	return c.rule(name, body+`"]"`)
}

// minBound is min(hi, n) with hi < 0 meaning no bound.
func minBound(hi, n int) int {
	if hi < 0 || n < hi {
		return n
	}
	return hi
}

// count reads a non-negative integer keyword (minItems, maxLength, ...),
// -1 if absent.
func (c *converter) count(n *node, word, path string) int {
	v := n.get(word)
	if v == nil {
		if strings.HasPrefix(word, "min") {
			return 0
		}
		return -1
	}
	if !v.isInt() || strings.HasPrefix(v.str, "-") {
		c.fail(path, "%q must be a non-negative integer", word)
	}
	f, err := strconv.ParseFloat(v.str, 64)
	if err != nil || f > maxRepeat {
		c.fail(path, "%q is %s, more than the limit of %d", word, v.str, maxRepeat)
	}
	return int(f)
}

// str converts the string keywords of n.
func (c *converter) str(n *node, path, name string) string {
	lo, hi := c.count(n, "minLength", path), c.count(n, "maxLength", path)
	if pt := n.get("pattern"); pt != nil {
		if pt.kind != 's' {
			c.fail(path, `"pattern" must be a string`)
		}
		for _, k := range []string{"minLength", "maxLength", "format"} {
			if n.get(k) != nil {
				c.fail(path, "keyword %q cannot be combined with \"pattern\"", k)
			}
		}
		expr, err := c.g.regex(pt.str, true)
		if err != nil {
			c.fail(path, "pattern %q: %v", pt.str, err)
		}
		return c.rule(name, `"\"" `+expr+` "\""`)
	}
	if f := n.get("format"); f != nil {
		if f.kind != 's' {
			c.fail(path, `"format" must be a string`)
		}
		if prim, ok := formats[f.str]; ok {
			if n.get("minLength") != nil || n.get("maxLength") != nil {
				c.fail(path, "format %q cannot be combined with \"minLength\" or \"maxLength\"", f.str)
			}
			return c.g.prim(prim)
		}
	}
	if lo == 0 && hi < 0 {
		return c.g.prim("string")
	}
	if hi >= 0 && lo > hi {
		c.fail(path, "no string has at least %d and at most %d characters", lo, hi)
	}
	chars := c.g.repeat(c.g.prim("char"), lo, hi)
	if chars != "" {
		chars += " "
	}
	return c.rule(name, `"\"" `+chars+`"\""`)
}

// group writes alternatives in parentheses (an empty one matches nothing).
func group(alts []string) string {
	return "( " + strings.TrimSpace(strings.Join(alts, " | ")) + " )"
}

// pointerEscape escapes a JSON pointer token.
func pointerEscape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func kindName(n *node) string {
	switch n.kind {
	case 'o':
		return "an object"
	case 'a':
		return "an array"
	case 's':
		return "a string"
	case 'n':
		return "a number"
	case 'b':
		return "a boolean"
	}
	return "null"
}

// node is a parsed JSON value that keeps the order of object members.
type node struct {
	kind  byte     // 'o' object, 'a' array, 's' string, 'n' number, 'b' boolean, 'z' null
	keys  []string // object member names, in order
	vals  []*node  // object member values, parallel to keys
	elems []*node  // array elements
	str   string   // string value, or number spelling
	b     bool     // boolean value
}

// parseJSON parses one JSON value, refusing trailing data and duplicate keys.
func parseJSON(data []byte) (*node, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the top-level value")
	}
	return n, nil
}

func parseValue(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			n := &node{kind: 'a'}
			for dec.More() {
				e, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				n.elems = append(n.elems, e)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
		n := &node{kind: 'o'}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key := k.(string)
			if n.get(key) != nil {
				return nil, fmt.Errorf("duplicate key %q", key)
			}
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			n.keys = append(n.keys, key)
			n.vals = append(n.vals, v)
		}
		_, err := dec.Token() // '}'
		return n, err
	case string:
		return &node{kind: 's', str: t}, nil
	case json.Number:
		return &node{kind: 'n', str: t.String()}, nil
	case bool:
		return &node{kind: 'b', b: t}, nil
	default:
		return &node{kind: 'z'}, nil
	}
}

// get returns the value of member key of an object, or nil.
func (n *node) get(key string) *node {
	for i, k := range n.keys {
		if k == key {
			return n.vals[i]
		}
	}
	return nil
}

// isInt reports whether n is a number with an integral value.
func (n *node) isInt() bool {
	if n.kind != 'n' {
		return false
	}
	r, ok := new(big.Rat).SetString(n.str)
	return ok && r.IsInt()
}

// jsonType is the JSON Schema type name of n ("integer" for integral numbers).
func (n *node) jsonType() string {
	switch n.kind {
	case 'o':
		return "object"
	case 'a':
		return "array"
	case 's':
		return "string"
	case 'n':
		if n.isInt() {
			return "integer"
		}
		return "number"
	case 'b':
		return "boolean"
	}
	return "null"
}

// compact writes n as compact JSON: strings re-encoded, numbers as spelled.
func (n *node) compact(b *strings.Builder) {
	switch n.kind {
	case 'o':
		b.WriteByte('{')
		for i, k := range n.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(quote(k))
			b.WriteByte(':')
			n.vals[i].compact(b)
		}
		b.WriteByte('}')
	case 'a':
		b.WriteByte('[')
		for i, e := range n.elems {
			if i > 0 {
				b.WriteByte(',')
			}
			e.compact(b)
		}
		b.WriteByte(']')
	case 's':
		b.WriteString(quote(n.str))
	case 'n':
		b.WriteString(n.str)
	case 'b':
		fmt.Fprint(b, n.b)
	default:
		b.WriteString("null")
	}
}

// quote is s as a JSON string, without HTML escaping.
func quote(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(buf.String(), "\n")
}
