package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cpu"
)

func newBenchKernels(_ *globals) *cobra.Command {
	var (
		blasPath, shapes, tokens, threads string
		reps                              int
		minTime, timeout                  time.Duration
		stat                              string
	)
	c := &cobra.Command{
		Use:   "kernels",
		Short: "The cpu backend's expert FFN against OpenBLAS (tools/blasref), f32 and bf16 weights; i8 and mxfp4 vs bf16",
		Long: `Times one SwiGLU expert FFN, y = W2·(silu(W1·x) ⊙ (W3·x)) with W1 and W3 stacked as one
[2I, H] weight (what expert daemons run: GroupedMatmul, SwiGLU, GroupedMatmul on a cpu card),
6·T·H·I flops, with f32 and with bf16 weights, for every shape H×I, token count T and thread
count. If the OpenBLAS reference is built (make bin/blasref), the same f32 FFN runs in it on
the same numbers (cblas_sgemm; cblas_sgemv per token at T=1), interleaved sample by sample
with ours, and the ratio columns give ours/OpenBLAS throughput (medians of per-sample
ratios). The f32 outputs are compared with the reference's before any number is printed.
With --stat best (the default) each side's fastest sample is used: on a shared machine a
neighbour only ever slows a sample down, so the fastest ones are the least disturbed; with
--stat median, medians of GFLOP/s and of per-sample ratios. The summary line gives the smallest f32 ratio at T >= 8 and the smallest T=1 ratio of bf16
weights against OpenBLAS's f32 sgemv (over shapes and thread counts); "n/a" without the
reference. The last columns time our FFN with quantised weights, i8 (W8A16, per-channel
scales) and mxfp4 (E2M1 with an E8M0 scale per 32; n/a unless H and I are multiples of 32),
in the same samples, and give their throughput over bf16's; OpenBLAS has no counterpart.`,
		Example: "  make bin/blasref && moemesh bench kernels",
		RunE: func(cmd *cobra.Command, args []string) error {
			shs, err := parseShapes(shapes)
			if err != nil {
				return fmt.Errorf("--shapes: %w", err)
			}
			ts, err := parseCounts(tokens)
			if err != nil {
				return fmt.Errorf("--tokens: %w", err)
			}
			ths, err := parseCounts(threads)
			if err != nil {
				return fmt.Errorf("--threads: %w", err)
			}
			if reps < 1 || minTime <= 0 || timeout <= 0 {
				return fmt.Errorf("--reps, --min-time and --timeout must be positive")
			}
			if stat != "best" && stat != "median" {
				return fmt.Errorf("--stat %q: want best or median", stat)
			}
			ctx := cmd.Context()
			var ref *blasRef
			if p := findBlasRef(blasPath); p != "" {
				if ref, err = startBlasRef(p, timeout); err != nil {
					return err
				}
				defer ref.Close()
			}
			kb := &kernelBench{ref: ref, reps: reps, minTime: minTime, best: stat == "best"}
			return kb.run(ctx, os.Stdout, shs, ts, ths)
		},
	}
	f := c.Flags()
	f.StringVar(&blasPath, "blasref", "bin/blasref", "the OpenBLAS reference binary (also looked up beside this executable); \"\" or missing: our numbers alone")
	f.StringVar(&shapes, "shapes", "2048x1408,7168x2048", "expert shapes HxI, comma-separated")
	f.StringVar(&tokens, "tokens", "1,8,64,256", "token counts T, comma-separated")
	f.StringVar(&threads, "threads", "1,2", "thread counts, comma-separated")
	f.IntVar(&reps, "reps", 5, "interleaved samples per cell and implementation")
	f.DurationVar(&minTime, "min-time", 100*time.Millisecond, "timed run per sample (at least one call)")
	f.StringVar(&stat, "stat", "best", "best: fastest sample of each side (robust on a busy machine); median: medians, ratios per sample")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "deadline for one reference sample")
	return c
}

// kernelBench holds one run's settings; ref is nil when OpenBLAS is not available.
type kernelBench struct {
	ref     *blasRef
	reps    int
	minTime time.Duration
	best    bool
}

