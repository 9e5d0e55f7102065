//go:build cann && !cann_real

package acl_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// The emulator reads its HBM size at aclInit: 64 MiB, so exhaustion is cheap to test.
const hbm = 64 << 20

func TestMain(m *testing.M) {
	os.Setenv("MOEMESH_EMU_HBM", "64M")
	runtime.LockOSThread()
	if err := acl.Init(""); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

// bind locks the test goroutine to its thread and gives the thread a context and stream.
func bind(t *testing.T) acl.Stream {
	t.Helper()
	runtime.LockOSThread()
	if err := acl.SetDevice(0); err != nil {
		t.Fatal(err)
	}
	ctx, err := acl.CreateContext(0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := acl.CreateStream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		must(t, s.Destroy())
		must(t, ctx.Destroy())
		must(t, acl.ResetDevice(0))
		runtime.UnlockOSThread()
	})
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// code returns the ACL status of err (0 for nil) and checks an error carries a message.
func code(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var e *acl.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *acl.Error", err)
	}
	if e.Msg == "" {
		t.Errorf("%v: no aclGetRecentErrMsg text", err)
	}
	return e.Code
}

func wantCode(t *testing.T, what string, err error, want int) {
	t.Helper()
	if got := code(t, err); got != want {
		t.Errorf("%s: status %d (%v), want %d", what, got, err, want)
	}
}

func devAlloc(t *testing.T, n int) acl.Ptr {
	t.Helper()
	p, err := acl.Malloc(n, acl.HugeFirst)
	must(t, err)
	t.Cleanup(func() { must(t, acl.Free(p)) })
	return p
}

func hostAlloc(t *testing.T, n int) acl.Ptr {
	t.Helper()
	p, err := acl.MallocHost(n)
	must(t, err)
	t.Cleanup(func() { must(t, acl.FreeHost(p)) })
	return p
}

// readDev copies n bytes of device memory synchronously, without syncing any stream.
func readDev(t *testing.T, p acl.Ptr, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	must(t, acl.Memcpy(acl.GoBytes(b), n, p, n, acl.DeviceToHost))
	return b
}

func f32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func putF32s(b []byte, v []float32) {
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
}

func TestInitTwiceAndNoContext(t *testing.T) {
	wantCode(t, "second aclInit", acl.Init(""), acl.ErrRepeatInitialize)
	done := make(chan error)
	go func() { // a fresh thread with no device or context set
		runtime.LockOSThread()
		_, err := acl.Malloc(64, acl.HugeFirst)
		done <- err
	}()
	wantCode(t, "aclrtMalloc without a context", <-done, acl.ErrRTContextNull)
}

// TestMissingSyncReadsPoison: an async copy and a kernel only run when the stream is
// synchronised; reading before that sees the allocation's poison (0xFF, a NaN).
func TestMissingSyncReadsPoison(t *testing.T) {
	s := bind(t)
	const n = 256
	dev := devAlloc(t, n)
	host := hostAlloc(t, n)
	for i := range acl.HostSlice(host, n) {
		acl.HostSlice(host, n)[i] = byte(i)
	}
	must(t, acl.MemcpyAsync(dev, n, host, n, acl.HostToDevice, s))
	if got := readDev(t, dev, n); !bytes.Equal(got, bytes.Repeat([]byte{0xFF}, n)) {
		t.Fatalf("before sync the device holds %v, want poison", got[:8])
	}
	must(t, s.Synchronize())
	if got := readDev(t, dev, n); !bytes.Equal(got, acl.HostSlice(host, n)) {
		t.Fatalf("after sync the device holds %v, want the copied bytes", got[:8])
	}

	// A kernel: SwiGlu on [1, 2] → [1, 1].
	x := devAlloc(t, 64)
	out := devAlloc(t, 64)
	putF32s(acl.HostSlice(host, 8), []float32{1, 2})
	must(t, acl.MemcpyAsync(x, 64, host, 8, acl.HostToDevice, s))
	xt, err := acl.CreateTensor([]int64{1, 2}, []int64{2, 1}, 0, acl.Float, acl.FormatND, nil, x)
	must(t, err)
	defer xt.Destroy()
	ot, err := acl.CreateTensor([]int64{1, 1}, []int64{1, 1}, 0, acl.Float, acl.FormatND, nil, out)
	must(t, err)
	defer ot.Destroy()
	ws, ex, err := acl.SwiGluWorkspaceSize(xt, -1, ot)
	must(t, err)
	must(t, acl.SwiGlu(acl.Ptr{}, ws, ex, s))
	if v := f32s(readDev(t, out, 4))[0]; !math.IsNaN(float64(v)) {
		t.Fatalf("kernel output read before sync = %g, want poison (NaN)", v)
	}
	must(t, s.Synchronize())
	if v := f32s(readDev(t, out, 4))[0]; math.Abs(float64(v)-1.4621171) > 1e-6 {
		t.Fatalf("silu(1)·2 after sync = %g", v)
	}
}

