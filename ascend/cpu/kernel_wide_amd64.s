//go:build amd64 && !purego

#include "textflag.h"

// AVX-512 forms of the grouped-matmul kernels (kernel_amd64.go gates them on AVX512F). Each
// 16-wide register holds the 8 lanes of two output elements (see block4x4 and block1x8 in
// kernel.go), so one VMULPS/VADDPS pair does the work of two in the AVX2 kernels, with the
// same products rounded and added in the same order: the results are bit-identical.
//
// 4x4: DI acc, R8/R9 x row pairs (packed by packPairs: 8 k of the even row, then the same 8
// k of the odd row), AX BX SI R12 weight rows, CX k, DX end. Z8 = x0|x1, Z9 = x2|x3, Z10-Z13 =
// one weight row in both halves; Z0-Z3 = rows 0/1 × cols 0-3, Z4-Z7 rows 2/3.
// 1x8: DI acc, R8 x, AX BX SI R9-R13 weight rows. Z8 = x|x, Z9-Z12 = weight row pairs.

// Weight row broadcast to both halves of dst (16 floats).
#define BCW_F32(base, y, z) VBROADCASTF64X4 (base)(CX*4), z
#define BCW_BF16(base, y, z) VBROADCASTI128 (base)(CX*2), y; VPMOVZXWD y, z; VPSLLD $16, z, z
#define BCW_F16(base, y, z) VBROADCASTI128 (base)(CX*2), y; VCVTPH2PS y, z

// Two weight rows, lo in the low half and hi in the high half of dst.
#define PAIR_F32(lo, hi, x, y, z) VMOVUPS (lo)(CX*4), y; VINSERTF64X4 $1, (hi)(CX*4), z, z
#define PAIR_BF16(lo, hi, x, y, z) VMOVDQU (lo)(CX*2), x; VINSERTI128 $1, (hi)(CX*2), y, y; VPMOVZXWD y, z; VPSLLD $16, z, z
#define PAIR_F16(lo, hi, x, y, z) VMOVDQU (lo)(CX*2), x; VINSERTI128 $1, (hi)(CX*2), y, y; VCVTPH2PS y, z

#define PROLOGUE4x4 \
	MOVQ acc+0(FP), DI; \
	MOVQ xp0+8(FP), R8; \
	MOVQ xp1+16(FP), R9; \
	MOVQ w0+24(FP), AX; \
	MOVQ w1+32(FP), BX; \
	MOVQ w2+40(FP), SI; \
	MOVQ w3+48(FP), R12; \
	MOVQ n8+56(FP), DX; \
	SHLQ $3, DX; \
	XORQ CX, CX; \
	VMOVUPS 0(DI), Z0; \
	VMOVUPS 64(DI), Z1; \
	VMOVUPS 128(DI), Z2; \
	VMOVUPS 192(DI), Z3; \
	VMOVUPS 256(DI), Z4; \
	VMOVUPS 320(DI), Z5; \
	VMOVUPS 384(DI), Z6; \
	VMOVUPS 448(DI), Z7

#define XROWS4x4 \
	VMOVUPS (R8)(CX*8), Z8; \
	VMOVUPS (R9)(CX*8), Z9

#define MUL4x4 \
	VMULPS Z10, Z8, Z16; \
	VADDPS Z16, Z0, Z0; \
	VMULPS Z11, Z8, Z17; \
	VADDPS Z17, Z1, Z1; \
	VMULPS Z12, Z8, Z18; \
	VADDPS Z18, Z2, Z2; \
	VMULPS Z13, Z8, Z19; \
	VADDPS Z19, Z3, Z3; \
	VMULPS Z10, Z9, Z20; \
	VADDPS Z20, Z4, Z4; \
	VMULPS Z11, Z9, Z21; \
	VADDPS Z21, Z5, Z5; \
	VMULPS Z12, Z9, Z22; \
	VADDPS Z22, Z6, Z6; \
	VMULPS Z13, Z9, Z23; \
	VADDPS Z23, Z7, Z7