// kernelRow is one table row: one cell's samples reduced as --stat says.
type kernelRow struct {
	h, i, t, threads int
	f32, bf16, ob    float64 // GFLOP/s
	i8, mx           float64 // GFLOP/s with quantised weights; 0: not run
	impl             string  // the reference's routine
	rf32, rbf16      float64 // ours/OpenBLAS throughput; 0 without the reference
	ri8, rmx         float64 // i8 and mxfp4 throughput over bf16 (same samples)
}

func (kb *kernelBench) run(ctx context.Context, w io.Writer, shapes [][2]int, ts, ths []int) error {
	ref := "none (build it with: make bin/blasref)"
	if kb.ref != nil {
		info, err := kb.ref.do(ctx, blasRequest{Op: "info"})
		if err != nil {
			return err
		}
		ref = fmt.Sprintf("OpenBLAS core %s (%s)", info.Corename, info.Config)
	}
	fmt.Fprintf(w, "expert FFN (gate+up [2I,H], SwiGLU, down [H,I]), 6·T·H·I flops; machine: %d cpus; reference: %s\n", runtimeCPUs(), ref)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "H×I\tT\tthreads\tf32 GFLOP/s\tbf16 GFLOP/s\tOpenBLAS GFLOP/s\tf32/OB\tbf16/OB\ti8 GFLOP/s\tmxfp4 GFLOP/s\ti8/bf16\tmxfp4/bf16\t")
	var rows []kernelRow
	for _, sh := range shapes {
		rs, err := kb.shape(ctx, sh[0], sh[1], ts, ths)
		if err != nil {
			return err
		}
		rows = append(rows, rs...)
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%d×%d\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.h, r.i, r.t, r.threads, r.f32, r.bf16,
			orNA(r.ob, "%.1f")+" "+r.impl, orNA(r.rf32, "%.2f"), orNA(r.rbf16, "%.2f"),
			orNA(r.i8, "%.1f"), orNA(r.mx, "%.1f"), orNA(r.ri8, "%.2f"), orNA(r.rmx, "%.2f"))
	}
	tw.Flush()
	minRatio, gemv := summarize(rows)
	fmt.Fprintf(w, "kernels: min_ratio_vs_openblas=%s (T>=8) gemv_bf16_vs_openblas=%s\n", orNA(minRatio, "%.2f"), orNA(gemv, "%.2f"))
	return nil
}

// summarize gives the smallest f32 ratio over rows with T >= 8 and the smallest bf16 ratio
// over rows with T = 1; 0 where no row has a ratio.
func summarize(rows []kernelRow) (minRatio, gemv float64) {
	for _, r := range rows {
		switch {
		case r.rf32 == 0:
		case r.t >= 8 && (minRatio == 0 || r.rf32 < minRatio):
			minRatio = r.rf32
		case r.t == 1 && (gemv == 0 || r.rbf16 < gemv):
			gemv = r.rbf16
		}
	}
	return minRatio, gemv
}

