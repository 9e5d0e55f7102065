//go:build amd64 && !purego

#include "textflag.h"

// AVX2 grouped-matmul kernels; see kernel.go for the summation order they implement and
// kernel_amd64.go for their Go signatures. Each 8-wide vector holds the 8 lanes of one
// output element; k advances by 8 per step (CX counts elements). Products are rounded by
// VMULPS before VADDPS adds them: no FMA, so results match the Go kernels bit for bit.
//
// Registers: DI acc, R8-R11 x rows, R12/R13 (and R10/R11 in 1x4) weight rows, CX k, DX end.

// Weight loads: 8 weights of one row at element CX, widened to f32 in dst.
#define LDW_F32(base, dst) VMOVUPS (base)(CX*4), dst
#define LDW_BF16(base, dst) VPMOVZXWD (base)(CX*2), dst; VPSLLD $16, dst, dst
#define LDW_F16(base, dst) VCVTPH2PS (base)(CX*2), dst

// 4x2: Y0..Y7 = acc[row][col] for rows 0-3 × cols 0-1; weights in Y8 (col 0), Y9 (col 1).
#define PROLOGUE4x2 \
	MOVQ acc+0(FP), DI; \
	MOVQ x0+8(FP), R8; \
	MOVQ x1+16(FP), R9; \
	MOVQ x2+24(FP), R10; \
	MOVQ x3+32(FP), R11; \
	MOVQ w0+40(FP), R12; \
	MOVQ w1+48(FP), R13; \
	MOVQ n8+56(FP), DX; \
	SHLQ $3, DX; \
	XORQ CX, CX; \
	VMOVUPS 0(DI), Y0; \
	VMOVUPS 32(DI), Y1; \
	VMOVUPS 64(DI), Y2; \
	VMOVUPS 96(DI), Y3; \
	VMOVUPS 128(DI), Y4; \
	VMOVUPS 160(DI), Y5; \
	VMOVUPS 192(DI), Y6; \
	VMOVUPS 224(DI), Y7

#define MUL4x2 \
	VMOVUPS (R8)(CX*4), Y10; \
	VMULPS Y8, Y10, Y11; \
	VADDPS Y11, Y0, Y0; \
	VMULPS Y9, Y10, Y12; \
	VADDPS Y12, Y1, Y1; \
	VMOVUPS (R9)(CX*4), Y13; \
	VMULPS Y8, Y13, Y14; \
	VADDPS Y14, Y2, Y2; \
	VMULPS Y9, Y13, Y15; \
	VADDPS Y15, Y3, Y3; \
	VMOVUPS (R10)(CX*4), Y10; \
	VMULPS Y8, Y10, Y11; \
	VADDPS Y11, Y4, Y4; \
	VMULPS Y9, Y10, Y12; \
	VADDPS Y12, Y5, Y5; \
	VMOVUPS (R11)(CX*4), Y13; \
	VMULPS Y8, Y13, Y14; \
	VADDPS Y14, Y6, Y6; \
	VMULPS Y9, Y13, Y15; \
	VADDPS Y15, Y7, Y7

#define EPILOGUE4x2 \
	VMOVUPS Y0, 0(DI); \
	VMOVUPS Y1, 32(DI); \
	VMOVUPS Y2, 64(DI); \
	VMOVUPS Y3, 96(DI); \
	VMOVUPS Y4, 128(DI); \
	VMOVUPS Y5, 160(DI); \
	VMOVUPS Y6, 192(DI); \
	VMOVUPS Y7, 224(DI); \
	VZEROUPPER

// 1x4: Y0..Y3 = acc[col] for cols 0-3; x in Y8; weights in Y9..Y12.
#define PROLOGUE1x4 \
	MOVQ acc+0(FP), DI; \
	MOVQ x+8(FP), R8; \
	MOVQ w0+16(FP), R12; \
	MOVQ w1+24(FP), R13; \
	MOVQ w2+32(FP), R10; \
	MOVQ w3+40(FP), R11; \
	MOVQ n8+48(FP), DX; \
	SHLQ $3, DX; \
	XORQ CX, CX; \
	VMOVUPS 0(DI), Y0; \
	VMOVUPS 32(DI), Y1; \
	VMOVUPS 64(DI), Y2; \
	VMOVUPS 96(DI), Y3

#define MUL1x4 \
	VMOVUPS (R8)(CX*4), Y8; \
	VMULPS Y9, Y8, Y9; \
	VADDPS Y9, Y0, Y0; \
	VMULPS Y10, Y8, Y10; \
	VADDPS Y10, Y1, Y1; \
	VMULPS Y11, Y8, Y11; \
	VADDPS Y11, Y2, Y2; \
	VMULPS Y12, Y8, Y12; \
	VADDPS Y12, Y3, Y3

#define EPILOGUE1x4 \
	VMOVUPS Y0, 0(DI); \
	VMOVUPS Y1, 32(DI); \
	VMOVUPS Y2, 64(DI); \
	VMOVUPS Y3, 96(DI); \
	VZEROUPPER

// func gemm4x2F32(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *float32, n8 int)
TEXT ·gemm4x2F32(SB), NOSPLIT, $0-64
	PROLOGUE4x2
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_F32(R12, Y8)
	LDW_F32(R13, Y9)
	MUL4x2
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x2
	RET

// func gemm4x2BF16(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *uint16, n8 int)
TEXT ·gemm4x2BF16(SB), NOSPLIT, $0-64
	PROLOGUE4x2
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_BF16(R12, Y8)
	LDW_BF16(R13, Y9)
	MUL4x2
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x2
	RET

// func gemm4x2F16(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *uint16, n8 int)
TEXT ·gemm4x2F16(SB), NOSPLIT, $0-64
	PROLOGUE4x2
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_F16(R12, Y8)
	LDW_F16(R13, Y9)
	MUL4x2
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x2
	RET

