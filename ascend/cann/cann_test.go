//go:build cann

package cann_test

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/ascendtest"
	_ "github.com/moemesh/moemesh/ascend/cann"
	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// The emulator's HBM is 256 MiB for these tests (read at aclInit), so device OOM is cheap.
func TestMain(m *testing.M) {
	os.Setenv("MOEMESH_EMU_HBM", "256M")
	os.Exit(m.Run())
}

func backend(t *testing.T) ascend.Backend {
	b, err := ascend.Open("cann")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformance runs the whole backend suite over the emulator (or a real device with
// cann_real), with the suite's own tolerances (the same as the cpu backend's).
func TestConformance(t *testing.T) {
	ascendtest.RunAll(t, backend(t))
}

// TestNoLeaks: after cards open, load weights (bf16, I8, MXFP4), work and close 100 times,
// the emulator holds no device or host allocations, executors or tensors, and no worker
// goroutine is left.
func TestNoLeaks(t *testing.T) {
	if !acl.Emulated {
		t.Skip("needs the emulator's counters")
	}
	b := backend(t)
	goroutines := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		c, err := b.OpenCard(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := c.Alloc(ascend.F32, 3, 4)
		w, _ := c.Alloc(ascend.BF16, 2, 4)
		o, _ := c.Alloc(ascend.F32, 3, 2)
		if err := c.GroupedMatmul(o, x, []ascend.Buffer{w}, []int64{3}); err != nil {
			t.Fatal(err)
		}
		h, _ := c.Alloc(ascend.F32, 3, 4)
		if err := c.SwiGLU(o, h, 0); err != nil {
			t.Fatal(err)
		}
		if err := c.ReadF32(o, make([]float32, 6)); err != nil {
			t.Fatal(err)
		}
		if err := c.Free(w); err != nil { // unload an expert, keep the card
			t.Fatal(err)
		}
		quantCycle(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if s := acl.Stats(); s != (acl.EmuStats{}) {
		t.Fatalf("after closing every card the emulator still holds %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after 100 open/close cycles, %d before", n, goroutines)
	}
}

// quantCycle loads an I8 and an MXFP4 expert, runs them (their dequantisation scratch, and
// the MXFP4 decode tables the card keeps until Close) and unloads the I8 one.
func quantCycle(t *testing.T, c ascend.Card) {
	t.Helper()
	x, err := c.Alloc(ascend.F32, 3, 32)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Alloc(ascend.F32, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	ws := make([]ascend.Buffer, 2)
	for i, dt := range []ascend.DType{ascend.I8, ascend.MXFP4} {
		if ws[i], err = c.Alloc(dt, 2, 32); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteF32(ws[i], 0, make([]float32, 64)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.GroupedMatmul(o, x, ws, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadF32(o, make([]float32, 6)); err != nil {
		t.Fatal(err)
	}
	if err := c.Free(ws[0]); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceOutOfMemory: with no budget the device's HBM is the limit. A request past it is
// ErrOutOfMemory and changes nothing; memory held by the allocator's cache is given back
// to the device when a new size needs it.
func TestDeviceOutOfMemory(t *testing.T) {
	if !acl.Emulated {
		t.Skip("sizes assume the emulator's 256 MiB HBM")
	}
	c, err := backend(t).OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Alloc(ascend.BF16, 150<<20) // 300 MiB
	if !errors.Is(err, ascend.ErrOutOfMemory) {
		t.Fatalf("300 MiB on a 256 MiB device: %v, want ErrOutOfMemory", err)
	}
	if mi := c.MemInfo(); mi.Used != 0 {
		t.Fatalf("failed Alloc left MemInfo %+v", mi)
	}
	big, err := c.Alloc(ascend.F32, 50<<20) // 200 MiB
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Free(big); err != nil { // its block stays cached
		t.Fatal(err)
	}
	other, err := c.Alloc(ascend.F32, 25<<20) // 100 MiB: fits only once the cache is released
	if err != nil {
		t.Fatalf("100 MiB after freeing 200 MiB: %v", err)
	}
	if err := c.WriteF32(other, 25<<20-1, []float32{3}); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 25<<20)
	if err := c.ReadF32(other, got); err != nil || got[0] != 0 || got[len(got)-1] != 3 {
		t.Fatalf("read back %v %v (err %v), want 0 … 3", got[0], got[len(got)-1], err)
	}
}
