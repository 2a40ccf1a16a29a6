package scheduler

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// fakeModel is a deterministic stand-in for a llama.cpp context, for tests
// of scheduling logic. It models KV cells the way llama.cpp does (a cell has
// a position and a set of sequences; Copy shares cells; a pool of nCtx
// cells) and refuses a row whose earlier positions are missing from its
// sequence, so scheduler bugs that leave holes or stale cells show up as
// errors or wrong tokens. Its "next token" depends only on the last two
// tokens of the sequence (and on variant, for a draft that sometimes
// disagrees), so output never depends on the rest of the batch.
type fakeModel struct {
	nVocab  int
	nCtx    int
	variant uint64 // 0: target; otherwise a draft that disagrees sometimes
	cells   map[int]*fakeCell
	nextID  int
	seqs    map[int32]map[int32]int // seq → pos → cell id
	batch   []fakeRow
	out     map[int][]float32
	decodes int
	rows    int // rows decoded in all
	most    int // the most rows in one decode
	failAt  int // if > 0, the failAt-th Decode fails
}

type fakeCell struct {
	pos, tok int32
	seqs     map[int32]bool
}

type fakeRow struct {
	tok, pos, seq int32
	logits        bool
}

func newFake(nVocab, nCtx int, variant uint64) *fakeModel {
	return &fakeModel{nVocab: nVocab, nCtx: nCtx, variant: variant, cells: map[int]*fakeCell{}, seqs: map[int32]map[int32]int{}, out: map[int][]float32{}}
}

func (m *fakeModel) Add(tok, pos, seq int32, logits bool) int {
	m.batch = append(m.batch, fakeRow{tok, pos, seq, logits})
	return len(m.batch) - 1
}
func (m *fakeModel) Pending() int { return len(m.batch) }
func (m *fakeModel) Discard()     { m.batch = m.batch[:0] }

var errFakeKVFull = errors.New("fake: no KV slot")

func (m *fakeModel) Decode() error {
	m.decodes++
	m.rows += len(m.batch)
	m.most = max(m.most, len(m.batch))
	batch := m.batch
	m.batch = nil
	m.out = map[int][]float32{}
	if m.failAt > 0 && m.decodes == m.failAt {
		return errors.New("fake: injected decode failure")
	}
	if len(m.cells)+len(batch) > m.nCtx {
		return errFakeKVFull
	}
	for i, r := range batch {
		if r.tok < 0 || int(r.tok) >= m.nVocab {
			return fmt.Errorf("fake: token %d out of range", r.tok)
		}
		sc := m.seqs[r.seq]
		if sc == nil {
			sc = map[int32]int{}
			m.seqs[r.seq] = sc
		}
		if _, dup := sc[r.pos]; dup {
			return fmt.Errorf("fake: seq %d already has position %d", r.seq, r.pos)
		}
		for p := int32(0); p < r.pos; p++ {
			if _, ok := sc[p]; !ok {
				return fmt.Errorf("fake: seq %d row %d at pos %d but pos %d is missing", r.seq, i, r.pos, p)
			}
		}
		m.nextID++
		m.cells[m.nextID] = &fakeCell{pos: r.pos, tok: r.tok, seqs: map[int32]bool{r.seq: true}}
		sc[r.pos] = m.nextID
		if r.logits {
			prev := int32(-1)
			if r.pos > 0 {
				prev = m.cells[sc[r.pos-1]].tok
			}
			m.out[i] = m.logitsFor(prev, r.tok, r.pos)
		}
	}
	return nil
}

func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// logitsFor: a peaked distribution whose favourite depends on the last two
// tokens; the draft variant changes the favourite for about 1/4 of contexts.
func (m *fakeModel) logitsFor(prev, tok, pos int32) []float32 {
	h := mix(uint64(uint32(prev))<<32 | uint64(uint32(tok)))
	fav := int(h % uint64(m.nVocab))
	if m.variant != 0 && mix(h^m.variant)%4 == 0 {
		fav = int(mix(h+m.variant) % uint64(m.nVocab))
	}
	l := make([]float32, m.nVocab)
	for i := range l {
		l[i] = float32(mix(h+uint64(i)*0x9e37)%1000) / 1000
	}
	l[fav] += 3
	_ = math.Inf
	return l
}

