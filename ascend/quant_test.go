package ascend_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model/quant"
)

// The codecs of ascend repeat model/quant's (ascend may import nothing from the module);
// these tests pin them to model/quant on every code and on random rows. Test files are
// outside the import rule, and model/quant is a leaf, so there is no cycle.

func same(a, b float32) bool {
	return a != a && b != b || math.Float32bits(a) == math.Float32bits(b)
}

func TestE2M1AndE8M0MatchModelQuant(t *testing.T) {
	for c := range 16 {
		if got, want := ascend.E2M1Values[c], quant.E2M1(byte(c)); !same(got, want) {
			t.Errorf("E2M1 code %#x: %g, model/quant %g", c, got, want)
		}
	}
	for e := range 256 {
		if got, want := ascend.E8M0Value(byte(e)), quant.E8M0(byte(e)); !same(got, want) {
			t.Errorf("E8M0 code %#x: %g, model/quant %g", e, got, want)
		}
	}
}

// mxRows are rows that exercise the scale rule and rounding: random magnitudes over many
// binades, exact code values and midpoints (ties), zeros, tiny and huge blocks.
func mxRows(rng *rand.Rand) [][]float32 {
	var rows [][]float32
	for _, mag := range []float64{1, 1e-3, 1e-30, 1e30, 3e38} {
		r := make([]float32, 64)
		for i := range r {
			r[i] = float32((rng.Float64()*2 - 1) * mag)
		}
		rows = append(rows, r)
	}
	ties := make([]float32, 32)
	for i := range ties { // 0.25, 0.75, 1.25, ... 5: midpoints and codes, block max 6
		ties[i] = float32(i%24+1) * 0.25
		if i%3 == 0 {
			ties[i] = -ties[i]
		}
	}
	ties[31] = 6
	rows = append(rows, ties, make([]float32, 32), []float32{
		7, 3.5, -3.5, 1.75, 0.875, 0, float32(math.Copysign(0, -1)), 1e-40, 5, 6, 2.5, -2.5, 0.1, 0.2, 0.3, 0.4,
		0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.4, 1.5, -1.6, -1.7, -1.8, -1.9, -2,
	})
	return rows
}

func TestMXFP4CodecMatchesModelQuant(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i, x := range mxRows(rng) {
		packed, scales := make([]byte, len(x)/2), make([]byte, len(x)/32)
		if err := ascend.QuantizeMXFP4Row(packed, scales, x); err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		wp, ws, err := quant.QuantMXFP4(x, 1, len(x))
		if err != nil {
			t.Fatal(err)
		}
		for j := range packed {
			if packed[j] != wp[j] {
				t.Fatalf("row %d: packed byte %d is %#x, model/quant %#x", i, j, packed[j], wp[j])
			}
		}
		for j := range scales {
			if scales[j] != ws[j] {
				t.Fatalf("row %d: scale %d is %#x, model/quant %#x", i, j, scales[j], ws[j])
			}
		}
		got, want := make([]float32, len(x)), make([]float32, len(x))
		if err := ascend.DequantMXFP4Row(got, packed, scales); err != nil {
			t.Fatal(err)
		}
		if err := quant.DequantMXFP4(packed, 1, len(x), scales, want); err != nil {
			t.Fatal(err)
		}
		for j := range got {
			if !same(got[j], want[j]) {
				t.Fatalf("row %d: value %d dequantises to %g, model/quant %g", i, j, got[j], want[j])
			}
		}
	}
	// Every packed byte under extreme scales, including the NaN scale 0xFF.
	packed := make([]byte, 128)
	for i := range packed {
		packed[i] = byte(2 * i)
		packed[i] |= byte(2*i+1) & 0xf0
	}
	for _, e := range []byte{0, 1, 127, 253, 254, 255} {
		scales := make([]byte, 8)
		for i := range scales {
			scales[i] = e
		}
		got, want := make([]float32, 256), make([]float32, 256)
		_ = ascend.DequantMXFP4Row(got, packed, scales)
		_ = quant.DequantMXFP4(packed, 1, 256, scales, want)
		for j := range got {
			if !same(got[j], want[j]) {
				t.Fatalf("scale %#x: value %d is %g, model/quant %g", e, j, got[j], want[j])
			}
		}
	}
}

