package proto

import (
	"encoding/binary"
	"math"
)

// The hot path of the mesh (one batch and one result per card per layer step) encodes and
// decodes ExpertBatch and ExpertResult by hand instead of through msgpack's reflection:
// the generic path allocates an encoder buffer, one scratch slice per int32/float32 array
// and the returned body, every message. The hand-written code writes exactly the bytes the
// generic encoder writes (fixed-width ints, structs as arrays, arrays as bin; checked by
// TestAppendMatchesMsgpack), so the wire format is unchanged and either side may use either
// path. Decoding takes a fast path only for a body laid out the way these encoders (and
// msgpack) lay it out; anything else (nil fields, other int widths, more or fewer fields
// from another version) goes through the generic decoder, which stays the definition of
// what a body means.

// msgpack codes used by the layouts below.
const (
	mpNil      = 0xc0
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpFixArray = 0x90
)

// AppendExpertBatch appends b's encoding (the bytes Marshal(b) gives) to dst and returns
// the extended slice. It allocates only when dst lacks capacity.
func AppendExpertBatch(dst []byte, b *ExpertBatch) []byte {
	dst = append(dst, mpFixArray|9)
	dst = appendUint16(dst, b.V)
	dst = appendInt32(dst, b.Layer)
	dst = append(dst, mpUint8, byte(b.Mode), mpUint8, byte(b.OutDType))
	dst = appendTensor(dst, &b.X)
	dst = appendI32s(dst, b.RowPtr)
	dst = appendI32s(dst, b.Experts)
	dst = appendF32s(dst, b.Weights)
	return appendI32s(dst, b.Tokens)
}

// AppendExpertResult appends r's encoding (the bytes Marshal(r) gives) to dst.
func AppendExpertResult(dst []byte, r *ExpertResult) []byte {
	dst = append(dst, mpFixArray|5)
	dst = appendUint16(dst, r.V)
	dst = appendInt32(dst, r.Layer)
	dst = appendTensor(dst, &r.Y)
	dst = appendInt64(dst, r.QueueNanos)
	return appendInt64(dst, r.ComputeNanos)
}

func appendUint16(dst []byte, v uint16) []byte {
	return binary.BigEndian.AppendUint16(append(dst, mpUint16), v)
}

func appendInt32(dst []byte, v int32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, mpInt32), uint32(v))
}

func appendInt64(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, mpInt64), uint64(v))
}

func appendArrayLen(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, mpFixArray|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, mpArray16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, mpArray32), uint32(n))
}

func appendBinLen(dst []byte, n int) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(dst, mpBin8, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, mpBin16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, mpBin32), uint32(n))
}

func appendTensor(dst []byte, t *Tensor) []byte {
	dst = append(dst, mpFixArray|3, mpUint8, byte(t.DType))
	if t.Shape == nil {
		dst = append(dst, mpNil)
	} else {
		dst = appendArrayLen(dst, len(t.Shape))
		for _, d := range t.Shape {
			dst = appendInt64(dst, d)
		}
	}
	if t.Data == nil {
		return append(dst, mpNil)
	}
	return append(appendBinLen(dst, len(t.Data)), t.Data...)
}

// appendI32s writes s as I32s.EncodeMsgpack does (a nil slice is msgpack nil).
func appendI32s(dst []byte, s I32s) []byte {
	if s == nil {
		return append(dst, mpNil)
	}
	dst = appendBinLen(dst, 4*len(s))
	for _, v := range s {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(v))
	}
	return dst
}

