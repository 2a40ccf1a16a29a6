package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogSinkJoinsFragmentsAndFilters(t *testing.T) {
	stories(t) // the real sink is installed; swap its target for this test
	var out bytes.Buffer
	l := &Library{logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), level: slog.LevelWarn}
	sink.mu.Lock()
	old := sink.lib
	sink.lib = l
	sink.mu.Unlock()
	defer func() {
		sink.mu.Lock()
		sink.lib = old
		sink.mu.Unlock()
	}()
	takeLastError()
	for _, f := range []struct {
		level int32
		text  string
	}{
		{ggmlLogInfo, "chatty info\n"},
		{ggmlLogWarn, "half a "},
		{ggmlLogCont, "warning\nsecond line\n"},
		{ggmlLogError, "it broke\n"},
	} {
		b := cString(f.text)
		sink.write(f.level, &b[0])
	}
	got := out.String()
	if strings.Contains(got, "chatty") {
		t.Errorf("INFO forwarded at level Warn:\n%s", got)
	}
	for _, want := range []string{`level=WARN msg="half a warning"`, `level=WARN msg="second line"`, `level=ERROR msg="it broke"`} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in:\n%s", want, got)
		}
	}
	if e := takeLastError(); e != "it broke" {
		t.Errorf("last error %q", e)
	}
	if e := takeLastError(); e != "" {
		t.Errorf("last error not cleared: %q", e)
	}
}
