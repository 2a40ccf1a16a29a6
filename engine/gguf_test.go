package engine

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"specd/internal/testenv"
)

func TestInspectGGUF(t *testing.T) {
	g, err := InspectGGUF(testenv.StoriesModel(t))
	if err != nil {
		t.Fatal(err)
	}
	if g.Version != 3 || len(g.Tensors) != 48 {
		t.Errorf("version %d, %d tensors", g.Version, len(g.Tensors))
	}
	if a, _ := g.String("general.architecture"); a != "llama" {
		t.Errorf("architecture %q", a)
	}
	for key, want := range map[string]uint64{
		"llama.block_count": 5, "llama.embedding_length": 64, "llama.attention.head_count": 8,
		"llama.attention.head_count_kv": 4, "llama.context_length": 2048,
	} {
		if got, ok := g.Uint(key); !ok || got != want {
			t.Errorf("%s = %d (%v), want %d", key, got, ok, want)
		}
	}
	if n, _ := g.ArrayLen("tokenizer.ggml.tokens"); n != 512 {
		t.Errorf("tokens array length %d", n)
	}
	// stories260K is all F32: the data section is 4 bytes per parameter
	// and the file ends right after the last tensor.
	if g.TensorBytes() != 4*g.NParams() {
		t.Errorf("tensor bytes %d for %d params", g.TensorBytes(), g.NParams())
	}
	if uint64(g.DataOffset)+g.TensorBytes() > uint64(g.FileSize) {
		t.Errorf("data %d+%d past file size %d", g.DataOffset, g.TensorBytes(), g.FileSize)
	}
}

func TestCheckGGUFRejects(t *testing.T) {
	src := testenv.StoriesModel(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badVersion := append([]byte(nil), data...)
	binary.LittleEndian.PutUint32(badVersion[4:], 7)
	hugeCount := append([]byte(nil), data...)
	binary.LittleEndian.PutUint64(hugeCount[8:], 1<<40)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), "does not exist"},
		{"directory", dir, "directory"},
		{"text", write("text.gguf", []byte("hello, this is not a model\n")), "not a GGUF file"},
		{"empty", write("empty.gguf", nil), "not a GGUF file"},
		{"truncated data", write("half.gguf", data[:len(data)/2]), "truncated"},
		{"truncated header", write("head.gguf", data[:2000]), "truncated"},
		{"one byte short", write("short.gguf", data[:len(data)-1]), "truncated"},
		{"version", write("ver.gguf", badVersion), "version 7"},
		{"tensor count", write("count.gguf", hugeCount), "implausible tensor count"},
	} {
		err := CheckGGUF(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line containing %q", tc.name, err, tc.want)
		}
	}
	if err := CheckGGUF(write("copy.gguf", data)); err != nil {
		t.Errorf("intact copy: %v", err)
	}
}

func TestLoadModelRejectsBadFileCleanly(t *testing.T) {
	l, _ := stories(t)
	data, err := os.ReadFile(testenv.StoriesModel(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "half.gguf")
	if err := os.WriteFile(p, data[:len(data)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.LoadModel(t.Context(), ModelParams{Path: p}); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("LoadModel(truncated) err = %v", err)
	}
}

func TestAutoKVType(t *testing.T) {
	for _, tc := range []struct {
		bpp  float64
		head int
		want KVType
	}{
		{4.05, 128, "f32"}, {4, 64, "f32"}, {3, 0, "f32"}, {2.01, 128, "f16"}, {2, 64, "f16"}, {1.0625, 0, "f16"}, {0.56, 128, "f16"},
		{1.0625, 8, "f32"}, {0.56, 16, "f32"}, {2, 17, "f16"}, {1.0625, 32, "f16"}, {4, 8, "f32"},
	} {
		if got := AutoKVType(tc.bpp, tc.head); got != tc.want {
			t.Errorf("AutoKVType(%v, %d) = %q, want %q", tc.bpp, tc.head, got, tc.want)
		}
	}
	if _, err := KVAuto.GGMLType(); err == nil || !strings.Contains(err.Error(), "per model") {
		t.Errorf("GGMLType(auto): err = %v, want one saying it is resolved per model", err)
	}
	if _, err := KVType("f12").GGMLType(); err == nil || !strings.Contains(err.Error(), "want auto, f16") {
		t.Errorf("GGMLType(f12): err = %v", err)
	}
	if got := KVType("q8_0").Resolve(nil); got != "q8_0" {
		t.Errorf("Resolve kept %q, want q8_0", got)
	}
}
