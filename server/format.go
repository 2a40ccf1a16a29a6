package server

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"specd/internal/gbnf"
)

// maxGrammar bounds a request's grammar text (GBNF as given, or made from
// a JSON schema): llama.cpp parses it for each choice and clones its state
// every verify step.
const maxGrammar = 256 << 10

// decodeFormat reads the structured-output fields into g.grammar (GBNF):
// OpenAI's response_format (text, json_object, json_schema) and
// llama-server's grammar (GBNF text) and json_schema (a schema object),
// also its response_format {"type": "json_object", "schema": {...}}. At
// most one of them may ask for something.
func (g *genRequest) decodeFormat(m map[string]json.RawMessage) *apiError {
	var set []string
	if r, ok := m["response_format"]; ok && !isNull(r) {
		var f struct {
			Type       string          `json:"type"`
			Schema     json.RawMessage `json:"schema"`
			JSONSchema *struct {
				Name   string          `json:"name"`
				Schema json.RawMessage `json:"schema"`
				Strict *bool           `json:"strict"`
			} `json:"json_schema"`
		}
		if r[0] != '{' || json.Unmarshal(r, &f) != nil {
			return wrongType("response_format", `an object such as {"type": "json_object"}`)
		}
		switch f.Type {
		case "text":
		case "json_object":
			set = append(set, "response_format")
			g.grammar = gbnf.JSONObject
			if len(f.Schema) > 0 && !isNull(f.Schema) {
				if e := g.schemaGrammar("response_format", f.Schema); e != nil {
					return e
				}
			}
		case "json_schema":
			set = append(set, "response_format")
			if f.JSONSchema == nil || len(f.JSONSchema.Schema) == 0 || isNull(f.JSONSchema.Schema) {
				return badRequest("response_format", "response_format of type json_schema needs 'json_schema.schema'")
			}
			if e := g.schemaGrammar("response_format", f.JSONSchema.Schema); e != nil {
				return e
			}
		default:
			return invalidValue("response_format", "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", got %q", f.Type)
		}
	}
	if s, ok, e := optString(m, "grammar"); e != nil {
		return e
	} else if ok && s != "" {
		set = append(set, "grammar")
		if err := gbnf.Check(s, "root"); err != nil {
			return invalidValue("grammar", "%v", err)
		}
		g.grammar = s
	}
	if r, ok := m["json_schema"]; ok && !emptyObject(r) {
		set = append(set, "json_schema")
		if e := g.schemaGrammar("json_schema", r); e != nil {
			return e
		}
	}
	if e := g.decodeGuided(m, &set); e != nil {
		return e
	}
	if len(set) > 1 {
		return badRequest(set[1], "set only one of response_format, grammar, json_schema and vLLM's guided_* / structured_outputs (got %s and %s)", set[0], set[1])
	}
	if len(g.grammar) > maxGrammar {
		return invalidValue(set[0], "the grammar is %d bytes; at most %d", len(g.grammar), maxGrammar)
	}
	return nil
}

func (g *genRequest) schemaGrammar(param string, schema json.RawMessage) *apiError {
	text, err := gbnf.FromSchema(schema)
	if err != nil {
		return invalidValue(param, "%v", err)
	}
	g.grammar = text
	return nil
}

// decodeGuided reads vLLM's structured-output fields: guided_json,
// guided_choice, guided_regex (the whole output matches, gbnf.Regex),
// guided_grammar (GBNF, which xgrammar's EBNF mostly is) and the newer
// structured_outputs object (json, choice, regex, grammar, json_object).
// Anything else a constraint could be is refused, never ignored.
func (g *genRequest) decodeGuided(m map[string]json.RawMessage, set *[]string) *apiError {
	fields := map[string]json.RawMessage{}
	param := map[string]string{}
	for _, k := range []string{"guided_json", "guided_choice", "guided_grammar", "guided_regex"} {
		if r, ok := m[k]; ok && !isNull(r) {
			kind := strings.TrimPrefix(k, "guided_")
			fields[kind], param[kind] = r, k
		}
	}
	if r, ok := m["structured_outputs"]; ok && !isNull(r) {
		var so map[string]json.RawMessage
		if r[0] != '{' || json.Unmarshal(r, &so) != nil {
			return wrongType("structured_outputs", "an object such as {\"json\": {...}}")
		}
		for k, v := range so {
			if isNull(v) || string(v) == "false" {
				continue
			}
			p := "structured_outputs." + k
			if _, dup := fields[k]; dup {
				return badRequest(p, "'%s' repeats '%s'", p, param[k])
			}
			fields[k], param[k] = v, p
		}
	}
	for _, kind := range slices.Sorted(maps.Keys(fields)) {
		r, p := fields[kind], param[kind]
		*set = append(*set, p)
		switch kind {
		case "json":
			schema := []byte(r)
			var s string
			if json.Unmarshal(r, &s) == nil { // the schema as a JSON string
				schema = []byte(s)
			}
			if e := g.schemaGrammar(p, schema); e != nil {
				return e
			}
		case "json_object":
			if string(r) != "true" {
				return wrongType(p, "true")
			}
			g.grammar = gbnf.JSONObject
		case "choice":
			var choices []string
			if json.Unmarshal(r, &choices) != nil {
				return wrongType(p, "an array of strings")
			}
			text, err := gbnf.Choice(choices)
			if err != nil {
				return invalidValue(p, "%v", err)
			}
			g.grammar = text
		case "regex":
			var s string
			if json.Unmarshal(r, &s) != nil {
				return wrongType(p, "a string (a regular expression)")
			}
			text, err := gbnf.Regex(s)
			if err != nil {
				return invalidValue(p, "%v", err)
			}
			g.grammar = text
		case "grammar":
			var s string
			if json.Unmarshal(r, &s) != nil {
				return wrongType(p, "a string (GBNF)")
			}
			if err := gbnf.Check(s, "root"); err != nil {
				return invalidValue(p, "%v", err)
			}
			g.grammar = s
		default: // structural_tag, ...
			return unsupportedParam(p, "'%s' is not supported by this server (it takes json, json_object, choice, regex and grammar)", p)
		}
	}
	return nil
}