#define EPILOGUE4x4 \
	VMOVUPS Z0, 0(DI); \
	VMOVUPS Z1, 64(DI); \
	VMOVUPS Z2, 128(DI); \
	VMOVUPS Z3, 192(DI); \
	VMOVUPS Z4, 256(DI); \
	VMOVUPS Z5, 320(DI); \
	VMOVUPS Z6, 384(DI); \
	VMOVUPS Z7, 448(DI); \
	VZEROUPPER

#define PROLOGUE1x8 \
	MOVQ acc+0(FP), DI; \
	MOVQ x+8(FP), R8; \
	MOVQ w0+16(FP), AX; \
	MOVQ w1+24(FP), BX; \
	MOVQ w2+32(FP), SI; \
	MOVQ w3+40(FP), R9; \
	MOVQ w4+48(FP), R10; \
	MOVQ w5+56(FP), R11; \
	MOVQ w6+64(FP), R12; \
	MOVQ w7+72(FP), R13; \
	MOVQ n8+80(FP), DX; \
	SHLQ $3, DX; \
	XORQ CX, CX; \
	VMOVUPS 0(DI), Z0; \
	VMOVUPS 64(DI), Z1; \
	VMOVUPS 128(DI), Z2; \
	VMOVUPS 192(DI), Z3

#define MUL1x8 \
	VMULPS Z9, Z8, Z16; \
	VADDPS Z16, Z0, Z0; \
	VMULPS Z10, Z8, Z17; \
	VADDPS Z17, Z1, Z1; \
	VMULPS Z11, Z8, Z18; \
	VADDPS Z18, Z2, Z2; \
	VMULPS Z12, Z8, Z19; \
	VADDPS Z19, Z3, Z3

#define EPILOGUE1x8 \
	VMOVUPS Z0, 0(DI); \
	VMOVUPS Z1, 64(DI); \
	VMOVUPS Z2, 128(DI); \
	VMOVUPS Z3, 192(DI); \
	VZEROUPPER

// 8x4: DI acc, R8-R11 x row pairs 0-3 (packed), AX BX SI R12 weight rows. Z16-Z19 = weight
// rows in both halves, Z20-Z23 = x pairs, Z24-Z31 products; Z(4p+c) = pair p × col c.
#define BCW8_F32(base, y, z) VBROADCASTF64X4 (base)(CX*4), z
#define BCW8_BF16(base, y, z) VBROADCASTI32X4 (base)(CX*2), z; VPMOVZXWD y, z; VPSLLD $16, z, z
#define BCW8_F16(base, y, z) VBROADCASTI32X4 (base)(CX*2), z; VCVTPH2PS y, z

#define PROLOGUE8x4 \
	MOVQ acc+0(FP), DI; \
	MOVQ xp0+8(FP), R8; \
	MOVQ xp1+16(FP), R9; \
	MOVQ xp2+24(FP), R10; \
	MOVQ xp3+32(FP), R11; \
	MOVQ w0+40(FP), AX; \
	MOVQ w1+48(FP), BX; \
	MOVQ w2+56(FP), SI; \
	MOVQ w3+64(FP), R12; \
	MOVQ n8+72(FP), DX; \
	SHLQ $3, DX; \
	XORQ CX, CX; \
	VMOVUPS 0(DI), Z0; \
	VMOVUPS 64(DI), Z1; \
	VMOVUPS 128(DI), Z2; \
	VMOVUPS 192(DI), Z3; \
	VMOVUPS 256(DI), Z4; \
	VMOVUPS 320(DI), Z5; \
	VMOVUPS 384(DI), Z6; \
	VMOVUPS 448(DI), Z7; \
	VMOVUPS 512(DI), Z8; \
	VMOVUPS 576(DI), Z9; \
	VMOVUPS 640(DI), Z10; \
	VMOVUPS 704(DI), Z11; \
	VMOVUPS 768(DI), Z12; \
	VMOVUPS 832(DI), Z13; \
	VMOVUPS 896(DI), Z14; \
	VMOVUPS 960(DI), Z15

