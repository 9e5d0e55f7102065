//go:build cann && !cann_real

package acl_test

import (
	"encoding/binary"
	"testing"

	"github.com/moemesh/moemesh/ascend/cann/acl"
)

func tensor(t *testing.T, dims []int64, dt acl.DataType, p acl.Ptr) acl.Tensor {
	t.Helper()
	x, err := acl.CreateTensor(dims, acl.Contiguous(dims), 0, dt, acl.FormatND, nil, p)
	must(t, err)
	t.Cleanup(func() { must(t, x.Destroy()) })
	return x
}

// TestDenseOpsContract: the two-phase rules hold for aclnnMatmul, aclnnRmsNorm and
// aclnnMoeGatingTopKSoftmax as for the expert ops: phase 1 rejects bad shapes and dtypes
// with 161002 (161001 for a missing required tensor) without touching data, Matmul asks
// for a workspace and refuses a smaller one, an executor runs once, and results appear
// only at the stream sync.
func TestDenseOpsContract(t *testing.T) {
	s := bind(t)
	x, w, y := devAlloc(t, 64), devAlloc(t, 64), devAlloc(t, 64)
	// x [2, 2] = [[1, 2], [3, 4]], w [2, 2] = identity → y = x.
	b := make([]byte, 16)
	putF32s(b, []float32{1, 2, 3, 4})
	must(t, acl.Memcpy(x, 64, acl.GoBytes(b), 16, acl.HostToDevice))
	putF32s(b, []float32{1, 0, 0, 1})
	must(t, acl.Memcpy(w, 64, acl.GoBytes(b), 16, acl.HostToDevice))
	xt := tensor(t, []int64{2, 2}, acl.Float, x)
	wt := tensor(t, []int64{2, 2}, acl.Float, w)
	yt := tensor(t, []int64{2, 2}, acl.Float, y)
	ws, ex, err := acl.MatmulWorkspaceSize(xt, wt, yt, acl.KeepDType)
	must(t, err)
	if ws == 0 {
		t.Fatal("aclnnMatmul asks for no workspace: callers' workspace path goes untested")
	}
	wantCode(t, "Matmul with a short workspace", acl.Matmul(devAlloc(t, 64), 64, ex, s), acl.ErrNNParamInvalid)
	wsp := devAlloc(t, int(ws))
	must(t, acl.Matmul(wsp, ws, ex, s))
	if got := f32s(readDev(t, y, 16)); got[0] == 1 {
		t.Errorf("Matmul's result visible before the stream sync: %v", got)
	}
	wantCode(t, "second launch of a Matmul executor", acl.Matmul(wsp, ws, ex, s), acl.ErrNNParamInvalid)
	must(t, s.Synchronize())
	if got := f32s(readDev(t, y, 16)); got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 {
		t.Errorf("x·I = %v, want [1 2 3 4]", got)
	}

	bad3 := tensor(t, []int64{3, 2}, acl.Float, w)
	_, _, err = acl.MatmulWorkspaceSize(xt, bad3, yt, acl.KeepDType)
	wantCode(t, "Matmul with K mismatch", err, acl.ErrNNParamInvalid)
	_, _, err = acl.MatmulWorkspaceSize(xt, wt, yt, 7)
	wantCode(t, "Matmul with cubeMathType 7", err, acl.ErrNNParamInvalid)
	_, _, err = acl.MatmulWorkspaceSize(xt, tensor(t, []int64{2, 2}, acl.BF16, w), yt, acl.KeepDType)
	wantCode(t, "Matmul with mixed dtypes", err, acl.ErrNNParamInvalid)

	// RmsNorm: rstd is mandatory and must be FLOAT [rows, 1].
	g := tensor(t, []int64{2}, acl.Float, w)
	rs := devAlloc(t, 64)
	_, _, err = acl.RmsNormWorkspaceSize(xt, g, 1e-6, yt, acl.Tensor{})
	wantCode(t, "RmsNorm without rstdOut", err, acl.ErrNNParamNullptr)
	_, _, err = acl.RmsNormWorkspaceSize(xt, g, 1e-6, yt, tensor(t, []int64{2, 1}, acl.Float16, rs))
	wantCode(t, "RmsNorm with f16 rstd", err, acl.ErrNNParamInvalid)
	_, _, err = acl.RmsNormWorkspaceSize(xt, g, 1e-6, yt, tensor(t, []int64{2}, acl.Float, rs))
	wantCode(t, "RmsNorm with rstd [2]", err, acl.ErrNNParamInvalid)
	rt := tensor(t, []int64{2, 1}, acl.Float, rs)
	_, _, err = acl.RmsNormWorkspaceSize(xt, tensor(t, []int64{3}, acl.Float, w), 1e-6, yt, rt)
	wantCode(t, "RmsNorm with gamma [3] for x [2, 2]", err, acl.ErrNNParamInvalid)
	ws, ex, err = acl.RmsNormWorkspaceSize(xt, g, 0, yt, rt)
	must(t, err)
	must(t, acl.RmsNorm(acl.Ptr{}, ws, ex, s))
	must(t, s.Synchronize())
	// gamma = w's first two values [1, 0]: row [1, 2] → [1/sqrt(2.5), 0].
	if got := f32s(readDev(t, y, 8)); got[1] != 0 || got[0] < 0.632 || got[0] > 0.6325 {
		t.Errorf("RmsNorm row 0 = %v, want [0.6325 0]", got)
	}

	// MoeGatingTopKSoftmax: INT32 ids, outputs [N, k], k within the experts.
	yk := tensor(t, []int64{2, 1}, acl.Float, y)
	idx, row := devAlloc(t, 64), devAlloc(t, 64)
	it := tensor(t, []int64{2, 1}, acl.Int32, idx)
	rt2 := tensor(t, []int64{2, 1}, acl.Int32, row)
	_, _, err = acl.MoeGatingTopKSoftmaxWorkspaceSize(xt, acl.Tensor{}, 3, yk, it, rt2)
	wantCode(t, "Gating with k 3 of 2 experts", err, acl.ErrNNParamInvalid)
	_, _, err = acl.MoeGatingTopKSoftmaxWorkspaceSize(xt, acl.Tensor{}, 1, yk, tensor(t, []int64{2, 1}, acl.Int64, idx), rt2)
	wantCode(t, "Gating with INT64 expert ids", err, acl.ErrNNParamInvalid)
	fin := devAlloc(t, 64)
	must(t, acl.Memcpy(fin, 64, acl.GoBytes([]byte{0, 1}), 2, acl.HostToDevice))
	ws, ex, err = acl.MoeGatingTopKSoftmaxWorkspaceSize(xt, tensor(t, []int64{2}, acl.Bool, fin), 1, yk, it, rt2)
	must(t, err)
	must(t, acl.MoeGatingTopKSoftmax(devAlloc(t, max(int(ws), 1)), ws, ex, s))
	must(t, s.Synchronize())
	ids, rows := readDev(t, idx, 8), readDev(t, row, 8)
	i32 := func(b []byte, i int) int32 { return int32(binary.LittleEndian.Uint32(b[4*i:])) }
	// Row 0 [1, 2] picks expert 1; row 1 is finished: expert id E = 2. Row ids j·N+i.
	if i32(ids, 0) != 1 || i32(ids, 1) != 2 || i32(rows, 0) != 0 || i32(rows, 1) != 1 {
		t.Errorf("expert ids %d %d, row ids %d %d; want 1 2, 0 1", i32(ids, 0), i32(ids, 1), i32(rows, 0), i32(rows, 1))
	}
}
