package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// DType of a wire tensor. Values match ascend.DType so conversions are plain casts.
type DType uint8

// Wire dtypes.
const (
	F32  DType = 1
	BF16 DType = 2
	F16  DType = 3
)

// Size is bytes per element (0 for an unknown dtype).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case F16:
		return "f16"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Tensor is a dense row-major tensor: raw little-endian bytes in a msgpack bin.
type Tensor struct {
	_msgpack struct{} `msgpack:",as_array"`
	DType    DType
	Shape    Dims
	Data     Bin
}

// Bin is raw bytes carried as a msgpack bin. It decodes only a length that the message
// actually holds: msgpack's own []byte decoding allocates whatever a header claims, so a
// 16-byte message could ask for gigabytes (found by fuzzing).
type Bin []byte

// DecodeMsgpack implements msgpack.CustomDecoder.
func (b *Bin) DecodeMsgpack(dec *msgpack.Decoder) error {
	buf, err := readBin(dec, *b)
	*b = buf
	return err
}

// readBin reads a bin into dst's capacity after checking that its length is present.
func readBin(dec *msgpack.Decoder, dst []byte) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, nil
	}
	// unmarshal decodes from a *bytes.Reader, which msgpack reads directly.
	if r, ok := dec.Buffered().(interface{ Len() int }); !ok || n > r.Len() {
		left := -1
		if ok {
			left = r.Len()
		}
		return nil, fmt.Errorf("%w: a bin claims %d bytes, %d are left", ErrDecode, n, left)
	}
	dst = grow(dst, n)
	if err := dec.ReadFull(dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// MaxRank bounds a wire tensor's dimensions.
const MaxRank = 8

// Dims is a tensor shape. It decodes with a bound on its length: msgpack's generic slice
// decoding would allocate whatever element count a (malformed) header claims.
type Dims []int64

// DecodeMsgpack implements msgpack.CustomDecoder.
func (d *Dims) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n > MaxRank {
		return fmt.Errorf("%w: tensor rank %d (at most %d)", ErrDecode, n, MaxRank)
	}
	out := (*d)[:0]
	for i := 0; i < n; i++ {
		v, err := dec.DecodeInt64()
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	if n < 0 {
		out = nil
	}
	*d = out
	return nil
}

// Elements is the product of the shape (-1 when a dimension is negative or it overflows).
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return -1
		}
		n *= d
	}
	return n
}

// Validate checks dtype, shape and that Data holds exactly the elements.
func (t *Tensor) Validate() error {
	if t.DType.Size() == 0 {
		return fmt.Errorf("%w: tensor dtype %d unknown", ErrDecode, t.DType)
	}
	n := t.Elements()
	if n < 0 || n > math.MaxInt64/int64(t.DType.Size()) {
		return fmt.Errorf("%w: tensor shape %v invalid", ErrDecode, t.Shape)
	}
	if want := n * int64(t.DType.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("%w: tensor %s%v holds %d bytes, want %d", ErrDecode, t.DType, t.Shape, len(t.Data), want)
	}
	return nil
}

// SetF32 stores x with the given shape, converting to dt (bf16/f16 round to nearest even).
// It reuses t.Data's capacity.
func (t *Tensor) SetF32(dt DType, x []float32, shape ...int64) error {
	if dt.Size() == 0 {
		return fmt.Errorf("proto: dtype %d unknown", dt)
	}
	t.DType = dt
	t.Shape = append(t.Shape[:0], shape...)
	if n := t.Elements(); n != int64(len(x)) {
		// t.Shape, not shape: formatting shape would make every caller's variadic
		// slice escape, an allocation per call.
		return fmt.Errorf("proto: %d values for shape %v", len(x), t.Shape)
	}
	t.Data = grow(t.Data, len(x)*dt.Size())
	putF32(t.Data, dt, x)
	return nil
}

// SetRowsF32 stores the rows of x (row-major, width values each) that rows names, in that
// order, as a [len(rows), width] tensor of dtype dt. It gathers and converts in one pass,
// reusing t's storage: a sender need not copy the rows into a buffer of their own first.
func (t *Tensor) SetRowsF32(dt DType, x []float32, width int, rows []int32) error {
	if dt.Size() == 0 {
		return fmt.Errorf("proto: dtype %d unknown", dt)
	}
	if width <= 0 || len(x)%width != 0 {
		return fmt.Errorf("proto: %d values are not rows of %d", len(x), width)
	}
	n := len(x) / width
	for _, r := range rows {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("proto: row %d of %d", r, n)
		}
	}
	t.DType = dt
	t.Shape = append(t.Shape[:0], int64(len(rows)), int64(width))
	rb := width * dt.Size()
	t.Data = grow(t.Data, len(rows)*rb)
	for i, r := range rows {
		putF32(t.Data[i*rb:(i+1)*rb], dt, x[int(r)*width:int(r+1)*width])
	}
	return nil
}

// putF32 writes x into dst as dt (bf16/f16 round to nearest even); dst holds len(x) values.
func putF32(dst []byte, dt DType, x []float32) {
	switch dt {
	case F32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], f32ToBF16(v))
		}
	case F16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], f32ToF16(v))
		}
	}
}

// F32 converts the tensor's elements to float32 into dst (which must have Elements() room)
// and returns the filled slice.
func (t *Tensor) F32(dst []float32) ([]float32, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	n := int(t.Elements())
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	switch t.DType {
	case F32:
		if n > 0 && uintptr(unsafe.Pointer(&t.Data[0]))%4 == 0 {
			copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(&t.Data[0])), n))
			break
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16)
		}
	case F16:
		for i := range dst {
			dst[i] = f16ToF32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	}
	return dst, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// The conversions below repeat ascend/cpu's on purpose: proto may import nothing from the
// module, and these few lines are the wire format's definition of rounding.

func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff:
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15:
		return sign | 0x7c00
	case exp-127 >= -14:
		e := uint32(exp-127+15) << 10
		m := mant >> 13
		v := e | m
		rest := mant & 0x1fff
		if rest > 0x1000 || (rest == 0x1000 && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	case exp-127 >= -25:
		m := mant | 0x800000
		shift := uint32(-(exp - 127) - 14 + 13)
		v := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	}
	return sign
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// I32s is an int32 array carried as a little-endian msgpack bin.
type I32s []int32

// EncodeMsgpack implements msgpack.CustomEncoder.
func (s I32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	buf := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(buf[4*i:], uint32(v))
	}
	return enc.EncodeBytes(buf)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (s *I32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := readBin(dec, nil)
	if err != nil {
		return err
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("%w: int32 array of %d bytes", ErrDecode, len(b))
	}
	out := (*s)[:0]
	for i := 0; i < len(b); i += 4 {
		out = append(out, int32(binary.LittleEndian.Uint32(b[i:])))
	}
	*s = out
	return nil
}

// F32s is a float32 array carried as a little-endian msgpack bin.
type F32s []float32

// EncodeMsgpack implements msgpack.CustomEncoder.
func (s F32s) EncodeMsgpack(enc *msgpack.Encoder) error {
	buf := make([]byte, 4*len(s))
	for i, v := range s {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return enc.EncodeBytes(buf)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (s *F32s) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := readBin(dec, nil)
	if err != nil {
		return err
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("%w: float32 array of %d bytes", ErrDecode, len(b))
	}
	out := (*s)[:0]
	for i := 0; i < len(b); i += 4 {
		out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
	}
	*s = out
	return nil
}
