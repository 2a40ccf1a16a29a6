package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"specd/engine"
)

func init() {
	register(&command{
		name:    "quantize",
		summary: "write a quantized copy of a GGUF model (e.g. a Q8_0 draft)",
		run:     runQuantize,
	})
}

func runQuantize(args []string) error {
	fs := newFlagSet("quantize")
	typ := fs.String("type", "Q8_0", "target type: "+strings.Join(engine.FileTypes(), ", ")+" (case-insensitive)")
	threads := fs.Int("threads", 0, "quantization threads (0 = all cores)")
	libDir := fs.String("lib-dir", "", "folder of the llama.cpp libraries (default $SPECD_LIB_DIR or .cache/backend/"+engine.BackendVersion+")")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: specd quantize IN.gguf OUT.gguf [--type Q8_0] [--threads N]")
		fs.PrintDefaults()
	}
	pos, err := parsePositionals(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"want an input and an output file (specd quantize IN.gguf OUT.gguf --type Q8_0)"}
	}
	if _, err := engine.ParseFileType(*typ); err != nil {
		return usageError{err.Error()}
	}
	// Check the input before loading the native library: a bad file is the
	// common mistake and needs no backend to report.
	if err := engine.CheckGGUF(pos[0]); err != nil {
		return err
	}
	lib, err := engine.Open(engine.Options{LibDir: *libDir, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := lib.Quantize(pos[0], pos[1], *typ, *threads); err != nil {
		return err
	}
	st, err := os.Stat(pos[1])
	if err != nil {
		return err
	}
	in, _ := os.Stat(pos[0])
	fmt.Printf("wrote %s (%s, %s → %s) in %.1fs\n", pos[1], strings.ToUpper(*typ), human(uint64(in.Size())), human(uint64(st.Size())), time.Since(t0).Seconds())
	return nil
}
