package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/safetensors"
)

// `moemesh plan`: placement arithmetic from config.json and the safetensors index alone.
// Tensor sizes come from the shard headers when the shards are present (exact, any
// family), else from the deepseek_v4 shape table (the published layout; no shard needs to
// be downloaded to plan a V4 placement). Routed experts are what cards hold; everything
// else (attention, norms, gates, shared experts, embeddings, head) stays with the router.

func newPlan(_ *globals) *cobra.Command {
	var (
		o                   planOptions
		modelDir, mem, resv string
		asJSON              bool
	)
	c := &cobra.Command{
		Use:   "plan",
		Short: "Placement arithmetic from config.json and the safetensors index: bytes per expert and layer, cards needed, a proposed assignment",
		Example: `  moemesh plan --model ./DeepSeek-V4-Flash --card-memory 64GiB
  moemesh plan --model ./Qwen3-30B-A3B --cards 4 --card-memory 16GiB --replicas 2 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelDir == "" {
				return errors.New("--model is required (a model directory holding config.json)")
			}
			var err error
			if o.CardMemory, err = humanize.ParseBytes(mem); err != nil || o.CardMemory == 0 {
				return fmt.Errorf("--card-memory %q: want a size such as 64GiB", mem)
			}
			if o.Reserve, err = humanize.ParseBytes(resv); err != nil {
				return fmt.Errorf("--reserve %q: want a size such as 2GiB", resv)
			}
			p, err := makePlan(modelDir, o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			p.print(cmd.OutOrStdout())
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&modelDir, "model", os.Getenv("MOEMESH_MODEL"), "model directory: config.json and model.safetensors.index.json (shards optional for deepseek_v4) (env MOEMESH_MODEL)")
	f.IntVar(&o.Cards, "cards", 0, "cards to plan an assignment for (0: only count the cards needed)")
	f.StringVar(&mem, "card-memory", "64GiB", "memory of one card")
	f.StringVar(&resv, "reserve", "0", "memory kept free on each card for activations and workspace")
	f.IntVar(&o.Replicas, "replicas", 2, "replicas per expert in the replicated placement (each on a different card)")
	f.StringVar(&o.DType, "dtype", "shipped", "expert bytes as a daemon holds them: shipped (as stored: MXFP4 experts packed, what a cpu card holds), bf16 (dequantised: FP8 experts, and MXFP4 on a card without MXFP4 buffers), f32, or i8 (W8A16: a byte a weight + a f32 scale a row)")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return c
}

type planOptions struct {
	Cards      int
	CardMemory uint64
	Reserve    uint64
	Replicas   int
	DType      string
}

// tensorSize is one tensor's bytes as stored, its parameter count (scale tensors 0,
// packed FP4 two per byte) and its rows (the product of all but the last dimension; scale
// tensors 0), which I8 (W8A16) gives a float32 scale each.
type tensorSize struct {
	bytes, params, rows int64
}

// heldBytes is what a daemon holding the tensor in dtype ("shipped", "bf16", "f32", "i8")
// takes: the stored bytes, or the parameters re-encoded (ExpertStorageBytes of model).
func (s tensorSize) heldBytes(dtype string) int64 {
	switch dtype {
	case "bf16":
		return 2 * s.params
	case "f32":
		return 4 * s.params
	case "i8":
		return s.params + 4*s.rows
	}
	return s.bytes
}

// modelPlan is what plan prints.
type modelPlan struct {
	Model        string      `json:"model"`
	Arch         string      `json:"arch"`
	SizesFrom    string      `json:"sizes_from"` // "shard headers" or "deepseek_v4 shape table"
	ExpertDType  string      `json:"expert_dtype"`
	Layers       []layerPlan `json:"layers"`
	Experts      int         `json:"experts"` // routed experts, all MoE layers
	ExpertBytes  int64       `json:"expert_bytes"`
	ExpertsTotal int64       `json:"experts_total_bytes"`
	RouterBytes  int64       `json:"router_bytes"` // everything but routed experts and MTP
	MTPBytes     int64       `json:"mtp_bytes"`    // ignored for inference
	TotalBytes   int64       `json:"total_bytes"`
	IndexTotal   int64       `json:"index_total_size,omitempty"`
	CardMemory   uint64      `json:"card_memory"`
	Reserve      uint64      `json:"reserve"`
	PerCard      int         `json:"experts_per_card"`
	Replicas     int         `json:"replicas"`
	CardsSingle  int         `json:"cards_needed"`
	CardsReplica int         `json:"cards_needed_replicated"`
	Cards        int         `json:"cards,omitempty"` // --cards
	Assignment   []cardPlan  `json:"assignment,omitempty"`
	Fits         *bool       `json:"fits,omitempty"`
}

type layerPlan struct {
	Layer       int   `json:"layer"`
	Experts     int   `json:"experts"`
	ExpertBytes int64 `json:"expert_bytes"` // all routed experts of the layer
	OtherBytes  int64 `json:"other_bytes"`  // attention, norms, gate, shared expert
}

type cardPlan struct {
	Card    int              `json:"card"`
	Experts int              `json:"experts"`
	Bytes   int64            `json:"bytes"`
	Ranges  map[int][]string `json:"ranges"` // layer → expert ranges ("0-63")
}

var (
	planLayerRe  = regexp.MustCompile(`(?:^|\.)layers\.(\d+)\.`)
	planExpertRe = regexp.MustCompile(`\.experts\.(\d+)\.`)
	planFusedRe  = regexp.MustCompile(`\.experts\.(gate_up_proj|down_proj)(\.weight)?$|\.(input_linear|output_linear)\.weight$`)
	planScaleRe  = regexp.MustCompile(`(\.scale|_scale_inv|_scale)$`)
)

func makePlan(dir string, o planOptions) (*modelPlan, error) {
	switch o.DType {
	case "shipped", "bf16", "f32", "i8":
	default:
		return nil, fmt.Errorf("--dtype %q: want shipped, bf16, f32 or i8", o.DType)
	}
	if o.Replicas < 1 || o.Cards < 0 {
		return nil, fmt.Errorf("--replicas %d and --cards %d: want replicas ≥ 1 and cards ≥ 0", o.Replicas, o.Cards)
	}
	if o.Reserve >= o.CardMemory {
		return nil, fmt.Errorf("--reserve %s leaves nothing of --card-memory %s", humanize.IBytes(o.Reserve), humanize.IBytes(o.CardMemory))
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	sizes, from, total, err := tensorSizes(dir, cfg)
	if err != nil {
		return nil, err
	}
	p := &modelPlan{Model: dir, Arch: cfg.Arch, SizesFrom: from, IndexTotal: total, CardMemory: o.CardMemory,
		Reserve: o.Reserve, Replicas: o.Replicas, ExpertDType: o.DType, Cards: o.Cards}
	experts := map[planUnit]int64{}
	other := map[int]int64{}
	for name, s := range sizes {
		p.TotalBytes += s.bytes
		if strings.HasPrefix(name, "mtp.") {
			p.MTPBytes += s.bytes
			continue
		}
		layer := -1
		if m := planLayerRe.FindStringSubmatch(name); m != nil {
			layer, _ = strconv.Atoi(m[1])
		}
		if layer >= cfg.Layers {
			p.MTPBytes += s.bytes // DeepSeek-V3 style MTP layer past num_hidden_layers
			continue
		}
		b := s.heldBytes(o.DType)
		switch m := planExpertRe.FindStringSubmatch(name); {
		case layer >= 0 && m != nil && !strings.Contains(name, "shared_expert"):
			e, _ := strconv.Atoi(m[1])
			experts[planUnit{layer, e}] += b
		case layer >= 0 && planFusedRe.MatchString(name):
			for e := range cfg.Experts { // a stacked [E, ...] tensor: an equal slice per expert
				experts[planUnit{layer, e}] += b / int64(cfg.Experts)
			}
		case layer >= 0:
			other[layer] += s.bytes
			p.RouterBytes += s.bytes
		default:
			p.RouterBytes += s.bytes
		}
	}
	if len(experts) == 0 {
		return nil, fmt.Errorf("%s: no routed expert tensors found (model_type %s)", dir, cfg.Arch)
	}
	var units []planUnit
	for k := range experts {
		units = append(units, k)
	}
	sort.Slice(units, func(a, b int) bool {
		return units[a].layer < units[b].layer || units[a].layer == units[b].layer && units[a].expert < units[b].expert
	})
	byLayer := map[int]*layerPlan{}
	for _, k := range units {
		lp := byLayer[k.layer]
		if lp == nil {
			lp = &layerPlan{Layer: k.layer, OtherBytes: other[k.layer]}
			byLayer[k.layer] = lp
		}
		lp.Experts++
		lp.ExpertBytes += experts[k]
		p.ExpertsTotal += experts[k]
		p.ExpertBytes = max(p.ExpertBytes, experts[k])
	}
	for l := range cfg.Layers {
		if lp := byLayer[l]; lp != nil {
			p.Layers = append(p.Layers, *lp)
		} else if other[l] > 0 {
			p.Layers = append(p.Layers, layerPlan{Layer: l, OtherBytes: other[l]})
		}
	}
	p.Experts = len(units)
	// Capacity counts whole experts at the largest expert's size: experts are the unit of
	// placement, and a conservative count never overfills a card.
	p.PerCard = int((o.CardMemory - o.Reserve) / uint64(p.ExpertBytes))
	if p.PerCard == 0 {
		return nil, fmt.Errorf("one expert (%s) does not fit a card of %s with %s reserved",
			humanize.IBytes(uint64(p.ExpertBytes)), humanize.IBytes(o.CardMemory), humanize.IBytes(o.Reserve))
	}
	// Replicas of one expert must sit on different cards, so a card holds at most one copy
	// of each expert.
	perCard := min(p.PerCard, p.Experts)
	p.CardsSingle = ceilDiv(p.Experts, perCard)
	p.CardsReplica = max(o.Replicas, ceilDiv(o.Replicas*p.Experts, perCard))
	if o.Cards > 0 {
		fits := o.Cards >= p.CardsReplica
		p.Fits = &fits
		reps := o.Replicas
		if !fits {
			reps = 1 // the best this card count can do; the report says it does not fit
		}
		if o.Cards >= p.CardsSingle {
			p.Assignment = assign(units, experts, reps, o.Cards, p.Experts)
		}
	}
	return p, nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// planUnit is one routed expert of one layer, the unit of placement.
type planUnit struct{ layer, expert int }

// assign lays the units out replica pass after replica pass and cuts the sequence into
// cards equal shares: copies of one unit are n slots apart, and a share never exceeds n
// slots (the caller checks per ≤ capacity ≤ n), so no card gets two copies of an expert.
func assign(units []planUnit, size map[planUnit]int64, reps, cards, n int) []cardPlan {
	total := reps * n
	per := ceilDiv(total, cards)
	out := make([]cardPlan, cards)
	for c := range out {
		out[c] = cardPlan{Card: c, Ranges: map[int][]string{}}
	}
	lists := make([]map[int][]int, cards)
	for c := range lists {
		lists[c] = map[int][]int{}
	}
	for pos := range total {
		u := units[pos%n]
		c := pos / per
		out[c].Experts++
		out[c].Bytes += size[u]
		lists[c][u.layer] = append(lists[c][u.layer], u.expert)
	}
	for c := range out {
		for l, es := range lists[c] {
			out[c].Ranges[l] = ranges(es)
		}
	}
	return out
}

// ranges compresses sorted-able expert ids into "a-b" runs.
func ranges(es []int) []string {
	sort.Ints(es)
	var out []string
	for i := 0; i < len(es); {
		j := i
		for j+1 < len(es) && es[j+1] == es[j]+1 {
			j++
		}
		if i == j {
			out = append(out, strconv.Itoa(es[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", es[i], es[j]))
		}
		i = j + 1
	}
	return out
}

// tensorSizes lists every tensor of the checkpoint with its size. It reads
// model.safetensors.index.json (or a single model.safetensors) and each shard's header;
// a deepseek_v4 checkpoint whose shards are absent is sized from the published layout.
func tensorSizes(dir string, cfg *model.Config) (map[string]tensorSize, string, int64, error) {
	var idx struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	var total int64
	data, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &idx); err != nil || idx.WeightMap == nil {
			return nil, "", 0, fmt.Errorf("%s/model.safetensors.index.json: not an index with a weight_map: %v", dir, err)
		}
		if v, ok := idx.Metadata["total_size"].(float64); ok {
			total = int64(v)
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
			idx.WeightMap = map[string]string{}
			f, err := safetensors.OpenFile(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				return nil, "", 0, err
			}
			for _, n := range f.Names() {
				idx.WeightMap[n] = "model.safetensors"
			}
			f.Close()
		}
	default:
		return nil, "", 0, err
	}
	var table map[string]deepseek4.Tensor
	shipped := func() (map[string]deepseek4.Tensor, error) {
		if table != nil {
			return table, nil
		}
		if cfg.Arch != "deepseek_v4" {
			return nil, fmt.Errorf("%s: shards are missing and model_type %s has no built-in shape table (only deepseek_v4 has); download the shard headers or the shards", dir, cfg.Arch)
		}
		v4, err := deepseek4.FromModel(cfg)
		if err != nil {
			return nil, err
		}
		table = map[string]deepseek4.Tensor{}
		for _, t := range v4.Tensors(true) {
			table[t.Name] = t
		}
		return table, nil
	}
	out := map[string]tensorSize{}
	if len(idx.WeightMap) == 0 { // no index, no single file: V4 from the table alone
		t, err := shipped()
		if err != nil {
			return nil, "", 0, err
		}
		for n, x := range t {
			out[n] = v4Size(x)
		}
		return out, "deepseek_v4 shape table (no index)", 0, nil
	}
	byFile := map[string][]string{}
	for n, f := range idx.WeightMap {
		byFile[f] = append(byFile[f], n)
	}
	from := "shard headers"
	for file, names := range byFile {
		f, err := safetensors.OpenFile(filepath.Join(dir, filepath.Clean("/"+file)))
		if errors.Is(err, fs.ErrNotExist) {
			t, terr := shipped()
			if terr != nil {
				return nil, "", 0, terr
			}
			from = "deepseek_v4 shape table"
			for _, n := range names {
				x, ok := t[n]
				if !ok {
					return nil, "", 0, fmt.Errorf("%s: tensor %q of the index is not in the deepseek_v4 layout for this config", dir, n)
				}
				out[n] = v4Size(x)
			}
			continue
		}
		if err != nil {
			return nil, "", 0, err
		}
		for _, n := range names {
			info, ok := f.Info(n)
			if !ok {
				f.Close()
				return nil, "", 0, fmt.Errorf("%s: the index puts %q in %s, which does not hold it", dir, n, file)
			}
			out[n] = headerSize(f, info)
		}
		f.Close()
	}
	return out, from, total, nil
}

// headerSize sizes a tensor from its header: packed FP4 (I8/U8 beside an F8_E8M0
// ".scale") counts two parameters a byte, scale tensors none.
func headerSize(f *safetensors.File, t safetensors.TensorInfo) tensorSize {
	s := tensorSize{bytes: t.Size, params: t.Numel(), rows: rowsOf(t.Shape)}
	if planScaleRe.MatchString(t.Name) {
		s.params, s.rows = 0, 0
	} else if t.DType == safetensors.I8 || t.DType == safetensors.U8 {
		if sc, ok := f.Info(strings.TrimSuffix(t.Name, ".weight") + ".scale"); ok && sc.DType == safetensors.F8E8M0 {
			s.params *= 2
		}
	}
	return s
}

func v4Size(x deepseek4.Tensor) tensorSize {
	s := tensorSize{bytes: x.Bytes(), params: 1, rows: rowsOf(x.Shape)}
	for _, d := range x.Shape {
		s.params *= d
	}
	switch {
	case planScaleRe.MatchString(x.Name):
		s.params, s.rows = 0, 0
	case x.DType == "I8":
		s.params *= 2
	}
	return s
}

// rowsOf is the number of rows of a weight of this shape: all dimensions but the last.
func rowsOf(shape []int64) int64 {
	if len(shape) == 0 {
		return 0
	}
	n := int64(1)
	for _, d := range shape[:len(shape)-1] {
		n *= d
	}
	return n
}

func (p *modelPlan) print(w io.Writer) {
	b := func(n int64) string { return humanize.IBytes(uint64(n)) }
	fmt.Fprintf(w, "%s (%s), sizes from %s, expert bytes %s\n", p.Model, p.Arch, p.SizesFrom, p.ExpertDType)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\texperts\texpert bytes\tother bytes\t")
	for _, l := range p.Layers {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t\n", l.Layer, l.Experts, b(l.ExpertBytes), b(l.OtherBytes))
	}
	tw.Flush()
	fmt.Fprintf(w, "one expert: %s (%d bytes); %d routed experts: %s\n", b(p.ExpertBytes), p.ExpertBytes, p.Experts, b(p.ExpertsTotal))
	fmt.Fprintf(w, "router (attention, norms, gates, shared experts, embeddings, head): %s; MTP (ignored): %s; checkpoint: %s",
		b(p.RouterBytes), b(p.MTPBytes), b(p.TotalBytes))
	if p.IndexTotal > 0 {
		fmt.Fprintf(w, " (index total_size %s)", b(p.IndexTotal))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "card %s (%s reserved): %d experts per card\n", humanize.IBytes(p.CardMemory), humanize.IBytes(p.Reserve), p.PerCard)
	fmt.Fprintf(w, "cards needed: %d with one copy of each expert, %d with %d replicas\n", p.CardsSingle, p.CardsReplica, p.Replicas)
	if p.Fits != nil && !*p.Fits {
		fmt.Fprintf(w, "%d cards do not hold %d replicas of every expert", p.Cards, p.Replicas)
		if p.Assignment == nil {
			fmt.Fprint(w, ", nor one copy")
		}
		fmt.Fprintln(w)
	}
	if len(p.Assignment) > 0 {
		fmt.Fprintln(w, "proposed assignment:")
		for _, c := range p.Assignment {
			var parts []string
			layers := make([]int, 0, len(c.Ranges))
			for l := range c.Ranges {
				layers = append(layers, l)
			}
			sort.Ints(layers)
			for _, l := range layers {
				parts = append(parts, fmt.Sprintf("L%d:%s", l, strings.Join(c.Ranges[l], ",")))
			}
			fmt.Fprintf(w, "  card %d: %d experts, %s: %s\n", c.Card, c.Experts, b(c.Bytes), strings.Join(parts, " "))
		}
	}
}
