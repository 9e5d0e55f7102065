package model

import (
	"encoding/binary"
	"math"

	"github.com/moemesh/moemesh/ascend"
)

// encode writes vals as little-endian dt (bf16 rounds to nearest even) into out.
func encode(out []byte, vals []float32, dt ascend.DType) {
	switch dt {
	case ascend.F32:
		for i, v := range vals {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	default: // bf16
		for i, v := range vals {
			b := math.Float32bits(v)
			if b&0x7fffffff > 0x7f800000 {
				binary.LittleEndian.PutUint16(out[2*i:], uint16(b>>16)|0x40)
				continue
			}
			binary.LittleEndian.PutUint16(out[2*i:], uint16((b+0x7fff+(b>>16)&1)>>16))
		}
	}
}
