package scheduler

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTextOut(t *testing.T) {
	cases := []struct {
		name    string
		stops   []string
		pieces  []string
		want    string // concatenated output including flush
		stopped bool
	}{
		{"plain", nil, []string{"Once", " upon", " a"}, "Once upon a", false},
		{"stop mid piece", []string{"upon"}, []string{"Once", " upon", " a"}, "Once ", true},
		{"stop across pieces", []string{"a time"}, []string{"Once upon a", " ti", "me there"}, "Once upon ", true},
		{"partial stop released at end", []string{"xyz"}, []string{"abc", "xy"}, "abcxy", false},
		{"partial then diverge", []string{"xyz"}, []string{"abx", "yq"}, "abxyq", false},
		{"earliest stop wins", []string{"cd", "b"}, []string{"abcd"}, "a", true},
		{"utf8 split", nil, []string{"h\xc3", "\xa9llo"}, "héllo", false},
		{"utf8 4-byte split thrice", nil, []string{"\xf0\x9f", "\x98", "\x80!"}, "😀!", false},
		{"dangling utf8 dropped", nil, []string{"ok\xe2\x82"}, "ok", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := newTextOut(c.stops, false)
			var got strings.Builder
			stopped := false
			for _, p := range c.pieces {
				s, st := o.push([]byte(p))
				if !utf8.ValidString(s) {
					t.Fatalf("chunk %q is not valid UTF-8", s)
				}
				for _, stop := range c.stops {
					if strings.Contains(s, stop) {
						t.Fatalf("chunk %q contains stop %q", s, stop)
					}
				}
				got.WriteString(s)
				if st {
					stopped = true
					break
				}
			}
			if !stopped {
				got.WriteString(o.flush())
			}
			if got.String() != c.want || stopped != c.stopped {
				t.Fatalf("got %q stopped=%v, want %q stopped=%v", got.String(), stopped, c.want, c.stopped)
			}
		})
	}
}

// A stop string must never be partly emitted: every prefix the stream has
// shown must be a prefix of the final text, and the final text contains no stop.
func TestTextOutNeverLeaksPartialStop(t *testing.T) {
	stops := []string{"the end", "\n\n"}
	text := "and so the en then the end of it"
	for step := 1; step <= 4; step++ {
		o := newTextOut(stops, false)
		var got strings.Builder
		for i := 0; i < len(text); i += step {
			j := min(i+step, len(text))
			s, st := o.push([]byte(text[i:j]))
			got.WriteString(s)
			if st {
				break
			}
		}
		if got.String() != "and so the en then " {
			t.Fatalf("step %d: got %q", step, got.String())
		}
	}
}

// With keepStop the first stop string found ends the output and stays in
// it; pieces after it are not emitted.
func TestTextOutKeepStop(t *testing.T) {
	for _, c := range []struct {
		pieces []string
		want   string
	}{
		{[]string{"Once up", "on a ti", "me, there"}, "Once upon"},
		{[]string{"Once a ti", "me up", "on"}, "Once a time"},
		{[]string{"a ", "tim", "e then ", "upon"}, "a time"},
		{[]string{"upon"}, "upon"},
		{[]string{"no stop here"}, ""},
	} {
		o := newTextOut([]string{"time", "upon"}, true)
		var got strings.Builder
		stopped := false
		for _, p := range c.pieces {
			text, st := o.push([]byte(p))
			got.WriteString(text)
			if st {
				stopped = true
				break
			}
		}
		if !stopped {
			got.WriteString(o.flush())
			if c.want == "" && got.String() == strings.Join(c.pieces, "") {
				continue
			}
		}
		if got.String() != c.want {
			t.Errorf("%q: %q, want %q", c.pieces, got.String(), c.want)
		}
	}
}
