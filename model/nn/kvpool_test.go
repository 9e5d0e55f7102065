package nn

import (
	"errors"
	"testing"
)

// A paged cache filled in uneven appends across many blocks gives Attend the same bits as
// one contiguous buffer of the same rows.
func TestPagedCacheEqualsContiguous(t *testing.T) {
	cfg := AttnConfig{Heads: 4, KVHeads: 2, QKDim: 8, VDim: 8, Scale: 0.35}
	const T = 53
	c := attnCase{cfg: cfg, start: 0, T: T}
	q, k, v := attnInputs(c, 21)
	pool, err := NewKVPool(0, 4)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewKVCacheIn(pool, 1, T, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	l := cache.Layer(0)
	for at, n := 0, 1; at < T; at, n = at+n, n%7+1 {
		n = min(n, T-at)
		if err := l.Append(k[at*16:(at+n)*16], v[at*16:(at+n)*16], n); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(l.Keys().Blocks); got != (T+3)/4 {
		t.Fatalf("%d blocks for %d rows of 4", got, T)
	}
	paged := make([]float32, T*cfg.Heads*cfg.VDim)
	if err := Attend(paged, q, l.Keys(), l.Values(), 0, cfg); err != nil {
		t.Fatal(err)
	}
	want := attend(t, q, k, v, 0, cfg)
	if !equalBits(paged, want) {
		t.Fatal("paged attention differs from contiguous")
	}
}

func TestKVPoolBudget(t *testing.T) {
	pool, err := NewKVPool(0, 8)
	if err != nil {
		t.Fatal(err)
	}
	// Two layers, 20 rows → 3 blocks of 8 rows per layer, 4+4 values a row, 4 bytes each.
	per := pool.CacheBytes(2, 20, 4, 4)
	if per != 2*3*8*8*4 {
		t.Fatalf("cache bytes %d", per)
	}
	pool, _ = NewKVPool(2*per+per/2, 8)
	a, err := NewKVCacheIn(pool, 2, 20, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKVCacheIn(pool, 2, 20, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKVCacheIn(pool, 2, 20, 4, 4); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("third cache over budget: %v", err)
	}
	if st := pool.Stats(); st.Reserved != 2*per || st.InUse != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Memory in use follows rows held, block by block.
	row := []float32{1, 2, 3, 4}
	for i := range 9 {
		if err := a.Layer(0).Append(row, row, 1); err != nil {
			t.Fatal(err)
		}
		wantBlocks := int64(i/8 + 1)
		if got := pool.Stats().InUse; got != wantBlocks*2*8*4*4 {
			t.Fatalf("after %d rows in use %d, want %d blocks", i+1, got, wantBlocks)
		}
	}
	if err := a.Layer(1).Append(make([]float32, 21*4), make([]float32, 21*4), 21); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("append past capacity: %v", err)
	}
	a.Close()
	a.Close()
	if st := pool.Stats(); st.Reserved != per || st.InUse != 0 {
		t.Fatalf("after close %+v", st)
	}
	c, err := NewKVCacheIn(pool, 2, 20, 4, 4)
	if err != nil {
		t.Fatalf("closing gave nothing back: %v", err)
	}
	// Reset keeps the reservation but returns the blocks; a reused block holds new rows.
	if err := c.Layer(0).Append([]float32{9, 9, 9, 9}, row, 1); err != nil {
		t.Fatal(err)
	}
	if got := c.Layer(0).Keys().Row(0); got[0] != 9 {
		t.Fatalf("row %v", got)
	}
	c.Reset()
	if st := pool.Stats(); st.InUse != 0 || st.Reserved != 2*per {
		t.Fatalf("after reset %+v", st)
	}
	b.Close()
	c.Close()
	if st := pool.Stats(); st.InUse != 0 || st.Reserved != 0 {
		t.Fatalf("all closed %+v", st)
	}
	if _, err := NewKVPool(-1, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative budget: %v", err)
	}
}
