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
