package server

import (
	"math"
	"strconv"
	"unicode/utf8"

	"specd/scheduler"
)

// noLogprob marks an echoed prompt's first token, which nothing predicts:
// its logprob and top_logprobs are written as null (OpenAI, vLLM).
var noLogprob = float32(math.NaN())

func isNoLogprob(lp scheduler.Logprob) bool { return lp.Logprob != lp.Logprob && lp.Top == nil }

// logprobFloor stands for a log-probability of -Inf (a token the model
// gives no mass), which JSON cannot carry; vLLM writes the same.
const logprobFloor = -9999.0

func appendLogprob(dst []byte, lp float32) []byte {
	if math.IsInf(float64(lp), -1) || lp != lp {
		return strconv.AppendFloat(dst, logprobFloor, 'f', 1, 64)
	}
	return strconv.AppendFloat(dst, float64(lp), 'g', -1, 32)
}

// appendLogprobs appends the logprobs object of one choice's tokens lps, in
// the endpoint's shape:
//
//	chat:        {"content":[{"token","logprob","bytes","top_logprobs":[{"token","logprob","bytes"}]}],"refusal":null}
//	completions: {"tokens":[...],"token_logprobs":[...],"top_logprobs":[{token: logprob}],"text_offset":[...]}
//
// Completions' top_logprobs hold the alternatives and the sampled token (up
// to N+1 entries, as OpenAI); text_offset counts characters of the
// completion from *offset, which it advances. Token text is the token's
// piece (invalid UTF-8, from a character split across tokens, shows as
// U+FFFD; chat's bytes are exact).
func (r *run) appendLogprobs(dst []byte, lps []scheduler.Logprob, offset *int) []byte {
	piece := r.s.b.TokenPiece
	if r.g.chat {
		dst = append(dst, `{"content":`...)
		dst = r.appendChatContent(dst, lps)
		return append(dst, `,"refusal":null}`...)
	}
	dst = append(dst, `{"tokens":[`...)
	for i, lp := range lps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, piece(lp.Token))
	}
	dst = append(dst, `],"token_logprobs":[`...)
	for i, lp := range lps {
		var done bool
		if dst, done = appendEntryStart(dst, i, lp); !done {
			dst = appendLogprob(dst, lp.Logprob)
		}
	}
	dst = append(dst, `],"top_logprobs":[`...)
	var keys []string
	for i, lp := range lps {
		var done bool
		if dst, done = appendEntryStart(dst, i, lp); done {
			continue
		}
		dst = append(dst, '{')
		keys = keys[:0]
		entry := func(t int32, v float32) {
			k := piece(t)
			for _, seen := range keys {
				if seen == k { // two tokens with the same text: the first stands
					return
				}
			}
			if len(keys) > 0 {
				dst = append(dst, ',')
			}
			keys = append(keys, k)
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendLogprob(dst, v)
		}
		sampled := false
		for _, t := range lp.Top {
			entry(t.Token, t.Logprob)
			sampled = sampled || t.Token == lp.Token
		}
		if !sampled {
			entry(lp.Token, lp.Logprob)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `],"text_offset":[`...)
	for i, lp := range lps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(*offset), 10)
		*offset += utf8.RuneCountInString(piece(lp.Token))
	}
	return append(dst, "]}"...)
}

// appendChatContent appends chat's logprobs.content array for lps (also
// the Responses API's output_text logprobs).
func (r *run) appendChatContent(dst []byte, lps []scheduler.Logprob) []byte {
	piece := r.s.b.TokenPiece
	dst = append(dst, '[')
	for i, lp := range lps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendChatLogprob(dst, piece(lp.Token), lp.Logprob)
		dst = append(dst[:len(dst)-1], `,"top_logprobs":[`...)
		for j, t := range lp.Top {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendChatLogprob(dst, piece(t.Token), t.Logprob)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, ']')
}

// appendChatLogprob appends {"token":...,"logprob":...,"bytes":[...]}.
func appendChatLogprob(dst []byte, tok string, lp float32) []byte {
	dst = append(dst, `{"token":`...)
	dst = appendJSONString(dst, tok)
	dst = append(dst, `,"logprob":`...)
	dst = appendLogprob(dst, lp)
	dst = append(dst, `,"bytes":[`...)
	for i := 0; i < len(tok); i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(tok[i]), 10)
	}
	return append(dst, "]}"...)
}

// appendEntryStart writes the comma before array entry i, and null for the
// entry of an echoed prompt's first token (done: nothing more to write).
func appendEntryStart(dst []byte, i int, lp scheduler.Logprob) ([]byte, bool) {
	if i > 0 {
		dst = append(dst, ',')
	}
	if isNoLogprob(lp) {
		return append(dst, "null"...), true
	}
	return dst, false
}
