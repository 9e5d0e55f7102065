package cpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/ascendtest"
)

func TestConformance(t *testing.T) {
	// The registered backend, and explicit thread counts: 1 (no helpers), 2, and more
	// threads than cores, which changes which goroutine runs each tile.
	b, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("registered", func(t *testing.T) { ascendtest.RunAll(t, b) })
	for _, threads := range []int{1, 2, 5} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			ascendtest.RunAll(t, Backend{Threads: threads})
		})
	}
	if useWide {
		t.Run("avx2 kernels", func(t *testing.T) {
			withoutWide(t)
			ascendtest.RunAll(t, Backend{Threads: 2})
		})
	}
	if useAsm {
		t.Run("portable kernels", func(t *testing.T) {
			withoutAsm(t)
			ascendtest.RunAll(t, Backend{Threads: 2})
		})
	}
}

// withoutWide switches from the AVX-512 kernels to the AVX2 ones for the rest of the test.
func withoutWide(t *testing.T) {
	saved := useWide
	useWide = false
	t.Cleanup(func() { useWide = saved })
}

// withoutAsm switches to the Go kernels for the rest of the test.
func withoutAsm(t *testing.T) {
	saved := useAsm
	useAsm = false
	t.Cleanup(func() { useAsm = saved })
}

func TestOutOfMemoryMessage(t *testing.T) {
	c, err := Backend{}.OpenCard(3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Alloc(ascend.F32, 100); err != nil { // 400 bytes
		t.Fatal(err)
	}
	_, err = c.Alloc(ascend.BF16, 301) // 602 bytes: one element more than the rest
	if !errors.Is(err, ascend.ErrOutOfMemory) {
		t.Fatalf("Alloc past budget: %v", err)
	}
	for _, want := range []string{"602 bytes", "400 of 1000 bytes", "card 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := c.Alloc(ascend.F16, 300); err != nil { // exactly the rest of the budget
		t.Fatalf("Alloc of exactly the remaining budget: %v", err)
	}
	if mi := c.MemInfo(); mi != (ascend.MemInfo{Used: 1000, Total: 1000}) {
		t.Fatalf("MemInfo %+v", mi)
	}

	// More than Go can allocate is out of memory on an unlimited card too, not a panic.
	u, err := Backend{}.OpenCard(4, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Alloc(ascend.F32, 1<<24, 1<<22); !errors.Is(err, ascend.ErrOutOfMemory) {
		t.Fatalf("Alloc of 2⁴⁸ bytes: %v, want ErrOutOfMemory", err)
	}
}

func TestOpenCardArguments(t *testing.T) {
	for _, tc := range []struct {
		id     int
		budget int64
	}{{-1, 0}, {0, -5}} {
		if _, err := (Backend{}).OpenCard(tc.id, tc.budget); !errors.Is(err, ascend.ErrInvalid) {
			t.Errorf("OpenCard(%d, %d): %v, want ErrInvalid", tc.id, tc.budget, err)
		}
	}
}

// TestCloseStopsHelpers: Close returns only after every helper goroutine has exited.
func TestCloseStopsHelpers(t *testing.T) {
	c, err := Backend{Threads: 4}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := c.(*card).pool
	if got := p.live.Load(); got != 3 {
		t.Fatalf("%d helpers running, want 3", got)
	}
	// Run parallel work so the helpers have taken jobs before they are stopped.
	gmmRandom(t, c, ascend.BF16, 64, 300, 200, []int64{30, 34}, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.live.Load(); got != 0 {
		t.Fatalf("%d helpers still running after Close", got)
	}
}

// TestPoolRunsEveryTaskOnce: each task runs exactly once, whatever the helper count.
func TestPoolRunsEveryTaskOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 8} {
		p := newPool(threads)
		for _, n := range []int{0, 1, 7, 1000} {
			hits := make([]int32, n)
			p.parallel(n, false, func(i int) { hits[i]++ }) // distinct i: no two tasks share an element
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("threads %d, n %d: task %d ran %d times", threads, n, i, h)
				}
			}
		}
		p.stop()
		p.stop() // idempotent
		if p.live.Load() != 0 {
			t.Fatalf("threads %d: helpers left after stop", threads)
		}
	}
}

