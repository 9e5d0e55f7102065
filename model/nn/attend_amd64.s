//go:build amd64 && !purego

#include "textflag.h"

// AVX attention kernels; see attend_kernels.go for the order they implement and
// attend_amd64.go for their Go signatures. Products are rounded by VMULPS before VADDPS
// adds them (no FMA), so results match the Go kernels bit for bit.

// func dots8(acc *[32]float32, q *float32, ks *[8]*float32, n4 int)
//
// acc[4r:4r+4] = the four partial sums of q·ks[r] over the first 4·n4 elements: one XMM
// accumulator per key, lane i holding sum i mod 4. Eight independent chains hide the add
// latency that bounds a single four-sum dot.
TEXT ·dots8(SB), NOSPLIT, $0-32
	MOVQ q+8(FP), SI
	MOVQ ks+16(FP), BX
	MOVQ n4+24(FP), CX
	MOVQ 0(BX), AX
	MOVQ 8(BX), DX
	MOVQ 16(BX), R8
	MOVQ 24(BX), R9
	MOVQ 32(BX), R10
	MOVQ 40(BX), R11
	MOVQ 48(BX), R12
	MOVQ 56(BX), R13
	VXORPS X0, X0, X0
	VXORPS X1, X1, X1
	VXORPS X2, X2, X2
	VXORPS X3, X3, X3
	VXORPS X4, X4, X4
	VXORPS X5, X5, X5
	VXORPS X6, X6, X6
	VXORPS X7, X7, X7
	SHLQ $4, CX // bytes
	XORQ BX, BX
	TESTQ CX, CX
	JEQ dots8done

dots8loop:
	VMOVUPS (SI)(BX*1), X8
	VMULPS (AX)(BX*1), X8, X9
	VADDPS X9, X0, X0
	VMULPS (DX)(BX*1), X8, X10
	VADDPS X10, X1, X1
	VMULPS (R8)(BX*1), X8, X11
	VADDPS X11, X2, X2
	VMULPS (R9)(BX*1), X8, X12
	VADDPS X12, X3, X3
	VMULPS (R10)(BX*1), X8, X9
	VADDPS X9, X4, X4
	VMULPS (R11)(BX*1), X8, X10
	VADDPS X10, X5, X5
	VMULPS (R12)(BX*1), X8, X11
	VADDPS X11, X6, X6
	VMULPS (R13)(BX*1), X8, X12
	VADDPS X12, X7, X7
	ADDQ $16, BX
	CMPQ BX, CX
	JB dots8loop

dots8done:
	MOVQ acc+0(FP), DI
	VMOVUPS X0, 0(DI)
	VMOVUPS X1, 16(DI)
	VMOVUPS X2, 32(DI)
	VMOVUPS X3, 48(DI)
	VMOVUPS X4, 64(DI)
	VMOVUPS X5, 80(DI)
	VMOVUPS X6, 96(DI)
	VMOVUPS X7, 112(DI)
	RET

// func axpy4(y *float32, xs *[4]*float32, a *[4]float32, n8 int)
//
// For the first 8·n8 elements: y = (((y + a0·x0) + a1·x1) + a2·x2) + a3·x3, each product
// rounded before its add: four axpy calls in key order, with one load and store of y.
TEXT ·axpy4(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	MOVQ xs+8(FP), BX
	MOVQ a+16(FP), SI
	MOVQ n8+24(FP), CX
	MOVQ 0(BX), R8
	MOVQ 8(BX), R9
	MOVQ 16(BX), R10
	MOVQ 24(BX), R11
	VBROADCASTSS 0(SI), Y4
	VBROADCASTSS 4(SI), Y5
	VBROADCASTSS 8(SI), Y6
	VBROADCASTSS 12(SI), Y7
	SHLQ $5, CX // bytes
	XORQ AX, AX
	TESTQ CX, CX
	JEQ axpy4done

axpy4loop:
	VMOVUPS (DI)(AX*1), Y0
	VMULPS (R8)(AX*1), Y4, Y1
	VADDPS Y1, Y0, Y0
	VMULPS (R9)(AX*1), Y5, Y2
	VADDPS Y2, Y0, Y0
	VMULPS (R10)(AX*1), Y6, Y3
	VADDPS Y3, Y0, Y0
	VMULPS (R11)(AX*1), Y7, Y1
	VADDPS Y1, Y0, Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ $32, AX
	CMPQ AX, CX
	JB axpy4loop

axpy4done:
	VZEROUPPER
	RET