#define MUL8x4 \
	VMOVUPS (R8)(CX*8), Z20; \
	VMOVUPS (R9)(CX*8), Z21; \
	VMOVUPS (R10)(CX*8), Z22; \
	VMOVUPS (R11)(CX*8), Z23; \
	VMULPS Z16, Z20, Z24; \
	VADDPS Z24, Z0, Z0; \
	VMULPS Z17, Z20, Z25; \
	VADDPS Z25, Z1, Z1; \
	VMULPS Z18, Z20, Z26; \
	VADDPS Z26, Z2, Z2; \
	VMULPS Z19, Z20, Z27; \
	VADDPS Z27, Z3, Z3; \
	VMULPS Z16, Z21, Z28; \
	VADDPS Z28, Z4, Z4; \
	VMULPS Z17, Z21, Z29; \
	VADDPS Z29, Z5, Z5; \
	VMULPS Z18, Z21, Z30; \
	VADDPS Z30, Z6, Z6; \
	VMULPS Z19, Z21, Z31; \
	VADDPS Z31, Z7, Z7; \
	VMULPS Z16, Z22, Z24; \
	VADDPS Z24, Z8, Z8; \
	VMULPS Z17, Z22, Z25; \
	VADDPS Z25, Z9, Z9; \
	VMULPS Z18, Z22, Z26; \
	VADDPS Z26, Z10, Z10; \
	VMULPS Z19, Z22, Z27; \
	VADDPS Z27, Z11, Z11; \
	VMULPS Z16, Z23, Z28; \
	VADDPS Z28, Z12, Z12; \
	VMULPS Z17, Z23, Z29; \
	VADDPS Z29, Z13, Z13; \
	VMULPS Z18, Z23, Z30; \
	VADDPS Z30, Z14, Z14; \
	VMULPS Z19, Z23, Z31; \
	VADDPS Z31, Z15, Z15

#define EPILOGUE8x4 \
	VMOVUPS Z0, 0(DI); \
	VMOVUPS Z1, 64(DI); \
	VMOVUPS Z2, 128(DI); \
	VMOVUPS Z3, 192(DI); \
	VMOVUPS Z4, 256(DI); \
	VMOVUPS Z5, 320(DI); \
	VMOVUPS Z6, 384(DI); \
	VMOVUPS Z7, 448(DI); \
	VMOVUPS Z8, 512(DI); \
	VMOVUPS Z9, 576(DI); \
	VMOVUPS Z10, 640(DI); \
	VMOVUPS Z11, 704(DI); \
	VMOVUPS Z12, 768(DI); \
	VMOVUPS Z13, 832(DI); \
	VMOVUPS Z14, 896(DI); \
	VMOVUPS Z15, 960(DI); \
	VZEROUPPER

// func gemm4x4ZF32(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *float32, n8 int)
TEXT ·gemm4x4ZF32(SB), NOSPLIT, $0-64
	PROLOGUE4x4
	TESTQ DX, DX
	JEQ   done
loop:
	XROWS4x4
	BCW_F32(AX, Y10, Z10)
	BCW_F32(BX, Y11, Z11)
	BCW_F32(SI, Y12, Z12)
	BCW_F32(R12, Y13, Z13)
	MUL4x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x4
	RET

// func gemm4x4ZBF16(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm4x4ZBF16(SB), NOSPLIT, $0-64
	PROLOGUE4x4
	TESTQ DX, DX
	JEQ   done
loop:
	XROWS4x4
	BCW_BF16(AX, Y10, Z10)
	BCW_BF16(BX, Y11, Z11)
	BCW_BF16(SI, Y12, Z12)
	BCW_BF16(R12, Y13, Z13)
	MUL4x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x4
	RET

