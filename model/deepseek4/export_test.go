package deepseek4

// Test-only access for the external tests (forward_test.go), which need model/synth and
// so cannot live in this package (synth imports deepseek4).

// Lin is a dense weight [Out, In], row-major.
type Lin struct {
	W       []float32
	Out, In int
}

// TestComp is a compressor's weights.
type TestComp struct {
	WKV, WGate Lin
	Ape, Norm  []float32
}

// TestLayer is one layer's attention weights.
type TestLayer struct {
	Wqa, Wqb, Wkv, Woa, Wob Lin
	QNorm, KVNorm, Sink     []float32
	Ratio                   int
	Comp, IComp             *TestComp
	IdxWqb, IdxWproj        Lin
}

func lin(l linear) Lin { return Lin{l.w, l.out, l.in} }

func comp(c *compressorW) *TestComp {
	if c == nil {
		return nil
	}
	return &TestComp{WKV: lin(c.wkv), WGate: lin(c.wgate), Ape: c.ape, Norm: c.norm}
}

// LayerForTest returns layer li's attention weights.
func (m *Model) LayerForTest(li int) TestLayer {
	a := &m.layers[li].attentionW
	t := TestLayer{Wqa: lin(a.wqa), Wqb: lin(a.wqb), Wkv: lin(a.wkv), Woa: lin(a.woa), Wob: lin(a.wob),
		QNorm: a.qNorm, KVNorm: a.kvNorm, Sink: a.sink, Ratio: a.ratio, Comp: comp(a.comp)}
	if a.idx != nil {
		t.IComp, t.IdxWqb, t.IdxWproj = comp(&a.idx.comp), lin(a.idx.wqb), lin(a.idx.wproj)
	}
	return t
}

// AttentionForTest runs layer li's attention on x [T, H] (already normalised) as a
// chunk of s, updating s's caches of that layer but not its length; chunks gives the
// chunk sizes to feed (nil: one chunk).
func (m *Model) AttentionForTest(li int, s *Sequence, x []float32, chunks []int) ([]float32, error) {
	H := m.cfg.Hidden
	T := len(x) / H
	if chunks == nil {
		chunks = []int{T}
	}
	out := make([]float32, len(x))
	off, n0 := 0, s.n
	defer func() { s.n = n0 }()
	for _, c := range chunks {
		if err := m.attention(li, []*Sequence{s}, [][]int32{make([]int32, c)}, x[off*H:(off+c)*H], out[off*H:(off+c)*H]); err != nil {
			return nil, err
		}
		off += c
		s.n += c
	}
	return out, nil
}
