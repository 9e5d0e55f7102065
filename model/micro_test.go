package model

import (
	"context"
	"errors"
	"testing"

	"github.com/moemesh/moemesh/model/nn"
)

func TestSplitRows(t *testing.T) {
	cases := []struct {
		name    string
		counts  []int
		minRows int
		want    int
	}{
		{"off", []int{1, 1, 1, 1}, 0, 0},
		{"one sequence", []int{64}, 2, 0},
		{"too few rows", []int{1, 1, 1}, 4, 0},
		{"decode batch", []int{1, 1, 1, 1}, 4, 2},
		{"odd decode batch", []int{1, 1, 1, 1, 1}, 2, 2},
		{"prefill heavy first", []int{10, 1, 1, 1}, 4, 1},
		{"prefill heavy last", []int{1, 1, 1, 10}, 4, 3},
		{"balanced by rows", []int{3, 6, 1, 5}, 2, 2},
		{"two sequences", []int{2, 7}, 9, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := SplitRows(c.counts, c.minRows); got != c.want {
				t.Fatalf("SplitRows(%v, %d) = %d, want %d", c.counts, c.minRows, got, c.want)
			}
		})
	}
}

func TestParts(t *testing.T) {
	seqs := []string{"a", "b", "c"}
	tokens := [][]int32{{1, 2}, {3}, {4, 5, 6}}
	ctx := context.Background()
	for _, split := range []int{0, 3} {
		ps, err := Parts(ctx, seqs, tokens, 6, split)
		if err != nil || len(ps) != 1 || ps[0].Rows != 6 || len(ps[0].Seqs) != 3 || FirstRow(ps[0].Ctx) != 0 {
			t.Fatalf("split %d: %+v, %v; want one part of 6 rows", split, ps, err)
		}
	}
	ps, err := Parts(ctx, seqs, tokens, 6, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Rows != 3 || ps[1].Rows != 3 || len(ps[0].Seqs) != 2 || ps[1].Seqs[0] != "c" {
		t.Fatalf("split 2: %+v", ps)
	}
	if FirstRow(ps[0].Ctx) != 0 || FirstRow(ps[1].Ctx) != 3 {
		t.Fatalf("first rows %d, %d; want 0, 3", FirstRow(ps[0].Ctx), FirstRow(ps[1].Ctx))
	}
	for _, split := range []int{-1, 4} {
		if _, err := Parts(ctx, seqs, tokens, 6, split); !errors.Is(err, nn.ErrInvalid) {
			t.Fatalf("split %d: err = %v, want nn.ErrInvalid", split, err)
		}
	}
}

// TestRunLayersDense: with no MoE call, every layer of every part is entered then left in
// order, a part's layer li+1 after its layer li; a cancelled context stops before a layer.
func TestRunLayersDense(t *testing.T) {
	var log []string
	enter := func(li, p int) (*MoECall, error) {
		log = append(log, "enter", string(rune('0'+li)), string(rune('a'+p)))
		return nil, nil
	}
	leave := func(p int) error { log = append(log, "leave", string(rune('a'+p))); return nil }
	if err := RunLayers(context.Background(), 2, 2, enter, leave); err != nil {
		t.Fatal(err)
	}
	want := []string{"enter", "0", "a", "leave", "a", "enter", "0", "b", "leave", "b",
		"enter", "1", "a", "leave", "a", "enter", "1", "b", "leave", "b"}
	if len(log) != len(want) {
		t.Fatalf("log %v, want %v", log, want)
	}
	for i := range want {
		if log[i] != want[i] {
			t.Fatalf("log %v, want %v", log, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	log = nil
	if err := RunLayers(ctx, 2, 1, enter, leave); !errors.Is(err, context.Canceled) || len(log) != 0 {
		t.Fatalf("cancelled: err %v, log %v", err, log)
	}
	if err := RunLayers(context.Background(), 1, 3, enter, leave); err == nil {
		t.Fatal("three parts accepted")
	}
	boom := errors.New("boom")
	if err := RunLayers(context.Background(), 2, 1, enter, func(int) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("leave error: %v", err)
	}
}