// TestEventOrdering: work on stream b that waits for an event recorded on stream a sees
// a's earlier work; without the wait it does not.
func TestEventOrdering(t *testing.T) {
	a := bind(t)
	b, err := acl.CreateStream()
	must(t, err)
	defer b.Destroy()
	ev, err := acl.CreateEvent()
	must(t, err)
	defer ev.Destroy()
	host := hostAlloc(t, 64)
	copy(acl.HostSlice(host, 64), bytes.Repeat([]byte{7}, 64))
	for _, wait := range []bool{true, false} {
		src, dst := devAlloc(t, 64), devAlloc(t, 64)
		must(t, acl.MemcpyAsync(src, 64, host, 64, acl.HostToDevice, a))
		must(t, ev.Record(a))
		if wait {
			must(t, b.Wait(ev))
		}
		must(t, acl.MemcpyAsync(dst, 64, src, 64, acl.DeviceToDevice, b))
		must(t, b.Synchronize())
		got := readDev(t, dst, 64)
		if wait && got[0] != 7 {
			t.Errorf("with StreamWaitEvent the copy on b saw %d, want 7", got[0])
		}
		if !wait && got[0] != 0xFF {
			t.Errorf("without StreamWaitEvent the copy on b saw %d, want poison (a never synced)", got[0])
		}
		must(t, a.Synchronize())
	}
}

func TestExecutorReuse(t *testing.T) {
	s := bind(t)
	x, out := devAlloc(t, 64), devAlloc(t, 64)
	xt, err := acl.CreateTensor([]int64{1, 2}, []int64{2, 1}, 0, acl.Float, acl.FormatND, nil, x)
	must(t, err)
	defer xt.Destroy()
	ot, err := acl.CreateTensor([]int64{1, 1}, []int64{1, 1}, 0, acl.Float, acl.FormatND, nil, out)
	must(t, err)
	defer ot.Destroy()
	ws, ex, err := acl.SwiGluWorkspaceSize(xt, -1, ot)
	must(t, err)
	must(t, acl.SwiGlu(acl.Ptr{}, ws, ex, s))
	err = acl.SwiGlu(acl.Ptr{}, ws, ex, s)
	wantCode(t, "second launch of one executor", err, acl.ErrNNParamInvalid)
	if err != nil && !strings.Contains(err.Error(), "executor") {
		t.Errorf("reuse error %q does not name the executor", err)
	}
	must(t, s.Synchronize())

	// A repeatable executor runs as often as asked, until destroyed.
	before := acl.Stats().Executors
	_, rex, err := acl.SwiGluWorkspaceSize(xt, -1, ot)
	must(t, err)
	must(t, rex.SetRepeatable())
	for range 3 {
		must(t, acl.SwiGlu(acl.Ptr{}, 0, rex, s))
	}
	must(t, s.Synchronize())
	must(t, rex.Destroy())
	wantCode(t, "launch after aclDestroyAclOpExecutor", acl.SwiGlu(acl.Ptr{}, 0, rex, s), acl.ErrNNParamInvalid)
	wantCode(t, "SetRepeatable on a consumed executor", ex.SetRepeatable(), acl.ErrNNParamInvalid)
	if after := acl.Stats().Executors; after != before {
		t.Errorf("live executors %d after destroy, %d before", after, before)
	}
	// Phase 1 validates without touching data: an odd last dim is rejected.
	bad, err := acl.CreateTensor([]int64{1, 3}, []int64{3, 1}, 0, acl.Float, acl.FormatND, nil, x)
	must(t, err)
	defer bad.Destroy()
	_, _, err = acl.SwiGluWorkspaceSize(bad, -1, ot)
	wantCode(t, "SwiGlu with odd dim", err, acl.ErrNNParamInvalid)
}

