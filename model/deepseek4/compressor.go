package deepseek4

import (
	"fmt"
	"math"
)

// Compressor is one sequence's decode-time compressor state (model.py Compressor
// kv_state / score_state): the tokens of the window being filled and, with overlap, the
// previous window, already projected (wkv, wgate) and with ape added to the scores. Push
// takes one token and returns the pooled row when its window completes, the same row
// Pool gives for that window in prefill.
type Compressor struct {
	ratio, d int
	overlap  bool
	ape      []float32
	// kv and score hold coff·ratio token rows of coff·d values: rows [0, ratio) the
	// previous window (overlap only), rows [ratio·(coff−1), …) the current one.
	kv, score []float64
	pos       int // tokens seen
}

// NewCompressor returns an empty state for a layer's compressor (ratio 4 overlaps).
func NewCompressor(ape []float32, ratio, d int, overlap bool) (*Compressor, error) {
	coff := 1
	if overlap {
		coff = 2
	}
	if ratio < 1 || d < 1 || len(ape) != ratio*coff*d {
		return nil, fmt.Errorf("%w: compressor: ape %d for ratio %d and %d dims per token", ErrShape, len(ape), ratio, coff*d)
	}
	c := &Compressor{ratio: ratio, d: d, overlap: overlap, ape: ape,
		kv: make([]float64, coff*ratio*coff*d), score: make([]float64, coff*ratio*coff*d)}
	for i := range c.score {
		c.score[i] = math.Inf(-1) // a missing predecessor weighs nothing
	}
	return c, nil
}

// Pos is the number of tokens pushed.
func (c *Compressor) Pos() int { return c.pos }

// Push adds the next token's wkv(x) and wgate(x) rows (coff·d values each).
func (c *Compressor) Push(kv, score []float32) ([]float32, bool, error) {
	coff := 1
	if c.overlap {
		coff = 2
	}
	w := coff * c.d
	if len(kv) != w || len(score) != w {
		return nil, false, fmt.Errorf("%w: compressor push: kv %d, score %d, want %d", ErrShape, len(kv), len(score), w)
	}
	k := c.pos % c.ratio
	slot := (coff-1)*c.ratio + k
	for j := range w {
		c.kv[slot*w+j] = float64(kv[j])
		c.score[slot*w+j] = float64(score[j]) + float64(c.ape[k*w+j])
	}
	c.pos++
	if c.pos%c.ratio != 0 {
		return nil, false, nil
	}
	row := make([]float32, c.d)
	for j := range c.d {
		mx := math.Inf(-1)
		each := func(f func(v, s float64)) {
			if c.overlap {
				for t := range c.ratio { // previous window, first half of the dims
					f(c.kv[t*w+j], c.score[t*w+j])
				}
			}
			off := (coff - 1) * c.d
			for t := (coff - 1) * c.ratio; t < coff*c.ratio; t++ {
				f(c.kv[t*w+off+j], c.score[t*w+off+j])
			}
		}
		each(func(_, s float64) { mx = max(mx, s) })
		sum, acc := 0.0, 0.0
		each(func(v, s float64) {
			e := math.Exp(s - mx)
			sum += e
			acc += e * v
		})
		row[j] = float32(acc / sum)
	}
	if c.overlap { // the finished window becomes the next one's predecessor
		copy(c.kv[:c.ratio*w], c.kv[c.ratio*w:])
		copy(c.score[:c.ratio*w], c.score[c.ratio*w:])
	}
	return row, true, nil
}
