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
type ThreadPool struct {
	lib      *Library
	ptr      uintptr
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
	return &ThreadPool{lib: l, ptr: r, nThreads: nThreads}, nil
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
	})
}
