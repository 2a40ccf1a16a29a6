package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"specd/engine"
)

func init() {
	register(&command{
		name:    "info",
		summary: "show a GGUF model's metadata, the memory it needs and its speed ceiling",
		run:     runInfo,
	})
}

// parsePositionals parses flags that may come before, between or after the
// positional arguments ("specd info M.gguf --ctx 512") and returns the
// positionals.
func parsePositionals(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runInfo(args []string) error {
	fs := newFlagSet("info")
	ctxTokens := fs.Int("ctx", 0, "TOTAL KV cache tokens shared by all sequences, as llama-server's -c (0 = the model's training context)")
	parallel := fs.Int("parallel", 1, "number of sequences sharing the KV cache (each gets ctx/parallel tokens)")
	kvType := fs.String("kv-type", "auto", "KV cache element type: auto (f32 for a model stored in f32 or with heads of at most 16 dimensions, else f16, as specd serve), f16, f32, bf16, q8_0, q4_0, ...")
	bandwidth := fs.Float64("bandwidth", 0, "memory bandwidth in GB/s for the speed ceiling (0 = measure with a Go copy loop)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: specd info MODEL.gguf [--ctx N] [--parallel N] [--kv-type auto] [--bandwidth GBps]")
		fs.PrintDefaults()
	}
	pos, err := parsePositionals(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"want exactly one model file (specd info MODEL.gguf)"}
	}
	if *ctxTokens < 0 || *parallel < 1 || *bandwidth < 0 {
		return usageError{"--ctx must be >= 0, --parallel >= 1, --bandwidth >= 0"}
	}
	if _, err := engine.KVType(*kvType).GGMLType(); err != nil && engine.KVType(*kvType) != engine.KVAuto {
		return usageError{err.Error()}
	}
	g, err := engine.InspectGGUF(pos[0])
	if err != nil {
		return err
	}
	h, err := hparamsOf(g)
	if err != nil {
		return err
	}
	kv := engine.KVType(*kvType)
	if kv == engine.KVAuto {
		bpp := 0.0
		if g.NParams() > 0 {
			bpp = float64(g.TensorBytes()) / float64(g.NParams())
		}
		kv = engine.AutoKVType(bpp, int(h.kDim))
		*kvType = string(kv) + " (auto)"
	}
	bpe, err := kv.BytesPerElement()
	if err != nil {
		return usageError{err.Error()}
	}
	bw := *bandwidth * 1e9
	bwHow := "given"
	if bw == 0 {
		bw = measureBandwidth()
		bwHow = "measured: Go copy loop over 64 MiB buffers, bytes read + written per second"
	}
	printInfo(os.Stdout, g, h, infoOptions{ctx: *ctxTokens, parallel: *parallel, kvType: *kvType, bpe: bpe, bandwidth: bw, bwHow: bwHow})
	return nil
}

// hparams are the shape facts KV sizing needs, read from GGUF metadata.
type hparams struct {
	arch                   string
	nLayer, nEmbd, nHead   uint64
	nHeadKV, kDim, vDim    uint64
	nCtxTrain, nVocab      uint64
	fileType               string
	name, chatTemplateNote string
}

func hparamsOf(g *engine.GGUF) (hparams, error) {
	var h hparams
	arch, ok := g.String("general.architecture")
	if !ok {
		return h, fmt.Errorf("%s has no general.architecture", g.Path)
	}
	h.arch = arch
	h.name, _ = g.String("general.name")
	need := func(key string) (uint64, error) {
		v, ok := g.Uint(arch + "." + key)
		if !ok {
			return 0, fmt.Errorf("%s has no %s.%s", g.Path, arch, key)
		}
		return v, nil
	}
	var err error
	if h.nLayer, err = need("block_count"); err != nil {
		return h, err
	}
	if h.nEmbd, err = need("embedding_length"); err != nil {
		return h, err
	}
	if h.nHead, err = need("attention.head_count"); err != nil {
		return h, err
	}
	if h.nHead == 0 {
		return h, fmt.Errorf("%s: %s.attention.head_count is 0", g.Path, arch)
	}
	h.nCtxTrain, _ = g.Uint(arch + ".context_length")
	if h.nHeadKV, ok = g.Uint(arch + ".attention.head_count_kv"); !ok {
		h.nHeadKV = h.nHead
	}
	if h.kDim, ok = g.Uint(arch + ".attention.key_length"); !ok {
		h.kDim = h.nEmbd / h.nHead
	}
	if h.vDim, ok = g.Uint(arch + ".attention.value_length"); !ok {
		h.vDim = h.nEmbd / h.nHead
	}
	h.nVocab, _ = g.ArrayLen("tokenizer.ggml.tokens")
	if ft, ok := g.Uint("general.file_type"); ok {
		h.fileType = engine.FileTypeName(int32(ft))
	} else {
		h.fileType = "not recorded"
	}
	if t, ok := g.String("tokenizer.chat_template"); ok {
		h.chatTemplateNote = fmt.Sprintf("present (%d bytes)", len(t))
	} else {
		h.chatTemplateNote = "none"
	}
	return h, nil
}

