package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for tools/blasref (which needs cgo and OpenBLAS):
// with MOEMESH_FAKE_BLASREF set it answers the blasref protocol with a plain-Go FFN on the
// same inputs. "bad" perturbs the check values, "hang" never answers.
func TestMain(m *testing.M) {
	if mode := os.Getenv("MOEMESH_FAKE_BLASREF"); mode != "" {
		fakeBlasRef(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeBlasRef(mode string) {
	sc := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		if mode == "hang" {
			select {} // the bench must give up at its deadline and kill this process
		}
		var req blasRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			enc.Encode(blasResult{Error: err.Error()})
			continue
		}
		if req.Op == "info" {
			enc.Encode(blasResult{Op: "info", Corename: "Fake", Config: "plain Go"})
			continue
		}
		start := time.Now()
		y := naiveFFN(req.H, req.I, req.T)
		res := blasResult{Op: "ffn", Impl: "naive", NsPerOp: float64(time.Since(start).Nanoseconds())}
		for _, j := range checkIndices(req.T, req.H) {
			v := y[j]
			if mode == "bad" {
				v = v*1.5 + 0.1
			}
			res.Check = append(res.Check, v)
		}
		enc.Encode(res)
	}
}

// naiveFFN is the expert FFN on the bench's inputs in float64, rounded at the end.
func naiveFFN(h, inter, t int) []float32 {
	x, w13, w2 := make([]float32, t*h), make([]float32, 2*inter*h), make([]float32, h*inter)
	fillBench(x, seedX, h, inter, 1)
	fillBench(w13, seedW13, h, inter, float32(1/math.Sqrt(float64(h))))
	fillBench(w2, seedW2, h, inter, float32(1/math.Sqrt(float64(inter))))
	y := make([]float32, t*h)
	act := make([]float64, inter)
	for r := range t {
		for j := range act {
			var g, u float64
			for k := range h {
				g += float64(x[r*h+k]) * float64(w13[j*h+k])
				u += float64(x[r*h+k]) * float64(w13[(inter+j)*h+k])
			}
			act[j] = g / (1 + math.Exp(-g)) * u
		}
		for o := range h {
			var s float64
			for j, a := range act {
				s += a * float64(w2[o*inter+j])
			}
			y[r*h+o] = float32(s)
		}
	}
	return y
}

// fakeRefPath writes a script that runs this test binary as blasref in the given mode.
func fakeRefPath(t *testing.T, mode string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "blasref")
	script := fmt.Sprintf("#!/bin/sh\nMOEMESH_FAKE_BLASREF=%s exec %q \"$@\"\n", mode, exe)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBenchKernels(t *testing.T) {
	shapes := [][2]int{{24, 16}}
	for _, tc := range []struct {
		name, mode string
		wantErr    string
		wantLast   string
	}{
		{name: "no reference", wantLast: "kernels: min_ratio_vs_openblas=n/a (T>=8) gemv_bf16_vs_openblas=n/a"},
		{name: "reference", mode: "good", wantLast: "kernels: min_ratio_vs_openblas="},
		{name: "reference disagrees", mode: "bad", wantErr: "disagree"},
		{name: "reference hangs", mode: "hang", wantErr: "no result within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kb := &kernelBench{reps: 2, minTime: time.Millisecond, best: true}
			if tc.mode != "" {
				ref, err := startBlasRef(fakeRefPath(t, tc.mode), 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer ref.Close()
				kb.ref = ref
			}
			var out bytes.Buffer
			err := kb.run(context.Background(), &out, shapes, []int{1, 8}, []int{1, 2})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q; output:\n%s", err, tc.wantErr, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; output:\n%s", err, out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, tc.wantLast) {
				t.Fatalf("last line %q, want prefix %q", last, tc.wantLast)
			}
			// header, column names, one row per T and thread count, summary
			if len(lines) != 2+2*2+1 {
				t.Fatalf("%d lines, want 7:\n%s", len(lines), out.String())
			}
			if tc.mode == "good" {
				var r, g float64
				if _, err := fmt.Sscanf(last, "kernels: min_ratio_vs_openblas=%g (T>=8) gemv_bf16_vs_openblas=%g", &r, &g); err != nil || r <= 0 || g <= 0 {
					t.Fatalf("summary %q: ratios %v %v (%v)", last, r, g, err)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	rows := []kernelRow{
		{t: 1, rf32: 0.5, rbf16: 1.7},
		{t: 1, rf32: 0.6, rbf16: 1.6},
		{t: 8, rf32: 1.2, rbf16: 0.3},
		{t: 64, rf32: 0.9, rbf16: 0.2},
		{t: 256, rf32: 1.1},
	}
	for _, tc := range []struct {
		name     string
		rows     []kernelRow
		min, gmv float64
	}{
		{"all", rows, 0.9, 1.6},
		{"no T>=8", rows[:2], 0, 1.6},
		{"no reference", []kernelRow{{t: 1}, {t: 8}}, 0, 0},
	} {
		m, g := summarize(tc.rows)
		if m != tc.min || g != tc.gmv {
			t.Errorf("%s: summarize = %v, %v; want %v, %v", tc.name, m, g, tc.min, tc.gmv)
		}
	}
}

func TestBenchKernelsParse(t *testing.T) {
	for _, tc := range []struct {
		shapes, counts string
		ok             bool
	}{
		{"2048x1408,7168x2048", "1,8,64,256", true},
		{" 16x8 ", " 1 ", true},
		{"2048", "1", false},
		{"0x8", "1", false},
		{"16x8", "0", false},
		{"16x8", "1,,2", false},
		{"16x8", "99999", false},
		{"16x-8", "1", false},
	} {
		_, err1 := parseShapes(tc.shapes)
		_, err2 := parseCounts(tc.counts)
		if ok := err1 == nil && err2 == nil; ok != tc.ok {
			t.Errorf("parse %q %q: errors %v, %v; want ok=%v", tc.shapes, tc.counts, err1, err2, tc.ok)
		}
	}
	if got, _ := parseShapes("2048x1408,7168x2048"); len(got) != 2 || got[1] != [2]int{7168, 2048} {
		t.Errorf("parseShapes = %v", got)
	}
}