// func gemm4x4ZF16(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm4x4ZF16(SB), NOSPLIT, $0-64
	PROLOGUE4x4
	TESTQ DX, DX
	JEQ   done
loop:
	XROWS4x4
	BCW_F16(AX, Y10, Z10)
	BCW_F16(BX, Y11, Z11)
	BCW_F16(SI, Y12, Z12)
	BCW_F16(R12, Y13, Z13)
	MUL4x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x4
	RET

// func gemm1x8ZF32(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *float32, n8 int)
TEXT ·gemm1x8ZF32(SB), NOSPLIT, $0-88
	PROLOGUE1x8
	TESTQ DX, DX
	JEQ   done
loop:
	VBROADCASTF64X4 (R8)(CX*4), Z8
	PAIR_F32(AX, BX, X9, Y9, Z9)
	PAIR_F32(SI, R9, X10, Y10, Z10)
	PAIR_F32(R10, R11, X11, Y11, Z11)
	PAIR_F32(R12, R13, X12, Y12, Z12)
	MUL1x8
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x8
	RET

// func gemm1x8ZBF16(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)
TEXT ·gemm1x8ZBF16(SB), NOSPLIT, $0-88
	PROLOGUE1x8
	TESTQ DX, DX
	JEQ   done
loop:
	VBROADCASTF64X4 (R8)(CX*4), Z8
	PAIR_BF16(AX, BX, X9, Y9, Z9)
	PAIR_BF16(SI, R9, X10, Y10, Z10)
	PAIR_BF16(R10, R11, X11, Y11, Z11)
	PAIR_BF16(R12, R13, X12, Y12, Z12)
	MUL1x8
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x8
	RET

// func gemm1x8ZF16(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)
TEXT ·gemm1x8ZF16(SB), NOSPLIT, $0-88
	PROLOGUE1x8
	TESTQ DX, DX
	JEQ   done
loop:
	VBROADCASTF64X4 (R8)(CX*4), Z8
	PAIR_F16(AX, BX, X9, Y9, Z9)
	PAIR_F16(SI, R9, X10, Y10, Z10)
	PAIR_F16(R10, R11, X11, Y11, Z11)
	PAIR_F16(R12, R13, X12, Y12, Z12)
	MUL1x8
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x8
	RET

// func gemm8x4ZF32(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *float32, n8 int)
TEXT ·gemm8x4ZF32(SB), NOSPLIT, $0-80
	PROLOGUE8x4
	TESTQ DX, DX
	JEQ   done
loop:
	BCW8_F32(AX, Y16, Z16)
	BCW8_F32(BX, Y17, Z17)
	BCW8_F32(SI, Y18, Z18)
	BCW8_F32(R12, Y19, Z19)
	MUL8x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE8x4
	RET

// func gemm8x4ZBF16(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm8x4ZBF16(SB), NOSPLIT, $0-80
	PROLOGUE8x4
	TESTQ DX, DX
	JEQ   done
loop:
	BCW8_BF16(AX, Y16, Z16)
	BCW8_BF16(BX, Y17, Z17)
	BCW8_BF16(SI, Y18, Z18)
	BCW8_BF16(R12, Y19, Z19)
	MUL8x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE8x4
	RET

// func gemm8x4ZF16(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *uint16, n8 int)
TEXT ·gemm8x4ZF16(SB), NOSPLIT, $0-80
	PROLOGUE8x4
	TESTQ DX, DX
	JEQ   done
loop:
	BCW8_F16(AX, Y16, Z16)
	BCW8_F16(BX, Y17, Z17)
	BCW8_F16(SI, Y18, Z18)
	BCW8_F16(R12, Y19, Z19)
	MUL8x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE8x4
	RET

// I8 weights. One row's 8 bytes broadcast to both 64-bit halves of the low 128 bits, or two
// rows' 8 bytes side by side, then sign-extended to 16 int32 and converted to f32 (exact).
#define BCW_I8(base, x, z) VPBROADCASTQ (base)(CX*1), z; VPMOVSXBD x, z; VCVTDQ2PS z, z
#define PAIR_I8(lo, hi, x, z) VMOVQ (lo)(CX*1), x; VPINSRQ $1, (hi)(CX*1), x, x; VPMOVSXBD x, z; VCVTDQ2PS z, z