func TestQuantizeI8Row(t *testing.T) {
	tests := []struct {
		name  string
		x     []float32
		scale float32
		q     []int8
	}{
		// s = 1: -63.5 and 0.5 are ties, rounded to the even integer.
		{"ties to even", []float32{127, -63.5, 0.5, 1.5, -127}, 1, []int8{127, -64, 0, 2, -127}},
		{"max of the negative side", []float32{-254, 1, 2}, 2, []int8{-127, 0, 1}},
		{"all zero", []float32{0, 0, 0}, 0, []int8{0, 0, 0}},
		{"empty", nil, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := make([]byte, len(tc.x))
			s, err := ascend.QuantizeI8Row(q, tc.x)
			if err != nil {
				t.Fatal(err)
			}
			if s != tc.scale {
				t.Errorf("scale %g, want %g", s, tc.scale)
			}
			for i := range q {
				if int8(q[i]) != tc.q[i] {
					t.Errorf("q[%d] = %d, want %d", i, int8(q[i]), tc.q[i])
				}
			}
			back := make([]float32, len(q))
			ascend.DequantI8Row(back, q, s)
			for i, v := range back {
				if math.Abs(float64(v-tc.x[i])) > float64(s)/2 {
					t.Errorf("value %d: %g back as %g, more than half a step (%g)", i, tc.x[i], v, s/2)
				}
			}
		})
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		if _, err := ascend.QuantizeI8Row(make([]byte, 2), []float32{1, bad}); !errors.Is(err, ascend.ErrInvalid) {
			t.Errorf("quantising %v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := ascend.QuantizeI8Row(make([]byte, 1), []float32{1, 2}); !errors.Is(err, ascend.ErrShape) {
		t.Errorf("length mismatch: %v, want ErrShape", err)
	}
	var sc [8]byte
	binary.LittleEndian.PutUint32(sc[4:], math.Float32bits(0.25))
	if s := ascend.I8Scale(sc[:], 1); s != 0.25 {
		t.Errorf("I8Scale = %g, want 0.25", s)
	}
}

func TestQuantizeMXFP4RowErrors(t *testing.T) {
	if err := ascend.QuantizeMXFP4Row(make([]byte, 8), make([]byte, 1), make([]float32, 16)); !errors.Is(err, ascend.ErrShape) {
		t.Errorf("16 values: %v, want ErrShape", err)
	}
	x := make([]float32, 32)
	x[5] = float32(math.Inf(1))
	if err := ascend.QuantizeMXFP4Row(make([]byte, 16), make([]byte, 1), x); !errors.Is(err, ascend.ErrInvalid) {
		t.Errorf("+Inf: %v, want ErrInvalid", err)
	}
	if err := ascend.DequantMXFP4Row(make([]float32, 32), make([]byte, 16), nil); !errors.Is(err, ascend.ErrShape) {
		t.Errorf("dequantise without scales: %v, want ErrShape", err)
	}
}

func TestCheckQuantShape(t *testing.T) {
	tests := []struct {
		dt             ascend.DType
		shape          []int
		values, scales int64
		err            error
	}{
		{ascend.I8, []int{3, 5}, 15, 12, nil},
		{ascend.I8, []int{0, 5}, 0, 0, nil},
		{ascend.MXFP4, []int{2, 64}, 64, 4, nil},
		{ascend.MXFP4, []int{1408, 2048}, 1408 * 1024, 1408 * 64, nil},
		{ascend.MXFP4, []int{2, 48}, 0, 0, ascend.ErrShape},
		{ascend.I8, []int{8}, 0, 0, ascend.ErrShape},
		{ascend.I8, []int{2, 2, 2}, 0, 0, ascend.ErrShape},
		{ascend.I8, []int{-1, 4}, 0, 0, ascend.ErrShape},
		{ascend.F32, []int{2, 2}, 0, 0, ascend.ErrDType},
	}
	for _, tc := range tests {
		l, err := ascend.CheckQuantShape(tc.dt, tc.shape)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%v%v: %v, want %v", tc.dt, tc.shape, err, tc.err)
			}
			continue
		}
		if err != nil || l.Values != tc.values || l.Scales != tc.scales {
			t.Errorf("%v%v: %+v, %v; want %d value and %d scale bytes", tc.dt, tc.shape, l, err, tc.values, tc.scales)
		}
		if n, err := ascend.StorageBytes(tc.dt, tc.shape); err != nil || n != tc.values+tc.scales {
			t.Errorf("StorageBytes(%v, %v) = %d, %v", tc.dt, tc.shape, n, err)
		}
	}
	i8, _ := ascend.CheckQuantShape(ascend.I8, []int{6, 64})
	mx, _ := ascend.CheckQuantShape(ascend.MXFP4, []int{6, 64})
	for _, c := range []struct {
		got, want int64
	}{{i8.RowValues(3), 192}, {i8.RowScales(3), 384 + 12}, {mx.RowValues(3), 96}, {mx.RowScales(3), 192 + 6}} {
		if c.got != c.want {
			t.Errorf("row offset %d, want %d", c.got, c.want)
		}
	}
	if n, err := ascend.StorageBytes(ascend.BF16, []int{3, 5}); n != 30 || err != nil {
		t.Errorf("StorageBytes(bf16, [3 5]) = %d, %v", n, err)
	}
	if _, err := ascend.StorageBytes(ascend.DType(0), []int{1}); !errors.Is(err, ascend.ErrDType) {
		t.Errorf("StorageBytes of dtype 0: %v", err)
	}
	for _, dt := range []ascend.DType{ascend.I8, ascend.MXFP4} {
		if dt.Size() != 0 || !dt.Quantized() {
			t.Errorf("%v: Size %d, Quantized %v", dt, dt.Size(), dt.Quantized())
		}
		if got, err := ascend.ParseDType(dt.String()); got != dt || err != nil {
			t.Errorf("ParseDType(%q) = %v, %v", dt.String(), got, err)
		}
	}
}

