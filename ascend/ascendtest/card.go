package ascendtest

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

func testMemory(t *testing.T, b ascend.Backend) {
	const budget = 1 << 20
	c := openCard(t, b, 0, budget)
	if mi := c.MemInfo(); mi.Used != 0 || mi.Total != budget {
		t.Fatalf("fresh card: MemInfo %+v, want {Used:0 Total:%d}", mi, budget)
	}
	big, err := c.Alloc(ascend.F32, 256, 600) // 600 KiB
	if err != nil {
		t.Fatalf("Alloc 600 KiB of a 1 MiB budget: %v", err)
	}
	after := c.MemInfo()
	if after.Used < big.Bytes() || after.Total != budget {
		t.Fatalf("after a %d-byte Alloc: MemInfo %+v", big.Bytes(), after)
	}

	// Past the budget: an error wrapping ErrOutOfMemory, and nothing changes.
	wantErr(t, "Alloc past budget", func() error {
		_, err := c.Alloc(ascend.F32, 256, 600)
		return err
	}, ascend.ErrOutOfMemory)
	if mi := c.MemInfo(); mi != after {
		t.Fatalf("failed Alloc changed MemInfo from %+v to %+v", after, mi)
	}

	small, err := c.Alloc(ascend.BF16, 256, 600) // 300 KiB still fits
	if err != nil {
		t.Fatalf("Alloc within budget after a refused one: %v", err)
	}
	mustOK(t, "Free", func() error { return c.Free(big) })
	mustOK(t, "Free", func() error { return c.Free(small) })
	if mi := c.MemInfo(); mi.Used != 0 {
		t.Fatalf("after freeing everything: MemInfo %+v, want Used 0", mi)
	}
	// Freed memory is available again.
	again, err := c.Alloc(ascend.F32, 256, 600)
	if err != nil {
		t.Fatalf("Alloc after Free: %v", err)
	}
	mustOK(t, "Free", func() error { return c.Free(again) })
	wantErr(t, "Free twice", func() error { return c.Free(again) }, ascend.ErrInvalid)
	if mi := c.MemInfo(); mi.Used != 0 {
		t.Fatalf("double Free changed MemInfo to %+v", mi)
	}

	// Another card's buffer is foreign, and stays usable on its own card.
	c2 := openCard(t, b, 1, 0)
	other := upload(t, c2, ascend.F32, []float32{1, 2}, 2)
	wantErr(t, "Free another card's buffer", func() error { return c.Free(other) }, ascend.ErrForeignBuffer)
	wantErr(t, "Free nil", func() error { return c.Free(nil) }, ascend.ErrInvalid)
	wantErr(t, "Free a foreign type", func() error { return c.Free(fakeBuffer{}) }, ascend.ErrForeignBuffer)
	if got := download(t, c2, other); !slices.Equal(got, []float32{1, 2}) {
		t.Fatalf("buffer after a foreign Free attempt holds %v", got)
	}

	// Budget 0 means unlimited for accounting: Total reports 0 and a large Alloc works.
	if mi := c2.MemInfo(); mi.Total != 0 || mi.Used < other.Bytes() {
		t.Fatalf("unlimited card: MemInfo %+v", mi)
	}
	huge, err := c2.Alloc(ascend.BF16, 2048, 2048) // 8 MiB
	if err != nil {
		t.Fatalf("8 MiB Alloc on an unlimited card: %v", err)
	}
	mustOK(t, "Free", func() error { return c2.Free(huge) })
}

// fakeBuffer is a Buffer no backend made.
type fakeBuffer struct{}

func (fakeBuffer) DType() ascend.DType { return ascend.F32 }
func (fakeBuffer) Shape() []int        { return []int{1} }
func (fakeBuffer) Bytes() int64        { return 4 }

func testBuffers(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	for _, dt := range dtypes {
		buf, err := c.Alloc(dt, 3, 5)
		if err != nil {
			t.Fatalf("Alloc(%v, 3, 5): %v", dt, err)
		}
		if buf.DType() != dt || !slices.Equal(buf.Shape(), []int{3, 5}) || buf.Bytes() != int64(15*dt.Size()) {
			t.Errorf("%v buffer reports %v %v %d bytes", dt, buf.DType(), buf.Shape(), buf.Bytes())
		}
		buf.Shape()[0] = 99 // Shape must be a copy
		if buf.Shape()[0] != 3 {
			t.Errorf("%v: changing the slice Shape returned changed the buffer", dt)
		}
		if got := download(t, c, buf); !slices.Equal(got, make([]float32, 15)) {
			t.Errorf("%v: fresh buffer holds %v, want zeros", dt, got)
		}
		// Partial writes land at their element offset; the rest stays zero.
		mustOK(t, "WriteF32", func() error { return c.WriteF32(buf, 13, []float32{1.5, -2}) })
		got := download(t, c, buf)
		if got[12] != 0 || got[13] != 1.5 || got[14] != -2 {
			t.Errorf("%v: after WriteF32 at offset 13: %v", dt, got)
		}
		// ReadF32 may read a prefix.
		head := []float32{7, 7}
		mustOK(t, "ReadF32 prefix", func() error { return c.ReadF32(buf, head) })
		if head[0] != 0 || head[1] != 0 {
			t.Errorf("%v: prefix read %v", dt, head)
		}
	}
	// Empty dimensions are allowed (empty batches); ops on them do nothing.
	x, err := c.Alloc(ascend.F32, 0, 8)
	if err != nil {
		t.Fatalf("Alloc(f32, 0, 8): %v", err)
	}
	out := upload(t, c, ascend.F32, nil, 0, 4)
	w := upload(t, c, ascend.F32, nil, 4, 8)
	mustOK(t, "GroupedMatmul with M=0", func() error {
		return c.GroupedMatmul(out, x, []ascend.Buffer{w}, []int64{0})
	})
}

