package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// request is one line on stdin in -serve mode. Op "info" returns the library's identity;
// op "ffn" (the default) times one expert FFN.
type request struct {
	Op        string `json:"op"`
	H         int    `json:"h"`
	I         int    `json:"i"`
	T         int    `json:"t"`
	Threads   int    `json:"threads"`
	MinTimeMS int    `json:"min_time_ms"`
	// GEMM forces cblas_sgemm at T=1, where sgemv is used otherwise.
	GEMM bool `json:"gemm"`
}

// result is one line on stdout: the request's cell, the timing, and check, the output
// elements at checkIndices. Error is set instead when the request was bad.
type result struct {
	Op       string    `json:"op"`
	Impl     string    `json:"impl,omitempty"`
	H        int       `json:"h,omitempty"`
	I        int       `json:"i,omitempty"`
	T        int       `json:"t,omitempty"`
	Threads  int       `json:"threads,omitempty"`
	Iters    int       `json:"iters,omitempty"`
	NsPerOp  float64   `json:"ns_per_op,omitempty"`
	CPUNsOp  float64   `json:"cpu_ns_per_op,omitempty"`
	GFLOPS   float64   `json:"gflops,omitempty"`
	Check    []float32 `json:"check,omitempty"`
	Corename string    `json:"corename,omitempty"`
	Config   string    `json:"config,omitempty"`
	CPUs     int       `json:"cpus,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// server keeps the last shape's expert: the bench asks for one shape many times in a row,
// and the large one is 176 MB of weights that take a while to generate.
type server struct {
	e *expert
}

func (s *server) handle(req request) result {
	switch req.Op {
	case "info":
		return result{Op: "info", Corename: corename(), Config: config(), CPUs: runtime.NumCPU()}
	case "", "ffn":
	default:
		return result{Op: req.Op, Error: fmt.Sprintf("unknown op %q (want ffn or info)", req.Op)}
	}
	res := result{Op: "ffn", H: req.H, I: req.I, T: req.T, Threads: req.Threads}
	if req.Threads < 1 || req.Threads > 256 {
		res.Error = fmt.Sprintf("threads %d out of range 1..256", req.Threads)
		return res
	}
	if req.MinTimeMS < 0 || req.MinTimeMS > 60_000 {
		res.Error = fmt.Sprintf("min_time_ms %d out of range 0..60000", req.MinTimeMS)
		return res
	}
	if s.e == nil || s.e.h != req.H || s.e.i != req.I || s.e.maxT < req.T {
		s.e = nil // drop the old weights before allocating the new ones
		e, err := newExpert(req.H, req.I, max(req.T, 256))
		if err != nil {
			res.Error = err.Error()
			return res
		}
		s.e = e
	}
	if req.T < 1 {
		res.Error = fmt.Sprintf("t %d out of range 1..%d", req.T, s.e.maxT)
		return res
	}
	setThreads(req.Threads)
	gemv := req.T == 1 && !req.GEMM
	res.Impl = "sgemm"
	if gemv {
		res.Impl = "sgemv"
	}
	n, per, cpu := s.e.timeFFN(req.T, gemv, time.Duration(req.MinTimeMS)*time.Millisecond)
	res.Iters, res.NsPerOp, res.CPUNsOp = n, float64(per.Nanoseconds()), float64(cpu.Nanoseconds())
	res.GFLOPS = 6 * float64(req.T) * float64(req.H) * float64(req.I) / res.NsPerOp
	for _, j := range checkIndices(req.T, req.H) {
		res.Check = append(res.Check, s.e.y[j])
	}
	return res
}

// serve answers one request line with one result line until in ends.
func (s *server) serve(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var req request
		var res result
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			res = result{Op: "error", Error: fmt.Sprintf("bad request %q: %v", line, err)}
		} else {
			res = s.handle(req)
		}
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read requests: %w", err)
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseShapes reads "HxI,HxI".
func parseShapes(s string) ([][2]int, error) {
	var out [][2]int
	for f := range strings.SplitSeq(s, ",") {
		hs, is, ok := strings.Cut(strings.TrimSpace(f), "x")
		h, err1 := strconv.Atoi(hs)
		i, err2 := strconv.Atoi(is)
		if !ok || err1 != nil || err2 != nil || h <= 0 || i <= 0 {
			return nil, fmt.Errorf("shape %q is not HxI with positive H and I", f)
		}
		out = append(out, [2]int{h, i})
	}
	return out, nil
}

func run(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("blasref", flag.ContinueOnError)
	serveMode := fs.Bool("serve", false, "answer JSON requests on stdin, one per line")
	shapes := fs.String("shapes", "2048x1408,7168x2048", "expert shapes HxI")
	tokens := fs.String("tokens", "1,8,64,256", "token counts T")
	threads := fs.String("threads", "1,2", "OpenBLAS thread counts")
	minTime := fs.Duration("min-time", 300*time.Millisecond, "timed run per cell")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &server{}
	if *serveMode {
		return s.serve(in, out)
	}
	sh, err := parseShapes(*shapes)
	if err != nil {
		return fmt.Errorf("-shapes: %w", err)
	}
	ts, err := parseInts(*tokens)
	if err != nil {
		return fmt.Errorf("-tokens: %w", err)
	}
	ths, err := parseInts(*threads)
	if err != nil {
		return fmt.Errorf("-threads: %w", err)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(s.handle(request{Op: "info"})); err != nil {
		return err
	}
	for _, hi := range sh {
		for _, t := range ts {
			for _, th := range ths {
				res := s.handle(request{H: hi[0], I: hi[1], T: t, Threads: th, MinTimeMS: int(minTime.Milliseconds())})
				if err := enc.Encode(res); err != nil {
					return err
				}
				if res.Error != "" {
					return errors.New(res.Error)
				}
			}
		}
	}
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "blasref:", err)
		os.Exit(1)
	}
}