type infoOptions struct {
	ctx, parallel int
	kvType        string
	bpe           float64
	bandwidth     float64 // bytes/s
	bwHow         string
}

// kvCells is how many KV cells llama.cpp allocates for a total of ctx
// tokens over parallel sequences: it rounds n_ctx up to a multiple of 256
// and, with one stream per sequence, each sequence's share too
// (src/llama-context.cpp).
func kvCells(ctx, parallel int) (total, perSeq int) {
	pad := func(n int) int { return (n + 255) / 256 * 256 }
	total = pad(ctx)
	if parallel == 1 {
		return total, total
	}
	perSeq = pad(total / parallel)
	return perSeq * parallel, perSeq
}

func printInfo(w io.Writer, g *engine.GGUF, h hparams, o infoOptions) {
	ctx := o.ctx
	ctxNote := "(--ctx)"
	if ctx == 0 {
		ctx = int(h.nCtxTrain)
		ctxNote = "(the model's training context; set --ctx to change)"
	}
	if ctx == 0 {
		ctx = 4096
		ctxNote = "(model gives none; assumed)"
	}
	cells, perSeq := kvCells(ctx, o.parallel)

	fmt.Fprintf(w, "file            %s (%s, GGUF v%d)\n", g.Path, human(uint64(g.FileSize)), g.Version)
	fmt.Fprintf(w, "model           %q, architecture %s, file type %s\n", h.name, h.arch, h.fileType)
	fmt.Fprintf(w, "parameters      %s in %d tensors (%s)\n", count(g.NParams()), len(g.Tensors), tensorTypes(g))
	fmt.Fprintf(w, "shape           %d layers, embedding %d, %d heads (%d KV heads), head dim K %d / V %d\n",
		h.nLayer, h.nEmbd, h.nHead, h.nHeadKV, h.kDim, h.vDim)
	fmt.Fprintf(w, "context         %d tokens trained, vocabulary %d, chat template %s\n", h.nCtxTrain, h.nVocab, h.chatTemplateNote)

	perToken := float64(h.nLayer*h.nHeadKV*(h.kDim+h.vDim)) * o.bpe // bytes of K+V per cached token
	kvTotal := perToken * float64(cells)
	weights := float64(g.FileSize)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "memory for --ctx %d total KV tokens %s shared by %d sequence(s), KV type %s:\n", ctx, ctxNote, o.parallel, o.kvType)
	fmt.Fprintf(w, "  weights       %10s  (file size)\n", human(uint64(weights)))
	fmt.Fprintf(w, "  KV cache      %10s  (n_layer %d × n_head_kv %d × (K %d + V %d) × %d cells × %.4g B; %d per sequence, llama.cpp rounds to 256)\n",
		human(uint64(kvTotal)), h.nLayer, h.nHeadKV, h.kDim, h.vDim, cells, o.bpe, perSeq)
	fmt.Fprintf(w, "  total         %10s  (plus compute buffers, typically tens of MiB)\n", human(uint64(weights+kvTotal)))

	// One token of one stream reads every weight once and that stream's
	// whole KV at worst (a full sequence).
	perTok := weights + perToken*float64(perSeq)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "bandwidth       %.1f GB/s (%s)\n", o.bandwidth/1e9, o.bwHow)
	fmt.Fprintf(w, "ceiling         %.0f tok/s for one stream = bandwidth / (weights + KV of one full sequence = %s per token)\n",
		o.bandwidth/perTok, human(uint64(perTok)))
}

func tensorTypes(g *engine.GGUF) string {
	n := map[string]int{}
	for _, t := range g.Tensors {
		n[engine.GGMLTypeName(t.Type)]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return n[keys[i]] > n[keys[j]] || n[keys[i]] == n[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, n[k])
	}
	return strings.Join(parts, ", ")
}

func human(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func count(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f K", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// measureBandwidth copies a 64 MiB buffer for about a quarter second and
// returns bytes moved (read + written, the STREAM "copy" convention) per
// second. Buffers much larger than any cache keep it a memory measurement.
func measureBandwidth() float64 {
	const size = 64 << 20
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src) // fault the pages in
	best := 0.0
	deadline := time.Now().Add(250 * time.Millisecond)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		copy(dst, src)
		if d := time.Since(t0).Seconds(); d > 0 {
			best = max(best, 2*size/d)
		}
	}
	return best
}