func orNA(v float64, format string) string {
	if v == 0 || math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// shape measures one shape for every T and thread count: our f32 and bf16 FFNs and the
// reference, interleaved sample by sample (the reference first on odd reps, so that neither
// side always runs right after the other). Each thread count has its own card, as a daemon
// configured so would.
func (kb *kernelBench) shape(ctx context.Context, h, inter int, ts, ths []int) ([]kernelRow, error) {
	experts := make([]*benchExpert, len(ths))
	for k, th := range ths {
		card, err := cpu.Backend{Threads: th}.OpenCard(k, 0)
		if err != nil {
			return nil, err
		}
		defer card.Close()
		if experts[k], err = newBenchExpert(card, h, inter, slices.Max(ts)); err != nil {
			return nil, err
		}
	}
	var rows []kernelRow
	for _, t := range ts {
		for k, th := range ths {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			row, err := kb.cell(ctx, experts[k], t, th)
			if err != nil {
				return nil, fmt.Errorf("H=%d I=%d T=%d threads=%d: %w", h, inter, t, th, err)
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// cell takes kb.reps samples of each implementation at one T and thread count.
func (kb *kernelBench) cell(ctx context.Context, ex *benchExpert, t, threads int) (kernelRow, error) {
	row := kernelRow{h: ex.h, i: ex.inter, t: t, threads: threads}
	flops := 6 * float64(t) * float64(ex.h) * float64(ex.inter)
	var tfs, tbs, tos, rf32s, rbf16s []float64 // seconds per call, and per-sample ratios
	var tis, tms, ri8s, rmxs []float64         // the same for i8 and mxfp4 (over bf16)
	for rep := range kb.reps {
		var ob blasResult
		refSample := func() (err error) {
			if kb.ref != nil {
				ob, err = kb.ref.do(ctx, blasRequest{H: ex.h, I: ex.inter, T: t, Threads: threads, MinTimeMS: int(kb.minTime.Milliseconds())})
			}
			return err
		}
		if rep%2 == 1 {
			if err := refSample(); err != nil {
				return row, err
			}
		}
		tf, err := ex.time(t, ascend.F32, kb.minTime)
		if err != nil {
			return row, err
		}
		tb, err := ex.time(t, ascend.BF16, kb.minTime)
		if err != nil {
			return row, err
		}
		for _, q := range []struct {
			dt     ascend.DType
			ts, rs *[]float64
		}{{ascend.I8, &tis, &ri8s}, {ascend.MXFP4, &tms, &rmxs}} {
			if ex.w13[q.dt] == nil {
				continue
			}
			tq, err := ex.time(t, q.dt, kb.minTime)
			if err != nil {
				return row, err
			}
			*q.ts, *q.rs = append(*q.ts, tq.Seconds()), append(*q.rs, tb.Seconds()/tq.Seconds())
		}
		if rep%2 == 0 {
			if err := refSample(); err != nil {
				return row, err
			}
		}
		tfs, tbs = append(tfs, tf.Seconds()), append(tbs, tb.Seconds())
		if kb.ref != nil {
			// The check values come from the same inputs: a mismatch means unlike work.
			if err := ex.check(t, ob.Check); err != nil {
				return row, fmt.Errorf("our f32 FFN and OpenBLAS disagree: %w", err)
			}
			to := ob.NsPerOp / 1e9
			tos = append(tos, to)
			rf32s, rbf16s = append(rf32s, to/tf.Seconds()), append(rbf16s, to/tb.Seconds())
			row.impl = ob.Impl
		}
	}
	gf := func(sec float64) float64 {
		if sec == 0 {
			return 0
		}
		return flops / sec / 1e9
	}
	if kb.best {
		row.f32, row.bf16, row.ob = gf(minOr0(tfs)), gf(minOr0(tbs)), gf(minOr0(tos))
		row.i8, row.mx = gf(minOr0(tis)), gf(minOr0(tms))
		if row.ob != 0 {
			row.rf32, row.rbf16 = row.f32/row.ob, row.bf16/row.ob
		}
		row.ri8, row.rmx = row.i8/row.bf16, row.mx/row.bf16
	} else {
		row.f32, row.bf16, row.ob = gf(median(tfs)), gf(median(tbs)), gf(median(tos))
		row.i8, row.mx = gf(median(tis)), gf(median(tms))
		row.rf32, row.rbf16 = median(rf32s), median(rbf16s)
		row.ri8, row.rmx = median(ri8s), median(rmxs)
	}
	return row, nil
}

func minOr0(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Min(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// The inputs below are duplicated in tools/blasref/ffn.go (the modules share no code on
// purpose): the same generator, seeds and scales, so both sides compute on equal numbers.
const (
	seedX   = 1
	seedW13 = 2
	seedW2  = 3
)

func fillBench(dst []float32, seed uint64, h, i int, scale float32) {
	r := rand.New(rand.NewPCG(seed, uint64(h)<<32|uint64(i)))
	for j := range dst {
		dst[j] = (r.Float32()*2 - 1) * scale
	}
}

func checkIndices(t, h int) []int {
	n := t * h
	idx := make([]int, 8)
	for j := range idx {
		idx[j] = j * (n - 1) / 7
	}
	return idx
}

// benchExpert is one expert on a card in f32, bf16, i8 and (when H and I are multiples of
// 32) mxfp4, with activations for each T.
type benchExpert struct {
	card     ascend.Card
	h, inter int
	w13, w2  map[ascend.DType]ascend.Buffer
	x        []float32
	y        []float32 // the last f32 output, for check
}

func newBenchExpert(card ascend.Card, h, inter, maxT int) (*benchExpert, error) {
	e := &benchExpert{card: card, h: h, inter: inter, w13: map[ascend.DType]ascend.Buffer{}, w2: map[ascend.DType]ascend.Buffer{}}
	w13 := make([]float32, 2*inter*h)
	w2 := make([]float32, h*inter)
	e.x = make([]float32, maxT*h)
	fillBench(e.x, seedX, h, inter, 1)
	fillBench(w13, seedW13, h, inter, float32(1/math.Sqrt(float64(h))))
	fillBench(w2, seedW2, h, inter, float32(1/math.Sqrt(float64(inter))))
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16, ascend.I8, ascend.MXFP4} {
		if dt == ascend.MXFP4 && (h%ascend.MXBlock != 0 || inter%ascend.MXBlock != 0) {
			continue // K must be a multiple of 32 in both projections
		}
		b13, err := card.Alloc(dt, 2*inter, h)
		if err != nil {
			return nil, err
		}
		b2, err := card.Alloc(dt, h, inter)
		if err != nil {
			return nil, err
		}
		if err := card.WriteF32(b13, 0, w13); err != nil {
			return nil, err
		}
		if err := card.WriteF32(b2, 0, w2); err != nil {
			return nil, err
		}
		e.w13[dt], e.w2[dt] = b13, b2
	}
	return e, nil
}

// time runs the FFN of the first t tokens once to warm up, then until minTime has passed,
// and returns the mean time per call. For f32 it keeps the output for check.
func (e *benchExpert) time(t int, dt ascend.DType, minTime time.Duration) (time.Duration, error) {
	c := e.card
	var bufs []ascend.Buffer
	defer func() {
		for _, b := range bufs {
			c.Free(b)
		}
	}()
	alloc := func(shape ...int) (ascend.Buffer, error) {
		b, err := c.Alloc(ascend.F32, shape...)
		if err == nil {
			bufs = append(bufs, b)
		}
		return b, err
	}
	x, err1 := alloc(t, e.h)
	gu, err2 := alloc(t, 2*e.inter)
	act, err3 := alloc(t, e.inter)
	y, err4 := alloc(t, e.h)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return 0, err
	}
	if err := c.WriteF32(x, 0, e.x[:t*e.h]); err != nil {
		return 0, err
	}
	ws, ups, counts := []ascend.Buffer{e.w13[dt]}, []ascend.Buffer{e.w2[dt]}, []int64{int64(t)}
	ffn := func() error {
		if err := c.GroupedMatmul(gu, x, ws, counts); err != nil {
			return err
		}
		if err := c.SwiGLU(act, gu, 0); err != nil {
			return err
		}
		return c.GroupedMatmul(y, act, ups, counts)
	}
	if err := ffn(); err != nil {
		return 0, err
	}
	start := time.Now()
	n := 0
	for n == 0 || time.Since(start) < minTime {
		if err := ffn(); err != nil {
			return 0, err
		}
		n++
	}
	per := time.Since(start) / time.Duration(n)
	if dt == ascend.F32 {
		e.y = slices.Grow(e.y[:0], t*e.h)[:t*e.h]
		if err := c.ReadF32(y, e.y); err != nil {
			return 0, err
		}
	}
	return per, nil
}

// check compares the last f32 output with the reference's values at checkIndices, to a
// tolerance far above f32 summation-order differences and far below any real error.
func (e *benchExpert) check(t int, ref []float32) error {
	idx := checkIndices(t, e.h)
	if len(ref) != len(idx) || len(e.y) < t*e.h {
		return fmt.Errorf("got %d check values, want %d", len(ref), len(idx))
	}
	var scale float64
	for _, v := range ref {
		scale = max(scale, math.Abs(float64(v)))
	}
	for j, k := range idx {
		if d := math.Abs(float64(e.y[k]) - float64(ref[j])); d > 1e-3*scale || math.IsNaN(d) {
			return fmt.Errorf("y[%d] = %g, OpenBLAS %g", k, e.y[k], ref[j])
		}
	}
	return nil
}

func parseShapes(s string) ([][2]int, error) {
	var out [][2]int
	for f := range strings.SplitSeq(s, ",") {
		hs, is, ok := strings.Cut(strings.TrimSpace(f), "x")
		h, err1 := strconv.Atoi(hs)
		i, err2 := strconv.Atoi(is)
		if !ok || err1 != nil || err2 != nil || h <= 0 || i <= 0 || h > 1<<16 || i > 1<<16 {
			return nil, fmt.Errorf("%q is not HxI with H and I in 1..65536", f)
		}
		out = append(out, [2]int{h, i})
	}
	return out, nil
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 || v > 1<<14 {
			return nil, fmt.Errorf("%q is not a number in 1..16384", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// findBlasRef returns the reference binary to use, or "" for none: the flag's path if it
// exists, else a blasref beside this executable.
func findBlasRef(flagPath string) string {
	if flagPath == "" {
		return ""
	}
	if st, err := os.Stat(flagPath); err == nil && !st.IsDir() {
		return flagPath
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "blasref")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// blasRequest and blasResult mirror tools/blasref's request and result lines.
type blasRequest struct {
	Op        string `json:"op,omitempty"`
	H         int    `json:"h,omitempty"`
	I         int    `json:"i,omitempty"`
	T         int    `json:"t,omitempty"`
	Threads   int    `json:"threads,omitempty"`
	MinTimeMS int    `json:"min_time_ms,omitempty"`
}

type blasResult struct {
	Op       string    `json:"op"`
	Impl     string    `json:"impl"`
	NsPerOp  float64   `json:"ns_per_op"`
	GFLOPS   float64   `json:"gflops"`
	Check    []float32 `json:"check"`
	Corename string    `json:"corename"`
	Config   string    `json:"config"`
	Error    string    `json:"error"`
}

// blasRef is a running `blasref -serve`. Its reader goroutine forwards stdout lines to
// lines and ends when the process closes stdout; Close ends the process and waits for both.
type blasRef struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	readErr chan error
	timeout time.Duration
}

func startBlasRef(path string, timeout time.Duration) (*blasRef, error) {
	cmd := exec.Command(path, "-serve")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("blasref: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("blasref: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	r := &blasRef{cmd: cmd, stdin: stdin, lines: make(chan string), readErr: make(chan error, 1), timeout: timeout}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		r.readErr <- sc.Err()
		close(r.lines)
	}()
	return r, nil
}

// do sends one request and waits for its result, up to the timeout. A late or broken
// reference is killed: its next line could not be matched to a request any more.
func (r *blasRef) do(ctx context.Context, req blasRequest) (blasResult, error) {
	var res blasResult
	b, err := json.Marshal(req)
	if err != nil {
		return res, err
	}
	if _, err := r.stdin.Write(append(b, '\n')); err != nil {
		return res, fmt.Errorf("blasref: sending request: %w", err)
	}
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	select {
	case line, ok := <-r.lines:
		if !ok {
			return res, fmt.Errorf("blasref exited (%v)", <-r.readErr)
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return res, fmt.Errorf("blasref: bad result line %q: %w", line, err)
		}
		if res.Error != "" {
			return res, fmt.Errorf("blasref: %s", res.Error)
		}
		return res, nil
	case <-timer.C:
		r.cmd.Process.Kill()
		return res, fmt.Errorf("blasref: no result within %v for %+v", r.timeout, req)
	case <-ctx.Done():
		r.cmd.Process.Kill()
		return res, ctx.Err()
	}
}

// Close ends the reference: EOF on stdin makes it exit; if it has not within the timeout
// it is killed. The reader goroutine ends with stdout, drained here.
func (r *blasRef) Close() error {
	r.stdin.Close()
	timer := time.AfterFunc(r.timeout, func() { r.cmd.Process.Kill() })
	defer timer.Stop()
	for range r.lines {
	}
	return r.cmd.Wait()
}
