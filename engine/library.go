package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// BackendVersion is the folder name of the pinned npm build of llama.cpp.
const BackendVersion = "linux-x64-3.22.1"

// Options says where the llama.cpp libraries are and where their log goes.
type Options struct {
	// LibDir is the folder holding libllama and libggml*. "" means DefaultLibDir().
	LibDir string
	// Logger receives llama.cpp's log lines. nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the lowest level forwarded to Logger. Its zero value (which
	// is also slog.LevelInfo) means slog.LevelWarn, because llama.cpp's INFO
	// is very chatty (hundreds of lines per model load). To forward INFO set
	// slog.LevelInfo-1; slog.LevelDebug forwards everything.
	LogLevel slog.Level
}

// Library is the loaded llama.cpp backend. There is at most one per process:
// llama.cpp's logger and backend registry are global.
type Library struct {
	dir    string
	logger *slog.Logger
	level  slog.Level

	// The thread pool functions live in the CPU backend variant library that
	// ggml_backend_load_all_from_path picked (libggml-cpu-zen4.so, ...).
	threadpoolNew  uintptr
	threadpoolFree uintptr
}

var (
	openMu  sync.Mutex
	openLib *Library
)

// DefaultLibDir returns the first existing folder of: $SPECD_LIB_DIR,
// <dir of the executable>/../.cache/backend/<BackendVersion>,
// ./.cache/backend/<BackendVersion>. When none exists it returns the last
// candidate so that Open's error names a sensible path.
func DefaultLibDir() string {
	if d := os.Getenv("SPECD_LIB_DIR"); d != "" {
		return d
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "..", ".cache", "backend", BackendVersion))
	}
	cands = append(cands, filepath.Join(".", ".cache", "backend", BackendVersion))
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return filepath.Clean(c)
		}
	}
	return cands[len(cands)-1]
}

// findLib returns the path of the first library in dir that matches one of
// names (exact file names, tried first) or patterns (globs). The npm build
// names its libraries libllama.v0.5.0.so; a user's own CMake build has
// libllama.so, libllama.so.0 and so on.
func findLib(dir string, names []string, patterns []string) (string, error) {
	for _, n := range names {
		p := filepath.Join(dir, n)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	for _, pat := range patterns {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		sort.Strings(m)
		if len(m) > 0 {
			return m[0], nil
		}
	}
	all := append(append([]string{}, names...), patterns...)
	return "", fmt.Errorf("none of %v found in %s", all, dir)
}

// Open loads the llama.cpp libraries from opts.LibDir once per process and
// initialises the backends. A second Open with the same folder returns the
// same Library; with another folder it is an error. Any missing file or
// symbol is a one-line error naming what was looked for.
func Open(opts Options) (*Library, error) {
	dir := opts.LibDir
	if dir == "" {
		dir = DefaultLibDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("engine: library folder %q: %w", dir, err)
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("engine: llama.cpp library folder %s does not exist (set SPECD_LIB_DIR or run `make backend`)", abs)
	}
	paths, err := findLibs(abs)
	if err != nil {
		return nil, err
	}

	openMu.Lock()
	defer openMu.Unlock()
	if openLib != nil {
		if openLib.dir != abs {
			return nil, fmt.Errorf("engine: llama.cpp already loaded from %s; cannot also load %s in one process", openLib.dir, abs)
		}
		return openLib, nil
	}

	// A GGML_ABORT would otherwise fork gdb to print a backtrace before the
	// process dies.
	os.Setenv("GGML_NO_BACKTRACE", "1")

	l := &Library{dir: abs, logger: opts.Logger, level: opts.LogLevel}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	if l.level == 0 {
		l.level = slog.LevelWarn
	}
	if err := l.load(paths); err != nil {
		return nil, err
	}
	openLib = l
	return l, nil
}

type libPaths struct{ base, ggml, llama string }

func findLibs(dir string) (libPaths, error) {
	var p libPaths
	var err error
	if p.base, err = findLib(dir, []string{"libggml-base.so", "libggml-base.so.0"}, []string{"libggml-base.v*.so", "libggml-base.so.*"}); err != nil {
		return p, fmt.Errorf("engine: ggml base library: %w", err)
	}
	if p.ggml, err = findLib(dir, []string{"libggml.so", "libggml.so.0"}, []string{"libggml.v*.so", "libggml.so.*"}); err != nil {
		return p, fmt.Errorf("engine: ggml library: %w", err)
	}
	if p.llama, err = findLib(dir, []string{"libllama.so", "libllama.so.0"}, []string{"libllama.v*.so", "libllama.so.*"}); err != nil {
		return p, fmt.Errorf("engine: llama library: %w", err)
	}
	return p, nil
}

// binder resolves symbols of one library and turns the first failure into an
// error instead of purego's panic.
type binder struct {
	handle uintptr
	path   string
	err    error
}

func (b *binder) fn(fptr any, name string) {
	if b.err != nil {
		return
	}
	sym, err := purego.Dlsym(b.handle, name)
	if err != nil || sym == 0 {
		b.err = fmt.Errorf("engine: could not load %q from %s", name, b.path)
		return
	}
	purego.RegisterFunc(fptr, sym)
}

func (b *binder) sym(name string) uintptr {
	if b.err != nil {
		return 0
	}
	sym, err := purego.Dlsym(b.handle, name)
	if err != nil || sym == 0 {
		b.err = fmt.Errorf("engine: could not load %q from %s", name, b.path)
		return 0
	}
	return sym
}

func dlopen(path string) (*binder, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("engine: could not open %s: %v", path, err)
	}
	return &binder{handle: h, path: path}, nil
}