func (m *fakeModel) Logits(row int) []float32 { return m.out[row] }

func (m *fakeModel) Remove(seq, p0, p1 int32) {
	if traceFake {
		fmt.Printf("remove seq %d [%d,%d)\n", seq, p0, p1)
	}
	sc := m.seqs[seq]
	for p, id := range sc {
		if p >= p0 && (p1 < 0 || p < p1) {
			delete(sc, p)
			c := m.cells[id]
			delete(c.seqs, seq)
			if len(c.seqs) == 0 {
				delete(m.cells, id)
			}
		}
	}
}

func (m *fakeModel) Copy(src, dst, p0, p1 int32) {
	sc := m.seqs[src]
	dc := m.seqs[dst]
	if dc == nil {
		dc = map[int32]int{}
		m.seqs[dst] = dc
	}
	for p, id := range sc {
		if p >= p0 && (p1 < 0 || p < p1) {
			if old, ok := dc[p]; ok && old != id {
				panic(fmt.Sprintf("fake: copy onto occupied position %d of seq %d", p, dst))
			}
			dc[p] = id
			m.cells[id].seqs[dst] = true
		}
	}
}

func (m *fakeModel) PosMax(seq int32) int32 {
	mx := int32(-1)
	for p := range m.seqs[seq] {
		mx = max(mx, p)
	}
	return mx
}

// SaveState serialises a sequence's positions and tokens.
func (m *fakeModel) SaveState(seq int32) ([]byte, error) {
	sc := m.seqs[seq]
	if traceFake {
		fmt.Printf("save seq %d: %d positions\n", seq, len(sc))
	}
	ps := make([]int, 0, len(sc))
	for p := range sc {
		ps = append(ps, int(p))
	}
	sort.Ints(ps)
	var b []byte
	for _, p := range ps {
		b = strconv.AppendInt(b, int64(p), 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(m.cells[sc[int32(p)]].tok), 10)
		b = append(b, ',')
	}
	return b, nil
}

var traceFake bool

func (m *fakeModel) RestoreState(seq int32, data []byte) error {
	if traceFake {
		fmt.Printf("restore seq %d: %d bytes\n", seq, len(data))
	}
	var p, t int64
	cur := int64(0)
	for _, c := range data {
		switch {
		case c >= '0' && c <= '9':
			cur = cur*10 + int64(c-'0')
		case c == ':':
			p, cur = cur, 0
		case c == ',':
			t, cur = cur, 0
			if len(m.cells) >= m.nCtx {
				return errFakeKVFull
			}
			m.nextID++
			m.cells[m.nextID] = &fakeCell{pos: int32(p), tok: int32(t), seqs: map[int32]bool{seq: true}}
			if m.seqs[seq] == nil {
				m.seqs[seq] = map[int32]int{}
			}
			m.seqs[seq][int32(p)] = m.nextID
		}
	}
	return nil
}

// usedCells counts cells that belong to any sequence.
func (m *fakeModel) usedCells() int { return len(m.cells) }

// fakeVocab: token i renders as "<i>" except a few special ones.
type fakeVocab struct{ n int }

func (v fakeVocab) NTokens() int       { return v.n }
func (v fakeVocab) IsEOG(t int32) bool { return t == 2 }
func (v fakeVocab) AppendPiece(dst []byte, t int32, special bool) []byte {
	dst = append(dst, ' ')
	return strconv.AppendInt(dst, int64(t), 10)
}
func (v fakeVocab) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	out := []int32{1}
	for _, c := range []byte(text) {
		out = append(out, int32(c)%int32(v.n))
	}
	return out, nil
}