// func gemm1x4F32(acc *float32, x *float32, w0, w1, w2, w3 *float32, n8 int)
TEXT ·gemm1x4F32(SB), NOSPLIT, $0-56
	PROLOGUE1x4
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_F32(R12, Y9)
	LDW_F32(R13, Y10)
	LDW_F32(R10, Y11)
	LDW_F32(R11, Y12)
	MUL1x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x4
	RET

// func gemm1x4BF16(acc *float32, x *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm1x4BF16(SB), NOSPLIT, $0-56
	PROLOGUE1x4
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_BF16(R12, Y9)
	LDW_BF16(R13, Y10)
	LDW_BF16(R10, Y11)
	LDW_BF16(R11, Y12)
	MUL1x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x4
	RET

// func gemm1x4F16(acc *float32, x *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm1x4F16(SB), NOSPLIT, $0-56
	PROLOGUE1x4
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_F16(R12, Y9)
	LDW_F16(R13, Y10)
	LDW_F16(R10, Y11)
	LDW_F16(R11, Y12)
	MUL1x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x4
	RET

// I8 (W8A16) weights: 8 int8 values sign-extended to int32 and converted to f32, exactly.
// The row scale is applied once per output by finish, not here.
#define LDW_I8(base, dst) VPMOVSXBD (base)(CX*1), dst; VCVTDQ2PS dst, dst

// func gemm4x2I8(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *byte, n8 int)
TEXT ·gemm4x2I8(SB), NOSPLIT, $0-64
	PROLOGUE4x2
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_I8(R12, Y8)
	LDW_I8(R13, Y9)
	MUL4x2
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x2
	RET

// func gemm1x4I8(acc *float32, x *float32, w0, w1, w2, w3 *byte, n8 int)
TEXT ·gemm1x4I8(SB), NOSPLIT, $0-56
	PROLOGUE1x4
	TESTQ DX, DX
	JEQ   done
loop:
	LDW_I8(R12, Y9)
	LDW_I8(R13, Y10)
	LDW_I8(R10, Y11)
	LDW_I8(R11, Y12)
	MUL1x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x4
	RET

// MXFP4 weights, decoded in registers: 4 packed bytes give 8 values. The high nibbles are
// shifted down (VPSRLW shifts words, so each byte's high nibble lands in its low nibble
// with the next byte's low bits above it), interleaved after the low nibbles (value 2j
// from the low nibble of byte j, as stored) and masked; VPSHUFB maps each code to
// 2·e2m1 as an int8 (mxlut), which is widened and converted exactly, then multiplied by
// the block's half scale 2^(e−128), exact too (see kernel.go): the same f32 weight as the
// Go kernel's e2m1·2^(e−127), up to the sign of a zero, which cannot change a sum that
// starts at +0.
DATA mxlut<>+0(SB)/8, $0x0c08060403020100
DATA mxlut<>+8(SB)/8, $0xf4f8fafcfdfeff00
GLOBL mxlut<>(SB), RODATA|NOPTR, $16
DATA mxmask<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA mxmask<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL mxmask<>(SB), RODATA|NOPTR, $16

// MXW decodes 8 values of the row at base into y (x its low half), scaled by the float at
// off(R10)(R12*1). R11 is the byte offset (CX/2), R12 the scale block's byte offset.
// Uses X9 and Y10; X11 holds mxmask, X12 mxlut.
#define MXW(base, off, x, y) \
	VMOVD (base)(R11*1), x; \
	VPSRLW $4, x, X9; \
	VPUNPCKLBW X9, x, x; \
	VPAND X11, x, x; \
	VPSHUFB x, X12, x; \
	VPMOVSXBD x, y; \
	VCVTDQ2PS y, y; \
	VBROADCASTSS off(R10)(R12*1), Y10; \
	VMULPS Y10, y, y

// func gemm1x4MX(acc *float32, x *float32, w0, w1, w2, w3 *byte, sc *float32, n8 int)
// sc holds the half scales of the 4 rows interleaved: sc[4·block + row]. Y0-Y3 acc, Y4 x,
// Y5-Y8 weights.
TEXT ·gemm1x4MX(SB), NOSPLIT, $0-64
	MOVQ acc+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ w0+16(FP), AX
	MOVQ w1+24(FP), BX
	MOVQ w2+32(FP), SI
	MOVQ w3+40(FP), R9
	MOVQ sc+48(FP), R10
	MOVQ n8+56(FP), DX
	SHLQ $3, DX
	XORQ CX, CX
	XORQ R11, R11
	VMOVUPS 0(DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VMOVDQU mxmask<>(SB), X11
	VMOVDQU mxlut<>(SB), X12
	TESTQ DX, DX
	JEQ   done
loop:
	// R12 = (CX/32)·16: the 4 scales of this 32-value block.
	MOVQ CX, R12
	SHRQ $1, R12
	ANDQ $-16, R12
	VMOVUPS (R8)(CX*4), Y4
	MXW(AX, 0, X5, Y5)
	MXW(BX, 4, X6, Y6)
	MXW(SI, 8, X7, Y7)
	MXW(R9, 12, X8, Y8)
	VMULPS Y5, Y4, Y5
	VADDPS Y5, Y0, Y0
	VMULPS Y6, Y4, Y6
	VADDPS Y6, Y1, Y1
	VMULPS Y7, Y4, Y7
	VADDPS Y7, Y2, Y2
	VMULPS Y8, Y4, Y8
	VADDPS Y8, Y3, Y3
	ADDQ $8, CX
	ADDQ $4, R11
	CMPQ CX, DX
	JB   loop
done:
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VZEROUPPER
	RET