// ggml functions that are not part of one llama.h area.
var (
	ggmlBackendLoadAllFromPath   func(dir string)
	ggmlBackendDevByType         func(typ int32) uintptr
	ggmlBackendDevBackendReg     func(dev uintptr) uintptr
	ggmlBackendRegGetProcAddress func(reg uintptr, name string) uintptr
	ggmlThreadpoolParamsInit     func(p *cThreadpoolParams, nThreads int32)
	llamaLogSet                  func(cb uintptr, user uintptr)
	llamaBackendInit             func()
	llamaPrintSystemInfo         func() string
)

const ggmlBackendDeviceTypeCPU = 0

func (l *Library) load(p libPaths) error {
	base, err := dlopen(p.base)
	if err != nil {
		return err
	}
	gg, err := dlopen(p.ggml)
	if err != nil {
		return err
	}
	ll, err := dlopen(p.llama)
	if err != nil {
		return err
	}
	base.fn(&ggmlThreadpoolParamsInit, "ggml_threadpool_params_init")
	gg.fn(&ggmlBackendLoadAllFromPath, "ggml_backend_load_all_from_path")
	gg.fn(&ggmlBackendDevByType, "ggml_backend_dev_by_type")
	base.fn(&ggmlBackendDevBackendReg, "ggml_backend_dev_backend_reg")
	base.fn(&ggmlBackendRegGetProcAddress, "ggml_backend_reg_get_proc_address")
	ll.fn(&llamaLogSet, "llama_log_set")
	ll.fn(&llamaBackendInit, "llama_backend_init")
	ll.fn(&llamaPrintSystemInfo, "llama_print_system_info")
	bindModel(ll)
	bindVocab(ll)
	bindGrammar(ll)
	bindContext(ll)
	bindBatch(ll)
	bindMemory(ll)
	bindQuantize(ll)
	for _, b := range []*binder{base, gg, ll} {
		if b.err != nil {
			return b.err
		}
	}

	// The logger must be in place before backends load: loading logs, and
	// llama_log_set also sets ggml's logger.
	installLogger(l)
	ggmlBackendLoadAllFromPath(l.dir)
	llamaBackendInit()

	cpu := ggmlBackendDevByType(ggmlBackendDeviceTypeCPU)
	if cpu == 0 {
		return fmt.Errorf("engine: no CPU backend loaded from %s (expected a libggml-cpu*.so there)", l.dir)
	}
	reg := ggmlBackendDevBackendReg(cpu)
	l.threadpoolNew = ggmlBackendRegGetProcAddress(reg, "ggml_threadpool_new")
	l.threadpoolFree = ggmlBackendRegGetProcAddress(reg, "ggml_threadpool_free")
	if l.threadpoolNew == 0 {
		return fmt.Errorf("engine: could not load %q from the CPU backend in %s", "ggml_threadpool_new", l.dir)
	}
	if l.threadpoolFree == 0 {
		return fmt.Errorf("engine: could not load %q from the CPU backend in %s", "ggml_threadpool_free", l.dir)
	}
	return nil
}

