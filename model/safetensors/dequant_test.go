package safetensors

import (
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

func openTensors(t *testing.T, ts []Tensor) *Checkpoint {
	t.Helper()
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, SingleFile), ts, nil); err != nil {
		t.Fatal(err)
	}
	ck, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck
}

// finiteFP8 returns n random finite e4m3 codes.
func finiteFP8(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		for b[i] = byte(rng.IntN(256)); b[i]&0x7f == 0x7f; b[i] = byte(rng.IntN(256)) {
		}
	}
	return b
}

// TestBlockDequantEdges: DeepSeek-V3 128×128 FP8 blocks with R and C not multiples of
// 128, so the last block row and column are partial. Each element must get the scale
// of block [r/128, c/128].
func TestBlockDequantEdges(t *testing.T) {
	const R, C = 130, 257 // blocks: 2 × 3, the last ones 2 rows / 1 column wide
	rng := rand.New(rand.NewPCG(9, 10))
	w := finiteFP8(rng, R*C)
	scales := []float32{1, 2, 4, 0.5, 0.25, 8}
	ck := openTensors(t, []Tensor{
		{"x.weight", F8E4M3, []int64{R, C}, w},
		{"x.weight_scale_inv", F32, []int64{2, 3}, f32Bytes(scales...)},
		{"plain.weight", F8E4M3, []int64{2}, []byte{0x38, 0x7e}},
	})
	want := func(r, c int) float32 { return F8E4M3ToF32(w[r*C+c]) * scales[(r/128)*3+c/128] }
	got, err := ck.F32("x.weight")
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < R; r++ {
		for c := 0; c < C; c++ {
			if got[r*C+c] != want(r, c) {
				t.Fatalf("W[%d,%d] = %v, want %v", r, c, got[r*C+c], want(r, c))
			}
		}
	}
	// Rows straddling the block-row boundary and the partial last block.
	rows, err := ck.RowsF32("x.weight", -1, 126, 130)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range rows {
		if r, c := 126+i/C, i%C; v != want(r, c) {
			t.Fatalf("rows[126:130] W[%d,%d] = %v, want %v", r, c, v, want(r, c))
		}
	}
	// Dequant on bytes read elsewhere agrees with F32.
	info, _ := ck.Info("x.weight")
	sinfo, ok := ck.ScaleOf("x.weight")
	if !ok || sinfo.Name != "x.weight_scale_inv" {
		t.Fatalf("ScaleOf = %+v, %v", sinfo, ok)
	}
	sraw, _ := ck.Raw(sinfo.Name)
	d, err := Dequant(info, w, sinfo, sraw)
	if err != nil || !sameFloats(d, got) {
		t.Errorf("Dequant differs from F32 (%v)", err)
	}
	if _, err := Dequant(info, w[1:], sinfo, sraw); !errors.Is(err, ErrInvalid) {
		t.Errorf("Dequant(short data) = %v, want ErrInvalid", err)
	}
	// Without a scale an FP8 tensor is its plain values.
	if v, err := ck.F32("plain.weight"); err != nil || !sameFloats(v, []float32{1, 448}) {
		t.Errorf("plain FP8 = %v, %v", v, err)
	}
}

// TestFusedBlockDequant: a stacked [E, 2I, H] FP8 tensor with per-expert block scales;
// RowsF32 of one expert's up half must use that expert's scales and the right block rows.
func TestFusedBlockDequant(t *testing.T) {
	const E, I, H = 3, 100, 140 // 2I = 200 → 2 block rows; H = 140 → 2 block columns
	rng := rand.New(rand.NewPCG(11, 12))
	w := finiteFP8(rng, E*2*I*H)
	sc := make([]float32, E*2*2)
	for i := range sc {
		sc[i] = float32(i + 1)
	}
	ck := openTensors(t, []Tensor{
		{"mlp.experts.gate_up_proj", F8E4M3, []int64{E, 2 * I, H}, w},
		{"mlp.experts.gate_up_proj_scale_inv", F32, []int64{E, 2, 2}, f32Bytes(sc...)},
	})
	up, err := ck.RowsF32("mlp.experts.gate_up_proj", 1, I, 2*I)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range up {
		r, c := I+i/H, i%H
		want := F8E4M3ToF32(w[(1*2*I+r)*H+c]) * sc[(1*2+r/128)*2+c/128]
		if v != want {
			t.Fatalf("expert 1 up row %d col %d = %v, want %v", r-I, c, v, want)
		}
	}
}