// gmmRandom runs one GroupedMatmul on random data with weights of dtype dt and returns
// out. seed fixes the data, so two calls with the same arguments see the same inputs.
func gmmRandom(t *testing.T, c ascend.Card, dt ascend.DType, m, k, n int, counts []int64, seed uint64) []float32 {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	vals := func(cnt int) []float32 {
		v := make([]float32, cnt)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		return v
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	x, err := c.Alloc(ascend.F32, m, k)
	must(err)
	must(c.WriteF32(x, 0, vals(m*k)))
	ws := make([]ascend.Buffer, len(counts))
	for g := range ws {
		ws[g], err = c.Alloc(dt, n, k)
		must(err)
		must(c.WriteF32(ws[g], 0, vals(n*k)))
	}
	out, err := c.Alloc(ascend.F32, m, n)
	must(err)
	must(c.GroupedMatmul(out, x, ws, counts))
	res := make([]float32, m*n)
	must(c.ReadF32(out, res))
	for _, b := range append(ws, x, out) {
		must(c.Free(b))
	}
	return res
}

// TestKernelsAgree: thread counts and the Go, AVX2 and AVX-512 kernels give identical bits on
// shapes large enough to use several tiles, k blocks and both kernels.
func TestKernelsAgree(t *testing.T) {
	shapes := []struct {
		m, k, n int
		counts  []int64
	}{
		{37, 1100, 101, []int64{13, 0, 22, 1}},
		{1, 2048, 97, []int64{1}},
		{9, 15, 7, []int64{9}},
		{6, 10250, 19, []int64{5, 1}}, // rows long enough for narrower tiles (panelFor)
	}
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16, ascend.F16, ascend.I8} {
		for si, s := range shapes {
			var ref []float32
			run := func(name string, threads int) {
				c, err := Backend{Threads: threads}.OpenCard(0, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				got := gmmRandom(t, c, dt, s.m, s.k, s.n, s.counts, uint64(si))
				if ref == nil {
					ref = got
					return
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
						t.Fatalf("%v shape %d %s: out[%d] = %g, want %g bit for bit", dt, si, name, i, got[i], ref[i])
					}
				}
			}
			run("threads=1", 1)
			run("threads=2", 2)
			run("threads=7", 7)
			// kernelModes restores the kernel selection for the next shape (withoutWide and
			// withoutAsm would keep it switched off until the test ends).
			kernelModes(t, func(mode string) {
				if mode != "default" {
					run(mode+" kernels", 2)
				}
			})
		}
	}
}

// TestPanelFor: tiles narrow only when a 32-column weight panel would not stay in L2.
func TestPanelFor(t *testing.T) {
	for _, tc := range []struct {
		dt   ascend.DType
		k    int
		want int
	}{
		{ascend.F32, 2048, 32},  // 256 KiB
		{ascend.BF16, 2048, 32}, // 128 KiB
		{ascend.F32, 7168, 8},   // 32 and 16 columns are 896 and 448 KiB
		{ascend.BF16, 7168, 16},
		{ascend.F32, 1 << 20, minPanel}, // never below minPanel
		{ascend.F16, 1, panel},
		{ascend.MXFP4, 2048, 32}, // sized as the f32 panel tileMX decodes to
		{ascend.MXFP4, 7168, 8},
		{ascend.I8, 7168, 32}, // 224 KiB of int8
	} {
		if got := panelFor(tc.dt, tc.k); got != tc.want {
			t.Errorf("panelFor(%v, %d) = %d, want %d", tc.dt, tc.k, got, tc.want)
		}
	}
}