// func gemm4x4ZI8(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *byte, n8 int)
TEXT ·gemm4x4ZI8(SB), NOSPLIT, $0-64
	PROLOGUE4x4
	TESTQ DX, DX
	JEQ   done
loop:
	XROWS4x4
	BCW_I8(AX, X10, Z10)
	BCW_I8(BX, X11, Z11)
	BCW_I8(SI, X12, Z12)
	BCW_I8(R12, X13, Z13)
	MUL4x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE4x4
	RET

// func gemm1x8ZI8(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *byte, n8 int)
TEXT ·gemm1x8ZI8(SB), NOSPLIT, $0-88
	PROLOGUE1x8
	TESTQ DX, DX
	JEQ   done
loop:
	VBROADCASTF64X4 (R8)(CX*4), Z8
	PAIR_I8(AX, BX, X9, Z9)
	PAIR_I8(SI, R9, X10, Z10)
	PAIR_I8(R10, R11, X11, Z11)
	PAIR_I8(R12, R13, X12, Z12)
	MUL1x8
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE1x8
	RET

// func gemm8x4ZI8(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *byte, n8 int)
TEXT ·gemm8x4ZI8(SB), NOSPLIT, $0-80
	PROLOGUE8x4
	TESTQ DX, DX
	JEQ   done
loop:
	BCW_I8(AX, X16, Z16)
	BCW_I8(BX, X17, Z17)
	BCW_I8(SI, X18, Z18)
	BCW_I8(R12, X19, Z19)
	MUL8x4
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop
done:
	EPILOGUE8x4
	RET

// MXFP4 for one x row × 8 weight rows, decoded in registers as gemm1x4MX does (see
// kernel_amd64.s), two rows per 16-wide register: 4 packed bytes of the even row, then 4 of
// the odd row, give its 16 codes. The loop does one 32-value scale block per iteration (4
// steps of 8 k); DI walks the half scales sc[block][row], and Z24-Z27 hold each row pair's
// two scales (8 lanes each), so one VMULPS applies both. CX counts bytes (x is at 8·CX
// bytes), DX is the end. X13 temp, X14 mxmask, X15 mxlut.
DATA mxlutz<>+0(SB)/8, $0x0c08060403020100
DATA mxlutz<>+8(SB)/8, $0xf4f8fafcfdfeff00
GLOBL mxlutz<>(SB), RODATA|NOPTR, $16
DATA mxmaskz<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA mxmaskz<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL mxmaskz<>(SB), RODATA|NOPTR, $16

#define MXPAIR(off, lo, hi, x, z, zs) \
	VMOVD off(lo)(CX*1), x; \
	VPINSRD $1, off(hi)(CX*1), x, x; \
	VPSRLW $4, x, X13; \
	VPUNPCKLBW X13, x, x; \
	VPAND X14, x, x; \
	VPSHUFB x, X15, x; \
	VPMOVSXBD x, z; \
	VCVTDQ2PS z, z; \
	VMULPS zs, z, z

#define MXSTEP(off, xoff) \
	VBROADCASTF64X4 xoff(R8)(CX*8), Z8; \
	MXPAIR(off, AX, BX, X9, Z9, Z24); \
	MXPAIR(off, SI, R9, X10, Z10, Z25); \
	MXPAIR(off, R10, R11, X11, Z11, Z26); \
	MXPAIR(off, R12, R13, X12, Z12, Z27); \
	MUL1x8

// MXSCALE puts the scales of rows 2p and 2p+1 (at off and off+4 from DI) in the low and
// high halves of z.
#define MXSCALE(off, z) \
	VBROADCASTSS off(DI), z; \
	VBROADCASTSS off+4(DI), Z20; \
	VINSERTF64X4 $1, Y20, z, z

