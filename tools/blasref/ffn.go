package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"syscall"
	"time"
)

// The inputs and checks below are duplicated in cmd/moemesh/benchkernels.go (the two
// modules share no code on purpose); change both together or the bench reports a mismatch.

// Seeds of the three inputs; the PCG stream is keyed by the shape as well.
const (
	seedX   = 1
	seedW13 = 2
	seedW2  = 3
)

// fill sets dst to uniform values in [-scale, scale) from a generator keyed by seed, h and i.
func fill(dst []float32, seed uint64, h, i int, scale float32) {
	r := rand.New(rand.NewPCG(seed, uint64(h)<<32|uint64(i)))
	for j := range dst {
		dst[j] = (r.Float32()*2 - 1) * scale
	}
}

// checkIndices are the 8 output elements, spread over y[T][H], returned for comparison.
func checkIndices(t, h int) []int {
	n := t * h
	idx := make([]int, 8)
	for j := range idx {
		idx[j] = j * (n - 1) / 7
	}
	return idx
}

// expert is one f32 SwiGLU expert and scratch for up to maxT tokens.
type expert struct {
	h, i, maxT int
	w13        []float32 // [2I][H]: gate rows, then up rows
	w2         []float32 // [H][I]
	x          []float32 // [maxT][H]
	gu         []float32 // [maxT][2I]
	act        []float32 // [maxT][I]
	y          []float32 // [maxT][H]
}

// maxTokens bounds T so that a typo cannot ask for gigabytes of scratch.
const maxTokens = 1 << 14

func newExpert(h, i, maxT int) (*expert, error) {
	if h <= 0 || i <= 0 || maxT <= 0 || h > 1<<16 || i > 1<<16 || maxT > maxTokens {
		return nil, fmt.Errorf("shape H=%d I=%d T=%d out of range (1..65536, 1..65536, 1..%d)", h, i, maxT, maxTokens)
	}
	e := &expert{h: h, i: i, maxT: maxT,
		w13: make([]float32, 2*i*h), w2: make([]float32, h*i), x: make([]float32, maxT*h),
		gu: make([]float32, maxT*2*i), act: make([]float32, maxT*i), y: make([]float32, maxT*h)}
	fill(e.x, seedX, h, i, 1)
	fill(e.w13, seedW13, h, i, float32(1/math.Sqrt(float64(h))))
	fill(e.w2, seedW2, h, i, float32(1/math.Sqrt(float64(i))))
	return e, nil
}

// ffn computes y = W2·(silu(W1·x) ⊙ (W3·x)) for the first t tokens. gemv selects
// cblas_sgemv per token (only sensible at t = 1: OpenBLAS 0.3.21 does not forward M=1 sgemm
// to sgemv, and sgemm packs the weights on every call).
func (e *expert) ffn(t int, gemv bool) {
	h, i := e.h, e.i
	if gemv {
		for r := range t {
			sgemv(2*i, h, e.w13, e.x[r*h:(r+1)*h], e.gu[r*2*i:(r+1)*2*i])
		}
	} else {
		sgemmNT(t, 2*i, h, e.x, e.w13, e.gu)
	}
	// The same silu as the cpu backend's SwiGLU: evaluated in float64, rounded once.
	for r := range t {
		g, u, a := e.gu[r*2*i:r*2*i+i], e.gu[r*2*i+i:(r+1)*2*i], e.act[r*i:(r+1)*i]
		for j := range a {
			gv := float64(g[j])
			a[j] = float32(gv / (1 + math.Exp(-gv)) * float64(u[j]))
		}
	}
	if gemv {
		for r := range t {
			sgemv(h, i, e.w2, e.act[r*i:(r+1)*i], e.y[r*h:(r+1)*h])
		}
	} else {
		sgemmNT(t, h, i, e.act, e.w2, e.y)
	}
}

// timeFFN runs ffn once to warm caches and threads, then repeatedly until minTime has
// passed, and returns the calls made and the mean wall and process CPU time per call (CPU
// time includes OpenBLAS's helper threads, spinning ones too).
func (e *expert) timeFFN(t int, gemv bool, minTime time.Duration) (n int, wall, cpu time.Duration) {
	e.ffn(t, gemv)
	c0 := processCPU()
	start := time.Now()
	for n == 0 || time.Since(start) < minTime {
		e.ffn(t, gemv)
		n++
	}
	wall = time.Since(start) / time.Duration(n)
	return n, wall, (processCPU() - c0) / time.Duration(n)
}

// processCPU is the user+system time of the whole process so far (0 if unavailable).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
