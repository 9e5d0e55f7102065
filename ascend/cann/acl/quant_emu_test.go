//go:build cann && !cann_real

package acl_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// The emulator's quantised-weight ops against naive references computed here: the
// dequantisation chain the cann card uses (Cast, Mul, Embedding) and GroupedMatmulV5's
// A16W8 antiquant mode (dequantise (q + offset)·scale, then matmul, in float64).

// upload copies b into fresh device memory synchronously.
func upload(t *testing.T, b []byte) acl.Ptr {
	t.Helper()
	p := devAlloc(t, max(len(b), 1))
	if len(b) > 0 {
		must(t, acl.Memcpy(p, len(b), acl.GoBytes(b), len(b), acl.HostToDevice))
	}
	return p
}

func view(t *testing.T, dims, strides []int64, dt acl.DataType, storage []int64, p acl.Ptr) acl.Tensor {
	t.Helper()
	if strides == nil {
		strides = acl.Contiguous(dims)
	}
	x, err := acl.CreateTensor(dims, strides, 0, dt, acl.FormatND, storage, p)
	must(t, err)
	return x
}

// launch runs phase 2 with a workspace of the size phase 1 asked for, then syncs.
func launch(t *testing.T, s acl.Stream, ws uint64, ex acl.Executor, run func(acl.Ptr, uint64, acl.Executor, acl.Stream) error) error {
	t.Helper()
	var p acl.Ptr
	if ws > 0 {
		p = devAlloc(t, int(ws))
	}
	must(t, run(p, ws, ex, s))
	return s.Synchronize()
}