// TestQuantizeRowsRefuses: a write ascend.QuantizeRows refuses leaves the destination untouched.
func TestQuantizeRowsRefuses(t *testing.T) {
	for _, dt := range []ascend.DType{ascend.I8, ascend.MXFP4} {
		l, err := ascend.CheckQuantShape(dt, []int{2, 32})
		if err != nil {
			t.Fatal(err)
		}
		row := make([]float32, 32)
		for i := range row {
			row[i] = float32(i) - 7.5
		}
		nan := append([]float32(nil), row...)
		nan[3] = float32(math.NaN())
		cases := []struct {
			name     string
			off      int
			src      []float32
			vals, sc int // destination sizes
			want     error
		}{
			{"part of a row", 0, row[:16], int(l.Values / 2), int(l.Scales / 2), ascend.ErrShape},
			{"misaligned", 16, row, int(l.Values / 2), int(l.Scales / 2), ascend.ErrShape},
			{"destination of two rows for one", 0, row, int(l.Values), int(l.Scales), ascend.ErrShape},
			{"not finite", 32, nan, int(l.Values / 2), int(l.Scales / 2), ascend.ErrInvalid},
		}
		for _, c := range cases {
			vals, sc := make([]byte, c.vals), make([]byte, c.sc)
			for i := range vals {
				vals[i] = 0xAB
			}
			err := ascend.QuantizeRows(dt, l, c.off, c.src, vals, sc)
			if !errors.Is(err, c.want) {
				t.Fatalf("%v %s: err = %v, want %v", dt, c.name, err, c.want)
			}
			for i, v := range vals {
				if v != 0xAB {
					t.Fatalf("%v %s: byte %d written by a refused call", dt, c.name, i)
				}
			}
		}
		vals, sc := make([]byte, l.Values/2), make([]byte, l.Scales/2)
		if err := ascend.QuantizeRows(dt, l, 32, row, vals, sc); err != nil {
			t.Fatalf("%v: one whole row: %v", dt, err)
		}
	}
}