// func gemm1x8ZMX(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *byte, sc *float32, n32 int)
TEXT ·gemm1x8ZMX(SB), NOSPLIT, $0-96
	MOVQ acc+0(FP), DI
	VMOVUPS 0(DI), Z0
	VMOVUPS 64(DI), Z1
	VMOVUPS 128(DI), Z2
	VMOVUPS 192(DI), Z3
	MOVQ x+8(FP), R8
	MOVQ w0+16(FP), AX
	MOVQ w1+24(FP), BX
	MOVQ w2+32(FP), SI
	MOVQ w3+40(FP), R9
	MOVQ w4+48(FP), R10
	MOVQ w5+56(FP), R11
	MOVQ w6+64(FP), R12
	MOVQ w7+72(FP), R13
	MOVQ sc+80(FP), DI
	MOVQ n32+88(FP), DX
	SHLQ $4, DX
	XORQ CX, CX
	VMOVDQU mxmaskz<>(SB), X14
	VMOVDQU mxlutz<>(SB), X15
	TESTQ DX, DX
	JEQ   done
loop:
	MXSCALE(0, Z24)
	MXSCALE(8, Z25)
	MXSCALE(16, Z26)
	MXSCALE(24, Z27)
	MXSTEP(0, 0)
	MXSTEP(4, 32)
	MXSTEP(8, 64)
	MXSTEP(12, 96)
	ADDQ $16, CX
	ADDQ $32, DI
	CMPQ CX, DX
	JB   loop
done:
	MOVQ acc+0(FP), DI
	EPILOGUE1x8
	RET

// The bf16 1x8 kernel for CPUs with AVX512BW (gemm1x8ZBF16BW). gemm1x8ZBF16 spends two
// shuffles per 16 weights (VINSERTI128, then VPMOVZXWD across the halves) and a shift, and
// at T = 1 that, not memory, bounded it: 8 rows × 2048 in L1 ran at ~40 GB/s. This one
// loads 32 k (64 bytes, a cache line) of each row at once and builds each step's register
// (8 k of the even row | the same 8 k of the odd row, widened) with one VPERMI2W from the
// two rows' lines, zero-masked so that each bf16 lands in the high half of its dword: that
// is its exact f32 value, so the products and their order are those of gemm1x8ZBF16. It
// also prefetches each row BF16_PREFETCH bytes ahead: a tile's 8 rows are 8 streams 2·K
// bytes apart that restart every 2·K bytes, and at T = 1 the prefetch added 5–10% from L3
// and 10–15% from DRAM (BenchmarkDecodeFFNScaling-style interleaved runs, 256–1024 bytes
// ahead all within noise of each other).
//
// Per 32 k: Z24-Z27 hold the even rows' lines (table 1), the odd rows' are read from memory
// (table 2); Z20-Z23 are the word indices of steps 0-3 (permwidx), copied into Z9-Z12 since
// VPERMI2W overwrites its index. K1 selects the high word of every dword. R14 is the end of
// the 32-k steps; a tail of fewer than 32 k takes gemm1x8ZBF16's step.
#define BF16_PREFETCH 512

// PERMIDX(s, d, a): dword d of step s's index takes word a of the two tables into its
// high half (a < 32: even row; a >= 32: odd row), its low half word 0, which K1 zeroes.
#define PERMIDX(s, d, a) DATA permwidx<>+(64*(s)+4*(d))(SB)/4, $((a)<<16)
#define PERMSTEP(s) \
	PERMIDX(s, 0, 8*(s)+0); PERMIDX(s, 1, 8*(s)+1); PERMIDX(s, 2, 8*(s)+2); PERMIDX(s, 3, 8*(s)+3); \
	PERMIDX(s, 4, 8*(s)+4); PERMIDX(s, 5, 8*(s)+5); PERMIDX(s, 6, 8*(s)+6); PERMIDX(s, 7, 8*(s)+7); \
	PERMIDX(s, 8, 32+8*(s)+0); PERMIDX(s, 9, 32+8*(s)+1); PERMIDX(s, 10, 32+8*(s)+2); PERMIDX(s, 11, 32+8*(s)+3); \
	PERMIDX(s, 12, 32+8*(s)+4); PERMIDX(s, 13, 32+8*(s)+5); PERMIDX(s, 14, 32+8*(s)+6); PERMIDX(s, 15, 32+8*(s)+7)