// Dir is the folder the libraries were loaded from.
func (l *Library) Dir() string { return l.dir }

// SystemInfo is llama.cpp's one-line summary of the CPU features in use.
func (l *Library) SystemInfo() string { return llamaPrintSystemInfo() }

// ---- logging ----

// ggml_log_level
const (
	ggmlLogNone  = 0
	ggmlLogDebug = 1
	ggmlLogInfo  = 2
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5
)

// logSink joins llama.cpp's line fragments (GGML_LOG_LEVEL_CONT, missing
// newlines) into whole lines and remembers the last error line so failed
// native calls can say why.
type logSink struct {
	mu      sync.Mutex
	lib     *Library
	buf     []byte
	level   int32
	lastErr string
}

var (
	sink      logSink
	logCbOnce sync.Once
	logCbPtr  uintptr
)

func installLogger(l *Library) {
	sink.mu.Lock()
	sink.lib = l
	sink.mu.Unlock()
	// purego callbacks are never freed: make exactly one.
	logCbOnce.Do(func() {
		logCbPtr = purego.NewCallback(func(level int32, text *byte, _ uintptr) {
			sink.write(level, text)
		})
	})
	llamaLogSet(logCbPtr, 0)
}

func (s *logSink) write(level int32, text *byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if level != ggmlLogCont {
		if len(s.buf) > 0 {
			s.flushLocked()
		}
		s.level = level
	}
	if s.level == ggmlLogDebug && (s.lib == nil || s.lib.level > slog.LevelDebug) {
		// Dropped without a copy: llama.cpp logs at debug level on calls
		// the scheduler makes per decode (llama_set_n_threads).
		return
	}
	s.buf = append(s.buf, goStringPtr(text)...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.emitLocked(string(s.buf[:i]))
		s.buf = s.buf[:copy(s.buf, s.buf[i+1:])]
	}
}

func (s *logSink) flushLocked() {
	s.emitLocked(string(s.buf))
	s.buf = s.buf[:0]
}

func (s *logSink) emitLocked(line string) {
	if line == "" {
		return
	}
	var lv slog.Level
	switch s.level {
	case ggmlLogDebug:
		lv = slog.LevelDebug
	case ggmlLogInfo, ggmlLogNone:
		lv = slog.LevelInfo
	case ggmlLogWarn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelError
	}
	if lv >= slog.LevelError {
		s.lastErr = line
	}
	if s.lib == nil || lv < s.lib.level {
		return
	}
	s.lib.logger.LogAttrs(context.Background(), lv, line, slog.String("from", "llama.cpp"))
}

// takeLastError returns and clears the last error line llama.cpp logged.
func takeLastError() string {
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.buf) > 0 {
		sink.flushLocked()
	}
	e := sink.lastErr
	sink.lastErr = ""
	return e
}

// withLastError appends llama.cpp's last logged error, if any, to msg.
func withLastError(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if e := takeLastError(); e != "" {
		msg += ": " + e
	}
	return errors.New(msg)
}

// goStringPtr copies a NUL-terminated C string.
func goStringPtr(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
