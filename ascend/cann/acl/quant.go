//go:build cann

package acl

/*
#include "shim.h"
*/
import "C"

// Integer dtypes of quantised weights and of gather indices.
const (
	Int8  DataType = C.ACL_INT8
	UInt8 DataType = C.ACL_UINT8
)

// MulWorkspaceSize is phase 1 of aclnnMul: out = self · other, element-wise with
// broadcasting.
func MulWorkspaceSize(self, other, out Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnMulGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnMulGetWorkspaceSize(self.p, other.p, out.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// Mul is phase 2 of aclnnMul.
func Mul(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnMul", func() C.int { return C.int(C.aclnnMul(workspace.p, C.uint64_t(size), ex.p, s.p)) })
}

// EmbeddingWorkspaceSize is phase 1 of aclnnEmbedding: out[i…, :] = weight[indices[i…], :]
// with INT32 or INT64 indices; out has one dim more than indices.
func EmbeddingWorkspaceSize(weight, indices, out Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnEmbeddingGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnEmbeddingGetWorkspaceSize(weight.p, indices.p, out.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// Embedding is phase 2 of aclnnEmbedding.
func Embedding(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnEmbedding", func() C.int {
		return C.int(C.aclnnEmbedding(workspace.p, C.uint64_t(size), ex.p, s.p))
	})
}

// GroupedMatmulV5AntiquantWorkspaceSize is phase 1 of aclnnGroupedMatmulV5 in its
// weight-only (A16W8) mode: INT8 weights with a per-channel antiquantScale (and an optional
// antiquantOffset: the zero TensorList passes NULL); x and out are FLOAT16 or BFLOAT16, and
// the scales take x's dtype. The other arguments are as in GroupedMatmulV5WorkspaceSize.
func GroupedMatmulV5AntiquantWorkspaceSize(x, weight, antiquantScale, antiquantOffset TensorList, groupList Tensor,
	splitItem, groupType, groupListType int64, out TensorList) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnGroupedMatmulV5GetWorkspaceSize", func() C.int {
		return C.int(C.aclnnGroupedMatmulV5GetWorkspaceSize(x.p, weight.p, nil, nil, nil, antiquantScale.p,
			antiquantOffset.p, nil, groupList.p, nil, nil, nil, C.int64_t(splitItem), C.int64_t(groupType),
			C.int64_t(groupListType), 0, nil, out.p, nil, nil, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}