func TestAsyncCopyRules(t *testing.T) {
	s := bind(t)
	dev := devAlloc(t, 256)
	host := hostAlloc(t, 256)
	goMem := make([]byte, 256)
	wantCode(t, "async H2D from Go (unpinned) memory",
		acl.MemcpyAsync(dev, 256, acl.GoBytes(goMem), 256, acl.HostToDevice, s), acl.ErrInvalidParam)
	wantCode(t, "async D2H into Go (unpinned) memory",
		acl.MemcpyAsync(acl.GoBytes(goMem), 256, dev, 256, acl.DeviceToHost, s), acl.ErrInvalidParam)
	wantCode(t, "async copy to a device address 32 bytes off alignment",
		acl.MemcpyAsync(dev.Add(32), 128, host, 64, acl.HostToDevice, s), acl.ErrRTAddrUnaligned)
	wantCode(t, "async host-to-host", acl.MemcpyAsync(host.Add(128), 64, host, 64, acl.HostToHost, s), acl.ErrRTFeatureNotSupp)
	wantCode(t, "kind says H2D but src is device memory",
		acl.MemcpyAsync(dev, 64, dev.Add(64), 64, acl.HostToDevice, s), acl.ErrInvalidParam)
	wantCode(t, "count past destMax", acl.MemcpyAsync(dev, 32, host, 64, acl.HostToDevice, s), acl.ErrInvalidParam)
	must(t, acl.MemcpyAsync(dev, 256, host, 256, acl.DefaultKind, s)) // direction inferred
	must(t, s.Synchronize())
}

func TestHBMExhaustion(t *testing.T) {
	bind(t)
	free0, total, err := acl.MemInfo()
	must(t, err)
	if total != hbm {
		t.Fatalf("HBM total %d, want %d (MOEMESH_EMU_HBM)", total, hbm)
	}
	big, err := acl.Malloc(48<<20, acl.HugeFirst)
	must(t, err)
	free1, _, err := acl.MemInfo()
	must(t, err)
	// Capacity is the size rounded up to 32 bytes plus 32.
	if want := free0 - (48<<20 + 32); free1 != want {
		t.Errorf("free after a 48 MiB alloc: %d, want %d", free1, want)
	}
	_, err = acl.Malloc(32<<20, acl.HugeFirst)
	wantCode(t, "alloc past HBM", err, acl.ErrRTMemoryAlloc)
	var e *acl.Error
	if errors.As(err, &e) && (!e.IsOutOfMemory() || !strings.Contains(e.Msg, "out of memory")) {
		t.Errorf("OOM error %+v", e)
	}
	_, err = acl.Malloc(0, acl.HugeFirst)
	wantCode(t, "zero-size alloc", err, acl.ErrInvalidParam)
	must(t, acl.Free(big))
	wantCode(t, "double free", acl.Free(big), acl.ErrRTMemoryFree)
	if f, _, _ := acl.MemInfo(); f != free0 {
		t.Errorf("free after Free: %d, want %d", f, free0)
	}
}

