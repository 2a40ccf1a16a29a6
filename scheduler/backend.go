package scheduler

// Model is one llama.cpp context as the scheduler drives it: a pending batch
// that rows are added to, one decode, logits by row, and the KV memory
// operations. The engine adapter (engine_model.go) implements it over
// engine.Context and engine.Batch; tests of pure scheduling logic use a fake.
type Model interface {
	// Add appends a row to the pending batch and returns its row index.
	Add(tok, pos, seq int32, logits bool) int
	// Pending is the number of rows added since the last Decode.
	Pending() int
	// Decode runs the pending rows; afterwards the batch is empty and
	// Logits(row) is valid for rows that asked for logits, until the next
	// Decode.
	Decode() error
	// Discard drops the pending rows without decoding.
	Discard()
	Logits(row int) []float32
	Remove(seq, p0, p1 int32)
	Copy(src, dst, p0, p1 int32)
	PosMax(seq int32) int32
	SaveState(seq int32) ([]byte, error)
	RestoreState(seq int32, data []byte) error
}

// Vocab is what the scheduler needs of the target's tokenizer.
type Vocab interface {
	NTokens() int
	IsEOG(t int32) bool
	AppendPiece(dst []byte, t int32, special bool) []byte
	Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error)
}
