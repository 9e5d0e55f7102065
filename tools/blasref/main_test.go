package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// naive is the expert FFN in float64 on e's inputs, for the first t tokens.
func naive(e *expert, t int) []float64 {
	h, in := e.h, e.i
	y := make([]float64, t*h)
	act := make([]float64, in)
	for r := range t {
		for j := range act {
			var g, u float64
			for k := range h {
				g += float64(e.x[r*h+k]) * float64(e.w13[j*h+k])
				u += float64(e.x[r*h+k]) * float64(e.w13[(in+j)*h+k])
			}
			act[j] = g / (1 + math.Exp(-g)) * u
		}
		for o := range h {
			var s float64
			for j, a := range act {
				s += a * float64(e.w2[o*in+j])
			}
			y[r*h+o] = s
		}
	}
	return y
}

// TestFFNMatchesNaive: sgemm and sgemv are called with the right layouts (a transposed
// operand would give different numbers, not an error).
func TestFFNMatchesNaive(t *testing.T) {
	for _, tc := range []struct {
		h, i, t int
		gemv    bool
	}{
		{24, 16, 1, true},
		{24, 16, 1, false},
		{24, 16, 5, false},
		{40, 8, 3, true}, // sgemv per token works for T > 1 too
	} {
		e, err := newExpert(tc.h, tc.i, 8)
		if err != nil {
			t.Fatal(err)
		}
		setThreads(1)
		e.ffn(tc.t, tc.gemv)
		want := naive(e, tc.t)
		for j, w := range want {
			if d := math.Abs(float64(e.y[j]) - w); d > 1e-5 {
				t.Fatalf("H=%d I=%d T=%d gemv=%v: y[%d] = %g, want %g", tc.h, tc.i, tc.t, tc.gemv, j, e.y[j], w)
			}
		}
	}
}

func TestServe(t *testing.T) {
	in := strings.Join([]string{
		`{"op":"info"}`,
		`{"h":24,"i":16,"t":1,"threads":1}`,
		`{"h":24,"i":16,"t":4,"threads":2,"min_time_ms":1}`,
		`{"op":"nope"}`,
		`{"h":24,"i":16,"t":4,"threads":0}`,
		`{"h":0,"i":16,"t":4,"threads":1}`,
		`{"h":24,"i":16,"t":0,"threads":1}`,
		`not json`,
	}, "\n")
	var out bytes.Buffer
	if err := (&server{}).serve(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var res []result
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		res = append(res, r)
	}
	if len(res) != 8 {
		t.Fatalf("%d results for 8 requests:\n%s", len(res), out.String())
	}
	if res[0].Corename == "" || res[0].Error != "" {
		t.Errorf("info: %+v", res[0])
	}
	if r := res[1]; r.Impl != "sgemv" || r.Error != "" || len(r.Check) != 8 || r.GFLOPS <= 0 {
		t.Errorf("T=1: %+v", r)
	}
	if r := res[2]; r.Impl != "sgemm" || r.Error != "" || r.Iters < 1 {
		t.Errorf("T=4: %+v", r)
	}
	for i, want := range []string{"unknown op", "threads 0", "shape H=0", "t 0", "bad request"} {
		if r := res[3+i]; !strings.Contains(r.Error, want) {
			t.Errorf("request %d: error %q, want %q", 3+i, r.Error, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		shapes, ints string
		ok           bool
	}{
		{"2048x1408,7168x2048", "1,8,64", true},
		{"2048", "1", false},
		{"2048x0", "1", false},
		{"8x8", "0", false},
		{"8x8", "a", false},
	} {
		_, e1 := parseShapes(tc.shapes)
		_, e2 := parseInts(tc.ints)
		if ok := e1 == nil && e2 == nil; ok != tc.ok {
			t.Errorf("%q %q: %v %v, want ok=%v", tc.shapes, tc.ints, e1, e2, tc.ok)
		}
	}
}
