//go:build cann

package acl

/*
#include "shim.h"
*/
import "C"

// Bool is ACL_BOOL (one byte per element), the dtype of MoeGatingTopKSoftmax's finished.
const Bool DataType = C.ACL_BOOL

// CubeMathType is aclnnMatmul's precision mode of the cube unit.
type CubeMathType int8

const (
	KeepDType              CubeMathType = 0 // compute in the inputs' dtype (f32 stays f32)
	AllowFP32DownPrecision CubeMathType = 1
	UseFP16                CubeMathType = 2
	UseHF32                CubeMathType = 3
)

// MatmulWorkspaceSize is phase 1 of aclnnMatmul: out [M, N] = self [M, K] · mat2 [K, N].
func MatmulWorkspaceSize(self, mat2, out Tensor, mode CubeMathType) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnMatmulGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnMatmulGetWorkspaceSize(self.p, mat2.p, out.p, C.int8_t(mode), &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// Matmul is phase 2 of aclnnMatmul.
func Matmul(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnMatmul", func() C.int { return C.int(C.aclnnMatmul(workspace.p, C.uint64_t(size), ex.p, s.p)) })
}

// RmsNormWorkspaceSize is phase 1 of aclnnRmsNorm: y = x·rstd·gamma with
// rstd = 1/sqrt(mean(x²) + eps) over gamma's (trailing) dims. rstd is a mandatory FLOAT
// output shaped like x with gamma's dims set to 1.
func RmsNormWorkspaceSize(x, gamma Tensor, eps float64, y, rstd Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnRmsNormGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnRmsNormGetWorkspaceSize(x.p, gamma.p, C.double(eps), y.p, rstd.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// RmsNorm is phase 2 of aclnnRmsNorm.
func RmsNorm(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnRmsNorm", func() C.int { return C.int(C.aclnnRmsNorm(workspace.p, C.uint64_t(size), ex.p, s.p)) })
}

// MoeGatingTopKSoftmaxWorkspaceSize is phase 1 of aclnnMoeGatingTopKSoftmax: per row of
// x [N, E], softmax then the top k (not renormalised) into y [N, k] (x's dtype), their
// expert ids into idx [N, k] INT32 and j·N+i into rowIdx [N, k] INT32. finished (BOOL [N])
// may be the nil Tensor.
func MoeGatingTopKSoftmaxWorkspaceSize(x, finished Tensor, k int64, y, idx, rowIdx Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnMoeGatingTopKSoftmaxGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnMoeGatingTopKSoftmaxGetWorkspaceSize(x.p, finished.p, C.int64_t(k), y.p, idx.p, rowIdx.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// MoeGatingTopKSoftmax is phase 2 of aclnnMoeGatingTopKSoftmax.
func MoeGatingTopKSoftmax(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnMoeGatingTopKSoftmax", func() C.int {
		return C.int(C.aclnnMoeGatingTopKSoftmax(workspace.p, C.uint64_t(size), ex.p, s.p))
	})
}