// half16 decodes a bf16 (bf = true) or IEEE f16 bit pattern.
func half16(h uint16, bf bool) float64 {
	if bf {
		return float64(math.Float32frombits(uint32(h) << 16))
	}
	sign, exp, mant := 1.0, int(h>>10&0x1f), float64(h&0x3ff)
	if h&0x8000 != 0 {
		sign = -1
	}
	switch exp {
	case 0:
		return sign * mant * math.Ldexp(1, -24)
	case 0x1f:
		if mant != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * (1 + mant/1024) * math.Ldexp(1, exp-15)
}

// randHalf is a random normal bf16/f16 bit pattern with |v| in [2^lo, 2^hi).
func randHalf(rng *rand.Rand, bf bool, lo, hi int) uint16 {
	e, sign := lo+rng.IntN(hi-lo), uint16(rng.IntN(2))<<15
	if bf {
		return sign | uint16(e+127)<<7 | uint16(rng.IntN(128))
	}
	return sign | uint16(e+15)<<10 | uint16(rng.IntN(1024))
}

func put16s(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, h := range v {
		binary.LittleEndian.PutUint16(b[2*i:], h)
	}
	return b
}

type a16w8Case struct {
	name        string
	bf          bool // x, out and the scales in bf16 (else f16)
	m, k, n     int
	counts      []int64 // per group (groupListType 1) or cumulative (0)
	glType      int64
	offset      bool // with an antiquantOffset
	w3d         bool // one [E, K, N] weight tensor (else a list of [K, N])
	transposedW bool // weight storage [.., N, K] viewed as [.., K, N]
}

var a16w8Cases = []a16w8Case{
	{name: "bf16 list counts", bf: true, m: 7, k: 5, n: 4, counts: []int64{2, 0, 4}, glType: 1},
	{name: "f16 list cumulative offset", m: 6, k: 9, n: 3, counts: []int64{1, 4, 6}, glType: 0, offset: true},
	{name: "bf16 3-D transposed", bf: true, m: 5, k: 33, n: 6, counts: []int64{3, 2}, glType: 1, w3d: true, transposedW: true},
	{name: "f16 list transposed offset", m: 4, k: 16, n: 8, counts: []int64{4}, glType: 1, offset: true, transposedW: true},
}

// a16w8Setup uploads one case's data and returns the argument lists and the reference.
type a16w8Args struct {
	x, w, scale, offset, out acl.TensorList
	gl                       acl.Tensor
	outPtr                   acl.Ptr
	want                     []float64 // NaN: row not covered
}

func (a a16w8Args) destroy(t *testing.T) {
	for _, l := range []acl.TensorList{a.x, a.w, a.scale, a.offset, a.out} {
		if l != (acl.TensorList{}) {
			must(t, l.Destroy())
		}
	}
	must(t, a.gl.Destroy())
}

func a16w8Setup(t *testing.T, tc a16w8Case, seed uint64) a16w8Args {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	E, m, k, n := len(tc.counts), tc.m, tc.k, tc.n
	dt := acl.Float16
	if tc.bf {
		dt = acl.BF16
	}
	xs := make([]uint16, m*k)
	for i := range xs {
		xs[i] = randHalf(rng, tc.bf, -3, 2)
	}
	q := make([]byte, E*n*k) // q[g][n][k] if transposed, else q[g][k][n]
	for i := range q {
		q[i] = byte(int8(rng.IntN(255) - 127))
	}
	sc, of := make([]uint16, E*n), make([]uint16, E*n)
	for i := range sc {
		sc[i] = randHalf(rng, tc.bf, -8, -4)
		of[i] = randHalf(rng, tc.bf, -1, 3)
	}
	qAt := func(g, kk, nn int) float64 {
		if tc.transposedW {
			return float64(int8(q[g*n*k+nn*k+kk]))
		}
		return float64(int8(q[g*k*n+kk*n+nn]))
	}
	var args a16w8Args
	xp, qp, sp, op := upload(t, put16s(xs)), upload(t, q), upload(t, put16s(sc)), upload(t, put16s(of))
	args.outPtr = devAlloc(t, 2*m*n) // poison: NaN in bf16 and f16
	var err error
	args.x, err = acl.CreateTensorList(view(t, []int64{int64(m), int64(k)}, nil, dt, nil, xp))
	must(t, err)
	args.out, err = acl.CreateTensorList(view(t, []int64{int64(m), int64(n)}, nil, dt, nil, args.outPtr))
	must(t, err)
	wstrides := func(lead int64) []int64 { // strides of a [K, N] view, after lead for 3-D
		s := []int64{int64(n), 1}
		if tc.transposedW {
			s = []int64{1, int64(k)}
		}
		if lead >= 0 {
			return append([]int64{lead}, s...)
		}
		return s
	}
	if tc.w3d {
		store := []int64{int64(E), int64(k), int64(n)}
		if tc.transposedW {
			store = []int64{int64(E), int64(n), int64(k)}
		}
		args.w, err = acl.CreateTensorList(view(t, []int64{int64(E), int64(k), int64(n)}, wstrides(int64(n*k)), acl.Int8, store, qp))
		must(t, err)
		args.scale, err = acl.CreateTensorList(view(t, []int64{int64(E), int64(n)}, nil, dt, nil, sp))
		must(t, err)
		if tc.offset {
			args.offset, err = acl.CreateTensorList(view(t, []int64{int64(E), int64(n)}, nil, dt, nil, op))
			must(t, err)
		}
	} else {
		var ws, ss, os []acl.Tensor
		for g := range E {
			store := []int64{int64(k), int64(n)}
			if tc.transposedW {
				store = []int64{int64(n), int64(k)}
			}
			ws = append(ws, view(t, []int64{int64(k), int64(n)}, wstrides(-1), acl.Int8, store, qp.Add(g*n*k)))
			ss = append(ss, view(t, []int64{int64(n)}, nil, dt, nil, sp.Add(2*g*n)))
			os = append(os, view(t, []int64{int64(n)}, nil, dt, nil, op.Add(2*g*n)))
		}
		args.w, err = acl.CreateTensorList(ws...)
		must(t, err)
		args.scale, err = acl.CreateTensorList(ss...)
		must(t, err)
		if tc.offset {
			args.offset, err = acl.CreateTensorList(os...)
			must(t, err)
		} else {
			for _, o := range os {
				must(t, o.Destroy())
			}
		}
	}
	glb := make([]byte, 8*E)
	for i, c := range tc.counts {
		binary.LittleEndian.PutUint64(glb[8*i:], uint64(c))
	}
	args.gl = view(t, []int64{int64(E)}, nil, acl.Int64, nil, upload(t, glb))

	args.want = make([]float64, m*n)
	for i := range args.want {
		args.want[i] = math.NaN()
	}
	row := 0
	for g, c := range tc.counts {
		if tc.glType == 0 {
			c -= int64(row)
		}
		for r := row; r < row+int(c); r++ {
			for nn := range n {
				s, o := half16(sc[g*n+nn], tc.bf), 0.0
				if tc.offset {
					o = half16(of[g*n+nn], tc.bf)
				}
				acc := 0.0
				for kk := range k {
					acc += half16(xs[r*k+kk], tc.bf) * (qAt(g, kk, nn) + o) * s
				}
				args.want[r*n+nn] = acc
			}
		}
		row += int(c)
	}
	return args
}

// TestGroupedMatmulA16W8: INT8 weights with per-channel antiquant scale (and offset) give
// x·((q + offset)·scale) rounded once to out's dtype, for weight lists and 3-D weights,
// plain and transposed views, both group-list types; rows past the list stay unwritten.
func TestGroupedMatmulA16W8(t *testing.T) {
	for ci, tc := range a16w8Cases {
		t.Run(tc.name, func(t *testing.T) {
			s := bind(t) // a subtest runs on a thread of its own
			a := a16w8Setup(t, tc, uint64(ci))
			defer a.destroy(t)
			ws, ex, err := acl.GroupedMatmulV5AntiquantWorkspaceSize(a.x, a.w, a.scale, a.offset, a.gl, 3, 0, tc.glType, a.out)
			must(t, err)
			must(t, launch(t, s, ws, ex, acl.GroupedMatmulV5))
			raw := readDev(t, a.outPtr, 2*tc.m*tc.n)
			mant := 10
			if tc.bf {
				mant = 7
			}
			for i, want := range a.want {
				got := half16(binary.LittleEndian.Uint16(raw[2*i:]), tc.bf)
				if math.IsNaN(want) {
					if !math.IsNaN(got) {
						t.Errorf("out[%d] = %g: a row past the group list was written", i, got)
					}
					continue
				}
				_, e := math.Frexp(want)
				if ulp := math.Ldexp(1, e-1-mant); math.Abs(got-want) > ulp {
					t.Errorf("out[%d] = %g, want %g (±%g)", i, got, want, ulp)
				}
			}
		})
	}
}

// TestGroupedMatmulA16W8Refused: phase 1 refuses what the documented A16W8 mode does not
// take (FLOAT activations, scales in another dtype or per group, groupListType 2, antiquant
// with float weights, a missing scale) without leaking the executor it started.
func TestGroupedMatmulA16W8Refused(t *testing.T) {
	bind(t)
	tc := a16w8Cases[0]
	a := a16w8Setup(t, tc, 9)
	defer a.destroy(t)
	n := int64(tc.n)
	p := devAlloc(t, 4096)
	list := func(ts ...acl.Tensor) acl.TensorList {
		l, err := acl.CreateTensorList(ts...)
		must(t, err)
		t.Cleanup(func() { must(t, l.Destroy()) })
		return l
	}
	scales := func(dims []int64, dt acl.DataType) acl.TensorList {
		ts := make([]acl.Tensor, len(tc.counts))
		for i := range ts {
			ts[i] = view(t, dims, nil, dt, nil, p)
		}
		return list(ts...)
	}
	floatX := list(view(t, []int64{int64(tc.m), int64(tc.k)}, nil, acl.Float, nil, p))
	floatOut := list(view(t, []int64{int64(tc.m), n}, nil, acl.Float, nil, p))
	bfW := make([]acl.Tensor, len(tc.counts))
	for i := range bfW {
		bfW[i] = view(t, []int64{int64(tc.k), n}, nil, acl.BF16, nil, p)
	}
	before := acl.Stats().Executors
	for _, bad := range []struct {
		name          string
		x, w, sc, out acl.TensorList
		glType        int64
		want          int
	}{
		{"FLOAT x and out", floatX, a.w, a.scale, floatOut, 1, acl.ErrNNParamInvalid},
		{"no antiquantScale", a.x, a.w, acl.TensorList{}, a.out, 1, acl.ErrNNParamNullptr},
		{"FLOAT scales for bf16 x", a.x, a.w, scales([]int64{n}, acl.Float), a.out, 1, acl.ErrNNParamInvalid},
		{"scales [N+1]", a.x, a.w, scales([]int64{n + 1}, acl.BF16), a.out, 1, acl.ErrNNParamInvalid},
		{"per-group scales [2, N]", a.x, a.w, scales([]int64{2, n}, acl.BF16), a.out, 1, acl.ErrNNParamInvalid},
		{"one scale tensor for three weights", a.x, a.w, list(view(t, []int64{n}, nil, acl.BF16, nil, p)), a.out, 1, acl.ErrNNParamInvalid},
		{"groupListType 2", a.x, a.w, a.scale, a.out, 2, acl.ErrNNParamInvalid},
		{"antiquant with bf16 weights", a.x, list(bfW...), a.scale, a.out, 1, acl.ErrNNParamInvalid},
	} {
		_, _, err := acl.GroupedMatmulV5AntiquantWorkspaceSize(bad.x, bad.w, bad.sc, acl.TensorList{}, a.gl, 3, 0, bad.glType, bad.out)
		wantCode(t, bad.name, err, bad.want)
	}
	if after := acl.Stats().Executors; after != before {
		t.Errorf("refused phase-1 calls left %d executors (%d before)", after, before)
	}
}

// TestDequantOps: the ops the cann card dequantises I8 and MXFP4 weights with, against
// naive references: Cast from int8/uint8, Mul with broadcasting, Embedding (a gather of
// rows); and their phase-1 and execution errors.
func TestDequantOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	f32b := func(v []float32) []byte { b := make([]byte, 4*len(v)); putF32s(b, v); return b }

	t.Run("Cast", func(t *testing.T) {
		s := bind(t)
		src := make([]byte, 256)
		for i := range src {
			src[i] = byte(i)
		}
		sp := upload(t, src)
		for _, tc := range []struct {
			from, to acl.DataType
			want     func(b byte) []byte
		}{
			{acl.Int8, acl.Float, func(b byte) []byte { return f32b([]float32{float32(int8(b))}) }},
			{acl.UInt8, acl.Int32, func(b byte) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(b)) }},
			{acl.Int8, acl.Int32, func(b byte) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(int32(int8(b)))) }},
		} {
			op := devAlloc(t, 4*256)
			st, ot := view(t, []int64{16, 16}, nil, tc.from, nil, sp), view(t, []int64{16, 16}, nil, tc.to, nil, op)
			ws, ex, err := acl.CastWorkspaceSize(st, tc.to, ot)
			must(t, err)
			must(t, launch(t, s, ws, ex, acl.Cast))
			got := readDev(t, op, 4*256)
			for i, b := range src {
				if w := tc.want(b); string(got[4*i:4*i+4]) != string(w) {
					t.Errorf("cast %d→%d of byte %#x: % x, want % x", tc.from, tc.to, b, got[4*i:4*i+4], w)
					break
				}
			}
			must(t, st.Destroy())
			must(t, ot.Destroy())
		}
		st, ot := view(t, []int64{4}, nil, acl.Float, nil, sp), view(t, []int64{4}, nil, acl.Int32, nil, sp)
		_, _, err := acl.CastWorkspaceSize(st, acl.Int32, ot)
		wantCode(t, "FLOAT → INT32 (not emulated)", err, acl.ErrNNParamInvalid)
		must(t, st.Destroy())
		must(t, ot.Destroy())
	})

	t.Run("Mul", func(t *testing.T) {
		s := bind(t)
		for _, tc := range []struct{ a, b []int64 }{
			{[]int64{5, 7}, []int64{5, 1}},    // I8: values × per-row scales
			{[]int64{12, 32}, []int64{12, 1}}, // MXFP4: 32-blocks × block scales
			{[]int64{2, 3}, []int64{3}},       // right-aligned broadcast
			{[]int64{1, 4}, []int64{3, 1}},    // both sides broadcast
		} {
			// dim i of d right-aligned to rank 2, 1 where d has none
			dim := func(d []int64, i int) int64 {
				if j := i - (2 - len(d)); j >= 0 {
					return d[j]
				}
				return 1
			}
			numel := func(d []int64) int { return int(dim(d, 0) * dim(d, 1)) }
			od := []int64{max(dim(tc.a, 0), dim(tc.b, 0)), max(dim(tc.a, 1), dim(tc.b, 1))}
			av, bv := rnd(numel(tc.a)), rnd(numel(tc.b))
			op := devAlloc(t, 4*numel(od))
			at, bt, ot := view(t, tc.a, nil, acl.Float, nil, upload(t, f32b(av))), view(t, tc.b, nil, acl.Float, nil, upload(t, f32b(bv))), view(t, od, nil, acl.Float, nil, op)
			ws, ex, err := acl.MulWorkspaceSize(at, bt, ot)
			must(t, err)
			must(t, launch(t, s, ws, ex, acl.Mul))
			got := f32s(readDev(t, op, 4*numel(od)))
			elem := func(v []float32, d []int64, i, j int64) float32 { // broadcast read
				return v[min(i, dim(d, 0)-1)*dim(d, 1)+min(j, dim(d, 1)-1)]
			}
			for i := range od[0] {
				for j := range od[1] {
					if w := elem(av, tc.a, i, j) * elem(bv, tc.b, i, j); got[i*od[1]+j] != w {
						t.Errorf("%v·%v [%d %d] = %g, want %g", tc.a, tc.b, i, j, got[i*od[1]+j], w)
					}
				}
			}
			for _, x := range []acl.Tensor{at, bt, ot} {
				must(t, x.Destroy())
			}
		}
		p := devAlloc(t, 64)
		a, b2, o := view(t, []int64{2, 3}, nil, acl.Float, nil, p), view(t, []int64{2}, nil, acl.Float, nil, p), view(t, []int64{2, 3}, nil, acl.Float, nil, p)
		_, _, err := acl.MulWorkspaceSize(a, b2, o)
		wantCode(t, "[2 3]·[2]", err, acl.ErrNNParamInvalid)
		bb := view(t, []int64{2, 3}, nil, acl.BF16, nil, p)
		_, _, err = acl.MulWorkspaceSize(a, bb, o)
		wantCode(t, "f32·bf16 (mixed dtypes not emulated)", err, acl.ErrNNParamInvalid)
		for _, x := range []acl.Tensor{a, b2, o, bb} {
			must(t, x.Destroy())
		}
	})

	t.Run("Embedding", func(t *testing.T) {
		s := bind(t)
		table := rnd(256 * 2)
		tp := upload(t, f32b(table))
		for _, idt := range []acl.DataType{acl.Int32, acl.Int64} {
			const n = 300
			idx := make([]int64, n)
			raw := []byte{}
			for i := range idx {
				idx[i] = int64(rng.IntN(256))
				if idt == acl.Int32 {
					raw = binary.LittleEndian.AppendUint32(raw, uint32(idx[i]))
				} else {
					raw = binary.LittleEndian.AppendUint64(raw, uint64(idx[i]))
				}
			}
			op := devAlloc(t, 8*n)
			tt, it, ot := view(t, []int64{256, 2}, nil, acl.Float, nil, tp), view(t, []int64{n}, nil, idt, nil, upload(t, raw)), view(t, []int64{n, 2}, nil, acl.Float, nil, op)
			ws, ex, err := acl.EmbeddingWorkspaceSize(tt, it, ot)
			must(t, err)
			must(t, launch(t, s, ws, ex, acl.Embedding))
			got := f32s(readDev(t, op, 8*n))
			for i, v := range idx {
				if got[2*i] != table[2*v] || got[2*i+1] != table[2*v+1] {
					t.Errorf("index dtype %d: row %d = %v, want table row %d %v", idt, i, got[2*i:2*i+2], v, table[2*v:2*v+2])
					break
				}
			}
			for _, x := range []acl.Tensor{tt, it, ot} {
				must(t, x.Destroy())
			}
		}
		bad := upload(t, binary.LittleEndian.AppendUint32(nil, 256))
		op := devAlloc(t, 64)
		tt, it, ot := view(t, []int64{256, 2}, nil, acl.Float, nil, tp), view(t, []int64{1}, nil, acl.Int32, nil, bad), view(t, []int64{1, 2}, nil, acl.Float, nil, op)
		ws, ex, err := acl.EmbeddingWorkspaceSize(tt, it, ot)
		must(t, err)
		wantCode(t, "index 256 of 256 rows", launch(t, s, ws, ex, acl.Embedding), acl.ErrRTAICoreException)
		i8 := view(t, []int64{1}, nil, acl.Int8, nil, bad)
		_, _, err = acl.EmbeddingWorkspaceSize(tt, i8, ot)
		wantCode(t, "INT8 indices", err, acl.ErrNNParamInvalid)
		o3 := view(t, []int64{1, 3}, nil, acl.Float, nil, op)
		_, _, err = acl.EmbeddingWorkspaceSize(tt, it, o3)
		wantCode(t, "out rows of 3 for a table of 2 columns", err, acl.ErrNNParamInvalid)
		for _, x := range []acl.Tensor{tt, it, ot, i8, o3} {
			must(t, x.Destroy())
		}
	})
}