func appendF32s(dst []byte, s F32s) []byte {
	if s == nil {
		return append(dst, mpNil)
	}
	dst = appendBinLen(dst, 4*len(s))
	for _, v := range s {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// wireReader walks a body on the fast path. Any deviation from the expected layout sets ok
// to false; the caller then decodes the body generically.
type wireReader struct {
	b  []byte
	ok bool
}

func (r *wireReader) byte1() byte {
	if !r.ok || len(r.b) < 1 {
		r.ok = false
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) expect(code byte) {
	if r.byte1() != code {
		r.ok = false
	}
}

func (r *wireReader) fixed(code byte, n int) []byte {
	r.expect(code)
	if !r.ok || len(r.b) < n {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) uint8(code byte) uint8 {
	if v := r.fixed(code, 1); v != nil {
		return v[0]
	}
	return 0
}

func (r *wireReader) uint16() uint16 {
	if v := r.fixed(mpUint16, 2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *wireReader) int32() int32 {
	if v := r.fixed(mpInt32, 4); v != nil {
		return int32(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (r *wireReader) int64() int64 {
	if v := r.fixed(mpInt64, 8); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// bin returns the bytes of a (non-nil) bin, aliasing the body.
func (r *wireReader) bin() []byte {
	var n int
	switch r.byte1() {
	case mpBin8:
		n = int(r.byte1())
	case mpBin16:
		if len(r.b) >= 2 {
			n = int(binary.BigEndian.Uint16(r.b))
			r.b = r.b[2:]
		} else {
			r.ok = false
		}
	case mpBin32:
		if len(r.b) >= 4 {
			n = int(binary.BigEndian.Uint32(r.b))
			r.b = r.b[4:]
		} else {
			r.ok = false
		}
	default:
		r.ok = false
	}
	if !r.ok || n < 0 || n > len(r.b) {
		r.ok = false
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) arrayLen() int {
	c := r.byte1()
	switch {
	case c&0xf0 == mpFixArray:
		return int(c & 0x0f)
	case c == mpArray16 && len(r.b) >= 2:
		n := int(binary.BigEndian.Uint16(r.b))
		r.b = r.b[2:]
		return n
	case c == mpArray32 && len(r.b) >= 4:
		n := int(binary.BigEndian.Uint32(r.b))
		r.b = r.b[4:]
		return n
	}
	r.ok = false
	return 0
}

// tensor decodes a tensor whose shape and data are present (not nil) into t, reusing its
// storage. The rank bound is the generic decoder's (Dims).
func (r *wireReader) tensor(t *Tensor) {
	if r.arrayLen() != 3 {
		r.ok = false
		return
	}
	t.DType = DType(r.uint8(mpUint8))
	n := r.arrayLen()
	if !r.ok || n > MaxRank {
		r.ok = false
		return
	}
	t.Shape = t.Shape[:0]
	for i := 0; i < n; i++ {
		t.Shape = append(t.Shape, r.int64())
	}
	data := r.bin()
	if !r.ok {
		return
	}
	// grow, as readBin: an empty bin leaves a nil Data nil, like the generic path.
	t.Data = grow(t.Data, len(data))
	copy(t.Data, data)
}

// i32s decodes a non-nil bin of little-endian int32s into dst's storage.
func (r *wireReader) i32s(dst []int32) []int32 {
	data := r.bin()
	if !r.ok || len(data)%4 != 0 {
		r.ok = false
		return dst
	}
	n := len(data) / 4
	if cap(dst) < n {
		dst = make([]int32, n)
	}
	dst = dst[:n]
	for i := range dst {
		dst[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return dst
}

func (r *wireReader) f32s(dst []float32) []float32 {
	data := r.bin()
	if !r.ok || len(data)%4 != 0 {
		r.ok = false
		return dst
	}
	n := len(data) / 4
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return dst
}

// decodeBatchFast decodes a body in the layout AppendExpertBatch writes into b, reusing
// b's storage; false means the body is laid out otherwise (or is malformed) and b must be
// decoded generically.
func decodeBatchFast(data []byte, b *ExpertBatch) bool {
	r := wireReader{b: data, ok: true}
	r.expect(mpFixArray | 9)
	b.V = r.uint16()
	b.Layer = r.int32()
	b.Mode = Mode(r.uint8(mpUint8))
	b.OutDType = DType(r.uint8(mpUint8))
	r.tensor(&b.X)
	b.RowPtr = r.i32s(b.RowPtr[:0])
	b.Experts = r.i32s(b.Experts[:0])
	b.Weights = r.f32s(b.Weights[:0])
	b.Tokens = r.i32s(b.Tokens[:0])
	return r.ok && len(r.b) == 0
}

// decodeResultFast is decodeBatchFast for an ExpertResult.
func decodeResultFast(data []byte, res *ExpertResult) bool {
	r := wireReader{b: data, ok: true}
	r.expect(mpFixArray | 5)
	res.V = r.uint16()
	res.Layer = r.int32()
	r.tensor(&res.Y)
	res.QueueNanos = r.int64()
	res.ComputeNanos = r.int64()
	return r.ok && len(r.b) == 0
}
