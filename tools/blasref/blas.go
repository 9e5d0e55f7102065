package main

/*
#cgo pkg-config: openblas
#include <cblas.h>
*/
import "C"

import "unsafe"

// The cgo boundary: thin wrappers over the OpenBLAS calls blasref times. All matrices are
// row-major f32 slices whose sizes the callers have checked.

func setThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

func corename() string { return C.GoString(C.openblas_get_corename()) }

func config() string { return C.GoString(C.openblas_get_config()) }

// sgemmNT computes c[m][n] = a[m][k] · b[n][k]ᵀ (b stored like nn.Linear weights).
func sgemmNT(m, n, k int, a, b, c []float32) {
	C.cblas_sgemm(C.CblasRowMajor, C.CblasNoTrans, C.CblasTrans, C.blasint(m), C.blasint(n), C.blasint(k),
		1, (*C.float)(unsafe.Pointer(&a[0])), C.blasint(k),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(k),
		0, (*C.float)(unsafe.Pointer(&c[0])), C.blasint(n))
}

// sgemv computes y[n] = a[n][k] · x[k].
func sgemv(n, k int, a, x, y []float32) {
	C.cblas_sgemv(C.CblasRowMajor, C.CblasNoTrans, C.blasint(n), C.blasint(k),
		1, (*C.float)(unsafe.Pointer(&a[0])), C.blasint(k),
		(*C.float)(unsafe.Pointer(&x[0])), 1,
		0, (*C.float)(unsafe.Pointer(&y[0])), 1)
}