PERMSTEP(0)
PERMSTEP(1)
PERMSTEP(2)
PERMSTEP(3)
GLOBL permwidx<>(SB), RODATA|NOPTR, $256

// Step s (0-3) of the 32 k from CX: zi holds its indices, xoff = 32·s is its x offset; the
// odd rows' lines are VPERMI2W's memory operand, at CX like the even rows'.
#define PERMSTEP1x8(zi, xoff) \
	VBROADCASTF64X4 xoff(R8)(CX*4), Z8; \
	VMOVDQA64 zi, Z9; \
	VPERMI2W.Z (BX)(CX*2), Z24, K1, Z9; \
	VMOVDQA64 zi, Z10; \
	VPERMI2W.Z (R9)(CX*2), Z25, K1, Z10; \
	VMOVDQA64 zi, Z11; \
	VPERMI2W.Z (R11)(CX*2), Z26, K1, Z11; \
	VMOVDQA64 zi, Z12; \
	VPERMI2W.Z (R13)(CX*2), Z27, K1, Z12; \
	MUL1x8

// func gemm1x8ZBF16BW(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)
TEXT ·gemm1x8ZBF16BW(SB), NOSPLIT, $0-88
	PROLOGUE1x8
	MOVL $0xAAAAAAAA, R14
	KMOVD R14, K1
	VMOVDQU64 permwidx<>+0(SB), Z20
	VMOVDQU64 permwidx<>+64(SB), Z21
	VMOVDQU64 permwidx<>+128(SB), Z22
	VMOVDQU64 permwidx<>+192(SB), Z23
	MOVQ DX, R14
	ANDQ $-32, R14
	CMPQ CX, R14
	JAE  tail
loop32:
	PREFETCHT0 BF16_PREFETCH(AX)(CX*2)
	PREFETCHT0 BF16_PREFETCH(BX)(CX*2)
	PREFETCHT0 BF16_PREFETCH(SI)(CX*2)
	PREFETCHT0 BF16_PREFETCH(R9)(CX*2)
	PREFETCHT0 BF16_PREFETCH(R10)(CX*2)
	PREFETCHT0 BF16_PREFETCH(R11)(CX*2)
	PREFETCHT0 BF16_PREFETCH(R12)(CX*2)
	PREFETCHT0 BF16_PREFETCH(R13)(CX*2)
	VMOVDQU64 (AX)(CX*2), Z24
	VMOVDQU64 (SI)(CX*2), Z25
	VMOVDQU64 (R10)(CX*2), Z26
	VMOVDQU64 (R12)(CX*2), Z27
	PERMSTEP1x8(Z20, 0)
	PERMSTEP1x8(Z21, 32)
	PERMSTEP1x8(Z22, 64)
	PERMSTEP1x8(Z23, 96)
	ADDQ $32, CX
	CMPQ CX, R14
	JB   loop32
tail:
	CMPQ CX, DX
	JAE  done
loop8:
	VBROADCASTF64X4 (R8)(CX*4), Z8
	PAIR_BF16(AX, BX, X9, Y9, Z9)
	PAIR_BF16(SI, R9, X10, Y10, Z10)
	PAIR_BF16(R10, R11, X11, Y11, Z11)
	PAIR_BF16(R12, R13, X12, Y12, Z12)
	MUL1x8
	ADDQ $8, CX
	CMPQ CX, DX
	JB   loop8
done:
	EPILOGUE1x8
	RET
