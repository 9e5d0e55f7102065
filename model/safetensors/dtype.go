package safetensors

import "errors"

// Sentinel errors, wrapped with detail (file, tensor, problem) by the functions that
// return them.
var (
	// ErrFormat: a file's bytes break a rule of the safetensors format or index.
	ErrFormat = errors.New("safetensors: invalid file")
	// ErrNotFound: the named tensor is not in the file or checkpoint.
	ErrNotFound = errors.New("safetensors: tensor not found")
	// ErrUnsupported: a valid tensor that this package cannot decode or slice as asked
	// (complex or 6-bit dtypes, sub-byte rows, an unrecognised scale layout).
	ErrUnsupported = errors.New("safetensors: unsupported")
	// ErrInvalid: bad arguments (a row range out of bounds, tensors to write whose data
	// does not match their shape, ...).
	ErrInvalid = errors.New("safetensors: invalid argument")
	// ErrClosed: the file or checkpoint was closed.
	ErrClosed = errors.New("safetensors: closed")
)

// DType is a safetensors element type, spelled as in the header ("BF16", "F8_E4M3", ...).
type DType string

// The dtypes of the format (models.md §5.1), in the reference implementation's enum order,
// which is increasing alignment: the writer orders tensors by this, descending.
const (
	BOOL       DType = "BOOL"
	F4         DType = "F4"      // float4 e2m1, two per byte, low nibble first
	F6E2M3     DType = "F6_E2M3" // float6, 6 bits per element
	F6E3M2     DType = "F6_E3M2"
	U8         DType = "U8"
	I8         DType = "I8"
	F8E5M2     DType = "F8_E5M2"
	F8E4M3     DType = "F8_E4M3" // the "fn" variant: no infinities, 0x7F/0xFF are NaN, max 448
	F8E8M0     DType = "F8_E8M0" // exponent only: 2^(e-127), 0xFF NaN (MX scales)
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	I16        DType = "I16"
	U16        DType = "U16"
	F16        DType = "F16"
	BF16       DType = "BF16"
	I32        DType = "I32"
	U32        DType = "U32"
	F32        DType = "F32"
	C64        DType = "C64"
	F64        DType = "F64"
	I64        DType = "I64"
	U64        DType = "U64"
)

// dtypes lists every DType in enum order; the index is the writer's sort rank.
var dtypes = []DType{BOOL, F4, F6E2M3, F6E3M2, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ,
	F8E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64}

var dtypeRank = func() map[DType]int {
	m := make(map[DType]int, len(dtypes))
	for i, d := range dtypes {
		m[d] = i
	}
	return m
}()

// DTypes returns every dtype of the format, in the reference enum order.
func DTypes() []DType { return append([]DType(nil), dtypes...) }

// Valid reports whether d is a dtype of the format.
func (d DType) Valid() bool { _, ok := dtypeRank[d]; return ok }

// Bits is the width of one element in bits (0 for an unknown dtype).
func (d DType) Bits() int {
	switch d {
	case F4:
		return 4
	case F6E2M3, F6E3M2:
		return 6
	case BOOL, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ:
		return 8
	case I16, U16, F16, BF16:
		return 16
	case I32, U32, F32:
		return 32
	case C64, F64, I64, U64:
		return 64
	}
	return 0
}

// alignment is the natural alignment of d in bytes (sub-byte types: 1).
func (d DType) alignment() int { return max(d.Bits()/8, 1) }

func (d DType) String() string { return string(d) }