// TestGroupList: counts cover rows 0-1 of 3; row 2 keeps its poison. A group list summing
// past M fails when the stream runs it.
func TestGroupList(t *testing.T) {
	s := bind(t)
	const m, k, n = 3, 2, 2
	x, w0, w1, out, gl := devAlloc(t, 64), devAlloc(t, 64), devAlloc(t, 64), devAlloc(t, 64), devAlloc(t, 64)
	host := hostAlloc(t, 64)
	up := func(dst acl.Ptr, vals []float32) {
		putF32s(acl.HostSlice(host, 4*len(vals)), vals)
		must(t, acl.MemcpyAsync(dst, 64, host, 4*len(vals), acl.HostToDevice, s))
		must(t, s.Synchronize())
	}
	up(x, []float32{1, 2, 3, 4, 5, 6})
	up(w0, []float32{1, 0, 0, 1}) // identity [K, N]
	up(w1, []float32{0, 1, 1, 0}) // swap
	setGL := func(counts ...int64) {
		for i, c := range counts {
			binary.LittleEndian.PutUint64(acl.HostSlice(host, 16)[8*i:], uint64(c))
		}
		must(t, acl.MemcpyAsync(gl, 64, host, 16, acl.HostToDevice, s))
		must(t, s.Synchronize())
	}
	run := func() error {
		mk := func(p acl.Ptr, r, c int64, dt acl.DataType) acl.Tensor {
			tt, err := acl.CreateTensor([]int64{r, c}, []int64{c, 1}, 0, dt, acl.FormatND, nil, p)
			must(t, err)
			return tt
		}
		xl, err := acl.CreateTensorList(mk(x, m, k, acl.Float))
		must(t, err)
		defer xl.Destroy()
		wl, err := acl.CreateTensorList(mk(w0, k, n, acl.Float), mk(w1, k, n, acl.Float))
		must(t, err)
		defer wl.Destroy()
		ol, err := acl.CreateTensorList(mk(out, m, n, acl.Float))
		must(t, err)
		defer ol.Destroy()
		glt, err := acl.CreateTensor([]int64{2}, []int64{1}, 0, acl.Int64, acl.FormatND, nil, gl)
		must(t, err)
		defer glt.Destroy()
		size, ex, err := acl.GroupedMatmulV5WorkspaceSize(xl, wl, glt, 3, 0, 1, 0, ol)
		must(t, err)
		if size == 0 {
			t.Error("GroupedMatmulV5 asks for no workspace; the emulator should make callers allocate one")
		}
		wantCode(t, "launch with a short workspace", acl.GroupedMatmulV5(acl.Ptr{}, 0, ex, s), acl.ErrNNParamInvalid)
		ws, err := acl.Malloc(int(size), acl.HugeFirst)
		must(t, err)
		defer acl.Free(ws)
		must(t, acl.GroupedMatmulV5(ws, size, ex, s))
		return s.Synchronize()
	}
	// FRACTAL_NZ weights are not emulated: phase 1 refuses them.
	nzx, err := acl.CreateTensor([]int64{m, k}, []int64{k, 1}, 0, acl.Float, acl.FormatND, nil, x)
	must(t, err)
	nzw, err := acl.CreateTensor([]int64{k, n}, []int64{n, 1}, 0, acl.Float, acl.FormatFractalNZ, nil, w0)
	must(t, err)
	nzo, err := acl.CreateTensor([]int64{m, n}, []int64{n, 1}, 0, acl.Float, acl.FormatND, nil, out)
	must(t, err)
	nxl, _ := acl.CreateTensorList(nzx)
	nwl, _ := acl.CreateTensorList(nzw)
	nol, _ := acl.CreateTensorList(nzo)
	_, _, err = acl.GroupedMatmulV5WorkspaceSize(nxl, nwl, acl.Tensor{}, 3, 0, 1, 0, nol)
	wantCode(t, "FRACTAL_NZ weight", err, acl.ErrNNParamInvalid)
	for _, l := range []acl.TensorList{nxl, nwl, nol} {
		must(t, l.Destroy())
	}

	setGL(1, 1)
	must(t, run())
	got := f32s(readDev(t, out, 4*m*n))
	if got[0] != 1 || got[1] != 2 || got[2] != 4 || got[3] != 3 {
		t.Errorf("covered rows %v, want [1 2] and [4 3]", got[:4])
	}
	if !math.IsNaN(float64(got[4])) || !math.IsNaN(float64(got[5])) {
		t.Errorf("row past the group list = %v, want untouched poison", got[4:])
	}
	setGL(2, 2)
	wantCode(t, "group list summing past M", run(), acl.ErrRTAICoreException)
}