// TestFP4Dequant: DeepSeek-V4 routed experts, I8 [R, C/2] packed e2m1 (low nibble first)
// with e8m0 scales per 32 columns.
func TestFP4Dequant(t *testing.T) {
	const R, C = 3, 64
	rng := rand.New(rand.NewPCG(13, 14))
	packed := make([]byte, R*C/2)
	for i := range packed {
		packed[i] = byte(rng.IntN(256))
	}
	exps := []byte{127, 128, 126, 130, 120, 127} // [R, C/32] = [3, 2]
	ck := openTensors(t, []Tensor{
		{"layers.0.ffn.experts.5.w1.weight", I8, []int64{R, C / 2}, packed},
		{"layers.0.ffn.experts.5.w1.scale", F8E8M0, []int64{R, C / 32}, exps},
	})
	got, err := ck.F32("layers.0.ffn.experts.5.w1.weight")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != R*C {
		t.Fatalf("%d values, want %d", len(got), R*C)
	}
	for r := 0; r < R; r++ {
		for c := 0; c < C; c++ {
			b := packed[r*C/2+c/2]
			code := b & 0xf
			if c%2 == 1 {
				code = b >> 4
			}
			want := F4E2M1ToF32(code) * float32(math.Ldexp(1, int(exps[r*2+c/32])-127))
			if got[r*C+c] != want {
				t.Fatalf("W[%d,%d] = %v, want %v", r, c, got[r*C+c], want)
			}
		}
	}
	row1, err := ck.RowsF32("layers.0.ffn.experts.5.w1.weight", -1, 1, 2)
	if err != nil || !sameFloats(row1, got[C:2*C]) {
		t.Errorf("RowsF32 row 1 differs (%v)", err)
	}
}

// TestChannelAndTensorScales: compressed-tensors int8 with [out, 1] and [1] scales.
func TestChannelAndTensorScales(t *testing.T) {
	ck := openTensors(t, []Tensor{
		{"a.weight", I8, []int64{2, 3}, []byte{1, 2, 0xff, 4, 5, 6}},
		{"a.weight_scale", BF16, []int64{2, 1}, []byte{0x00, 0x3f, 0x00, 0x40}}, // 0.5, 2
		{"b.weight", F8E4M3, []int64{2}, []byte{0x38, 0x40}},
		{"b.weight_scale", F32, []int64{1}, f32Bytes(3)},
		{"c.weight", U8, []int64{2}, []byte{1, 2}}, // no scale: plain integers
	})
	for name, want := range map[string][]float32{
		"a.weight": {0.5, 1, -0.5, 8, 10, 12},
		"b.weight": {3, 6},
		"c.weight": {1, 2},
	} {
		if got, err := ck.F32(name); err != nil || !sameFloats(got, want) {
			t.Errorf("%s = %v, %v; want %v", name, got, err, want)
		}
	}
}

func TestDequantUnsupportedScale(t *testing.T) {
	ck := openTensors(t, []Tensor{
		{"x.weight", F8E4M3, []int64{300, 4}, make([]byte, 1200)},
		{"x.weight_scale_inv", F32, []int64{7, 1}, make([]byte, 28)}, // 300 rows in 7 blocks?
		{"y.weight", F8E4M3, []int64{4}, make([]byte, 4)},
		{"y.weight_scale_inv", F32, []int64{2}, make([]byte, 8)}, // rank-1 blocks
	})
	for _, n := range []string{"x.weight", "y.weight"} {
		if _, err := ck.F32(n); !errors.Is(err, ErrUnsupported) {
			t.Errorf("F32(%s) = %v, want ErrUnsupported", n, err)
		}
	}
}
