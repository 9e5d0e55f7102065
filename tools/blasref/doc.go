// Command blasref is the OpenBLAS reference for `moemesh bench kernels`: it times the same
// SwiGLU expert FFN the cpu backend runs (y = W2·(silu(W1·x) ⊙ (W3·x)), W1 and W3 stacked
// as one [2I, H] matrix, W2 as [H, I], all f32 and stored like nn.Linear) with OpenBLAS
// cblas_sgemm, or cblas_sgemv for one token, at a chosen thread count.
//
// It is a separate module linked against Debian's libopenblas-dev through cgo, so the
// product module never depends on cgo or OpenBLAS: moemesh finds bin/blasref at run time and
// talks to it over stdin/stdout, one JSON object per line (see request and result).
//
// Inputs are generated from fixed seeds with the same generator moemesh uses (see fill), so
// both sides compute on identical numbers and the bench can check that their outputs agree.
//
//	blasref -serve                 # requests on stdin, results on stdout
//	blasref -shapes 2048x1408 -tokens 1,8 -threads 1,2   # one result line per cell
package main
