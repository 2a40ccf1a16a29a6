package scheduler

import (
	"strings"
	"unicode/utf8"
)

// textOut turns generated tokens into streamable text: it emits only whole
// UTF-8 characters, holds back any tail that could be the start of a stop
// string, and cuts the output before the first stop string found (after
// it with keepStop: vLLM's include_stop_str_in_output).
type textOut struct {
	buf     []byte   // all generated text so far
	emitted int      // bytes of buf already handed out
	stops   []string // stop strings (non-empty)
	maxStop int      // longest stop string, bytes
	keep    bool     // the stop string found ends the output instead of being cut
}

func newTextOut(stops []string, keepStop bool) textOut {
	t := textOut{keep: keepStop}
	for _, s := range stops {
		if s == "" {
			continue
		}
		t.stops = append(t.stops, s)
		if len(s) > t.maxStop {
			t.maxStop = len(s)
		}
	}
	return t
}

// push appends one token's bytes and returns the newly safe text and whether
// a stop string ended the output. After stopped is true nothing more is
// emitted.
func (t *textOut) push(piece []byte) (text string, stopped bool) {
	start := len(t.buf)
	t.buf = append(t.buf, piece...)
	if len(t.stops) > 0 {
		// A stop string can only newly appear in the region that touches
		// the new bytes.
		from := start - t.maxStop + 1
		if from < t.emitted {
			from = t.emitted
		}
		if from < 0 {
			from = 0
		}
		cut, n := -1, 0
		for _, s := range t.stops {
			if i := strings.Index(string(t.buf[from:]), s); i >= 0 && (cut < 0 || from+i < cut) {
				cut, n = from+i, len(s)
			}
		}
		if cut >= 0 {
			if t.keep {
				cut += n
			}
			text = strings.ToValidUTF8(string(t.buf[t.emitted:cut]), "\uFFFD")
			t.buf = t.buf[:cut]
			t.emitted = cut
			return text, true
		}
	}
	end := t.safeEnd()
	if end <= t.emitted {
		return "", false
	}
	text = strings.ToValidUTF8(string(t.buf[t.emitted:end]), "\uFFFD")
	t.emitted = end
	return text, false
}

// flush returns what was held back (at the end of generation): a partial
// stop-string prefix is real output once generation ends; an incomplete
// UTF-8 tail is dropped as invalid.
func (t *textOut) flush() string {
	end := t.wholeChars()
	if end <= t.emitted {
		return ""
	}
	s := strings.ToValidUTF8(string(t.buf[t.emitted:end]), "\uFFFD")
	t.emitted = end
	return s
}

// wholeChars is len(buf) less an incomplete UTF-8 character at its end.
func (t *textOut) wholeChars() int {
	end := len(t.buf)
	for i := 1; i <= utf8.UTFMax && i <= end-t.emitted; i++ {
		if utf8.RuneStart(t.buf[end-i]) {
			if !utf8.FullRune(t.buf[end-i : end]) {
				end -= i
			}
			break
		}
	}
	return end
}

// text is the whole output so far (for non-streaming responses and tests).
func (t *textOut) text() string { return string(t.buf[:t.emitted]) }

// safeEnd is the end of the longest prefix of buf that is whole characters
// and cannot turn into a stop string with more bytes.
func (t *textOut) safeEnd() int {
	end := t.wholeChars()
	// Hold back the longest suffix that is a proper prefix of a stop string.
	hold := 0
	for _, s := range t.stops {
		for l := min(len(s)-1, end-t.emitted); l > hold; l-- {
			if string(t.buf[end-l:end]) == s[:l] {
				hold = l
				break
			}
		}
	}
	return end - hold
}