func testConversions(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	vals := []float32{
		0, float32(math.Copysign(0, -1)), 1, -1, 0.1, -3.14159, 1e-3, 1e4, 65504, 65519, 65520, 1e5, -1e5,
		1 + p(-8), 1 + 3*p(-8), 1 + p(-11), 1 + 3*p(-11), 2049, 2051, // ties for bf16 and f16
		p(-24), p(-25), 1.5 * p(-25), 3 * p(-25), p(-14), p(-14) - p(-25), p(-26), // f16 subnormals
		p(-133), 3 * p(-134), p(-126), p(-149), 1e-45, // bf16 subnormals
		math.MaxFloat32, -math.MaxFloat32, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x7f800001), math.Float32frombits(0xffc00001), // NaNs with low payloads
	}
	rng := newRand(1)
	for range 4000 {
		vals = append(vals, math.Float32frombits(rng.Uint32()))
	}
	for _, dt := range dtypes {
		buf := upload(t, c, dt, vals, len(vals))
		got := download(t, c, buf)
		bad := 0
		for i, v := range vals {
			if want := roundTo(dt, v); !sameBits(got[i], want) && bad < 10 {
				bad++
				t.Errorf("%v: stored %g (%#08x) reads back %g (%#08x), want %g (%#08x)",
					dt, v, math.Float32bits(v), got[i], math.Float32bits(got[i]), want, math.Float32bits(want))
			}
		}
	}
	// Raw writes: every 16-bit pattern decodes as its format says; f32 bytes round-trip.
	for _, dt := range []ascend.DType{ascend.BF16, ascend.F16} {
		f := map[ascend.DType]format{ascend.BF16: bf16, ascend.F16: f16}[dt]
		raw := make([]byte, 2<<16)
		for h := range 1 << 16 {
			binary.LittleEndian.PutUint16(raw[2*h:], uint16(h))
		}
		buf, err := c.Alloc(dt, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		mustOK(t, "Write", func() error { return c.Write(buf, 0, raw) })
		got := download(t, c, buf)
		bad := 0
		for h, g := range got {
			if want := f.decode(uint16(h)); !sameBits(g, want) && bad < 10 {
				bad++
				t.Errorf("%v: pattern %#04x reads back %g, want %g", dt, h, g, want)
			}
		}
	}
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	buf, err := c.Alloc(ascend.F32, len(vals))
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, "Write f32", func() error { return c.Write(buf, 0, raw) })
	for i, g := range download(t, c, buf) {
		if math.Float32bits(g) != math.Float32bits(vals[i]) {
			t.Fatalf("f32 raw write of %#08x reads back %#08x", math.Float32bits(vals[i]), math.Float32bits(g))
		}
	}
}

func testClose(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 1<<20)
	other := openCard(t, b, 1, 0)
	x := upload(t, c, ascend.F32, fill(8, 1), 2, 4)
	out := upload(t, c, ascend.F32, nil, 2, 2)
	w := upload(t, c, ascend.BF16, fill(8, 1), 2, 4)
	mustOK(t, "Close", c.Close)
	if mi := c.MemInfo(); mi.Used != 0 {
		t.Errorf("after Close: MemInfo %+v, want Used 0", mi)
	}
	calls := map[string]func() error{
		"Alloc":         func() error { _, err := c.Alloc(ascend.F32, 1); return err },
		"Free":          func() error { return c.Free(x) },
		"Write":         func() error { return c.Write(x, 0, make([]byte, 4)) },
		"WriteF32":      func() error { return c.WriteF32(x, 0, []float32{1}) },
		"ReadF32":       func() error { return c.ReadF32(x, make([]float32, 1)) },
		"GroupedMatmul": func() error { return c.GroupedMatmul(out, x, []ascend.Buffer{w}, []int64{2}) },
		"SwiGLU":        func() error { return c.SwiGLU(out, x, 0) },
		"ScatterAdd":    func() error { return c.ScatterAdd(out, x, []int32{0}, []int32{0}, []float32{1}) },
		"Close":         c.Close,
	}
	for name, fn := range calls {
		wantErr(t, name+" after Close", fn, ascend.ErrClosed)
	}
	wantErr(t, "closed card's buffer on another card", func() error {
		return other.ReadF32(x, make([]float32, 1))
	}, ascend.ErrForeignBuffer)
}
