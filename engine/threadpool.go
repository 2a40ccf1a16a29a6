package engine

import (
	"fmt"
	"structs"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cThreadpoolParams mirrors struct ggml_threadpool_params (ggml.h): 528 bytes.
type cThreadpoolParams struct {
	_         structs.HostLayout
	CPUMask   [512]bool // GGML_MAX_N_THREADS
	NThreads  int32
	Prio      int32 // enum ggml_sched_priority
	Poll      uint32
	StrictCPU bool
	Paused    bool
	_         [2]byte
}

// ThreadPool is a ggml compute thread pool. Without one attached, ggml
// creates and joins its worker threads on every llama_decode, which makes a
// one-token decode about a hundred times slower. One pool may serve several
// contexts that never decode at the same time (a target and its draft).
//
// A pool of more than one thread carries a second, one-thread pool (solo)
// for the decodes that a context runs on one thread (Context.SetThreads):
// ggml kicks every worker of the attached pool at each graph, even one that
// uses a single thread, and a kicked worker spins for the next graph; on
// solo nothing else wakes, and ggml pauses the large pool (its workers
// sleep) when a context's backend switches from it to solo, so the cores
// it would spin on go to the HTTP server and other processes. Attaching the
// large pool again resumes it.
type ThreadPool struct {
	lib      *Library
	ptr      uintptr
	solo     uintptr // a one-thread pool, or 0
	nThreads int
	once     sync.Once
}

// NewThreadPool starts nThreads compute threads with ggml's default
// parameters (hybrid polling, inherited affinity).
func (l *Library) NewThreadPool(nThreads int) (*ThreadPool, error) {
	if nThreads < 1 || nThreads > 512 {
		return nil, fmt.Errorf("engine: thread pool size %d out of range 1..512", nThreads)
	}
	var p cThreadpoolParams
	ggmlThreadpoolParamsInit(&p, int32(nThreads))
	r, _, _ := purego.SyscallN(l.threadpoolNew, uintptr(unsafe.Pointer(&p)))
	if r == 0 {
		return nil, withLastError("engine: ggml_threadpool_new(%d threads) failed", nThreads)
	}
	tp := &ThreadPool{lib: l, ptr: r, nThreads: nThreads}
	if nThreads > 1 {
		// Without it one-thread decodes run on the large pool, as before.
		ggmlThreadpoolParamsInit(&p, 1)
		tp.solo, _, _ = purego.SyscallN(l.threadpoolNew, uintptr(unsafe.Pointer(&p)))
	}
	return tp, nil
}

// forThreads is the ggml pool a decode on n threads attaches; onPool keeps
// one-thread decodes on the pool too (ContextParams.OneThreadOnPool).
func (p *ThreadPool) forThreads(n int, onPool bool) uintptr {
	if n == 1 && p.solo != 0 && !onPool {
		return p.solo
	}
	return p.ptr
}

// Threads is the number of compute threads.
func (p *ThreadPool) Threads() int { return p.nThreads }

// Close stops the threads. Close every context using the pool first.
func (p *ThreadPool) Close() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		purego.SyscallN(p.lib.threadpoolFree, p.ptr)
		p.ptr = 0
		if p.solo != 0 {
			purego.SyscallN(p.lib.threadpoolFree, p.solo)
			p.solo = 0
		}
	})
}
