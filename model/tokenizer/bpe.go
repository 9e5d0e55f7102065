package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

type merge struct {
	rank int32
	id   int32 // symbol id of the merged string
}

// bpe is the BPE model. Symbols are vocab ids; strings that occur in merges
// but not in the vocab get ids above the vocab so merging never needs strings.
type bpe struct {
	vocab        map[string]int32
	sym          map[string]int32 // vocab plus merge-only strings
	merges       map[uint64]merge // (left<<32 | right) -> merge
	unk          int32            // -1: none
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	byteIDs      [256]int32 // <0xNN> ids, -1 if missing

	mu    sync.Mutex
	cache map[string][]int32
}

// cacheCap bounds the per-piece cache; it is simply dropped when full, which
// is cheap and keeps memory bounded under adversarial input.
const cacheCap = 1 << 16

// maxCachedPiece keeps long pieces (rare, and the memory risk) out of the
// cache, so it holds at most cacheCap*maxCachedPiece bytes of keys.
const maxCachedPiece = 256

type rawBPE struct {
	Type          string           `json:"type"`
	Vocab         map[string]int32 `json:"vocab"`
	Merges        json.RawMessage  `json:"merges"`
	Unk           *string          `json:"unk_token"`
	ByteFallback  bool             `json:"byte_fallback"`
	FuseUnk       bool             `json:"fuse_unk"`
	IgnoreMerges  bool             `json:"ignore_merges"`
	ContPrefix    *string          `json:"continuing_subword_prefix"`
	EndWordSuffix *string          `json:"end_of_word_suffix"`
	Dropout       *float64         `json:"dropout"`
}

func parseBPE(file string, m json.RawMessage) (*bpe, error) {
	var r rawBPE
	if err := json.Unmarshal(m, &r); err != nil {
		return nil, perr(file, "model", "%v", err)
	}
	if r.Type != "" && r.Type != "BPE" {
		return nil, fmt.Errorf("%w: %s: model.type %q (only BPE)", ErrUnsupported, file, r.Type)
	}
	if r.Vocab == nil {
		return nil, perr(file, "model.vocab", "missing")
	}
	if (r.ContPrefix != nil && *r.ContPrefix != "") || (r.EndWordSuffix != nil && *r.EndWordSuffix != "") {
		return nil, fmt.Errorf("%w: %s: model: continuing_subword_prefix/end_of_word_suffix", ErrUnsupported, file)
	}
	if r.Dropout != nil && *r.Dropout != 0 {
		return nil, fmt.Errorf("%w: %s: model.dropout", ErrUnsupported, file)
	}
	b := &bpe{vocab: r.Vocab, unk: -1, byteFallback: r.ByteFallback, ignoreMerges: r.IgnoreMerges,
		fuseUnk: r.FuseUnk, cache: map[string][]int32{}}
	next := int32(0)
	for s, id := range r.Vocab {
		if id < 0 {
			return nil, perr(file, "model.vocab", "negative id %d for %q", id, s)
		}
		next = max(next, id+1)
	}
	b.sym = make(map[string]int32, len(r.Vocab))
	for s, id := range r.Vocab {
		b.sym[s] = id
	}
	symOf := func(s string) int32 {
		if id, ok := b.sym[s]; ok {
			return id
		}
		b.sym[s] = next
		next++
		return next - 1
	}
	pairs, err := parseMerges(file, r.Merges)
	if err != nil {
		return nil, err
	}
	b.merges = make(map[uint64]merge, len(pairs))
	for i, p := range pairs {
		key := uint64(uint32(symOf(p[0])))<<32 | uint64(uint32(symOf(p[1])))
		if _, dup := b.merges[key]; dup {
			continue // the first (lowest) rank wins, as in a rank map built in order
		}
		b.merges[key] = merge{rank: int32(i), id: symOf(p[0] + p[1])}
	}
	if r.Unk != nil && *r.Unk != "" {
		id, ok := r.Vocab[*r.Unk]
		if !ok {
			return nil, perr(file, "model.unk_token", "%q not in vocab", *r.Unk)
		}
		b.unk = id
	}
	for i := range b.byteIDs {
		b.byteIDs[i] = -1
		if id, ok := r.Vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.byteIDs[i] = id
		}
	}
	return b, nil
}

// parseMerges accepts both encodings: ["a b", ...] (split on the first space)
// and [["a","b"], ...] (tokenizers >= 0.20).
func parseMerges(file string, m json.RawMessage) ([][2]string, error) {
	if isNull(m) {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(m, &items); err != nil {
		return nil, perr(file, "model.merges", "want an array: %v", err)
	}
	out := make([][2]string, len(items))
	for i, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" {
				return nil, perr(file, fmt.Sprintf("model.merges[%d]", i), "%q is not two space-separated symbols", s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(it, &pair); err != nil || len(pair) != 2 || pair[0] == "" || pair[1] == "" {
			return nil, perr(file, fmt.Sprintf("model.merges[%d]", i), "want \"a b\" or [\"a\", \"b\"]")
		}
		out[i] = [2]string{pair[0], pair[1]}
	}
	return out, nil
}

type symbol struct {
	id         int32 // -1 for a character with no symbol
	start, end int   // byte range in the piece
	prev, next int
}

type cand struct {
	rank  int32
	start int // byte offset of the left symbol: ties go to the leftmost pair
	left  int
	right int
	lid   int32
	rid   int32
	newID int32
}

type candHeap []cand

func (h candHeap) Len() int { return len(h) }
func (h candHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].start < h[j].start
}
func (h candHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)   { *h = append(*h, x.(cand)) }
func (h *candHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// encodePiece appends the ids of one pre-token. Merging repeatedly applies the
// lowest-ranked adjacent pair (leftmost on ties) using a heap, so a long piece
// costs O(n log n) rather than O(n^2).
func (b *bpe) encodePiece(dst []int32, piece string) ([]int32, error) {
	if piece == "" {
		return dst, nil
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[piece]; ok {
			return append(dst, id), nil
		}
	}
	b.mu.Lock()
	if ids, ok := b.cache[piece]; ok {
		b.mu.Unlock()
		return append(dst, ids...), nil
	}
	b.mu.Unlock()

	syms := make([]symbol, 0, len(piece))
	for i, r := range piece {
		n := len(string(r))
		_ = r
		id, ok := b.sym[piece[i:i+n]]
		if !ok {
			id = -1
		}
		syms = append(syms, symbol{id: id, start: i, end: i + n, prev: len(syms) - 1, next: len(syms) + 1})
	}
	syms[len(syms)-1].next = -1
	h := &candHeap{}
	push := func(l int) {
		r := syms[l].next
		if r < 0 || syms[l].id < 0 || syms[r].id < 0 {
			return
		}
		if m, ok := b.merges[uint64(uint32(syms[l].id))<<32|uint64(uint32(syms[r].id))]; ok {
			heap.Push(h, cand{m.rank, syms[l].start, l, r, syms[l].id, syms[r].id, m.id})
		}
	}
	for i := range syms {
		push(i)
	}
	for h.Len() > 0 {
		c := heap.Pop(h).(cand)
		l, r := &syms[c.left], &syms[c.right]
		// Stale candidates: a side was merged away or changed since the push.
		if l.id != c.lid || r.id != c.rid || l.next != c.right || l.end < 0 || r.end < 0 {
			continue
		}
		l.id, l.end, l.next = c.newID, r.end, r.next
		if r.next >= 0 {
			syms[r.next].prev = c.left
		}
		r.end, r.id = -1, -2
		if l.prev >= 0 {
			push(l.prev)
		}
		push(c.left)
	}
	var ids []int32
	prevUnk := false
	for i := 0; i >= 0; i = syms[i].next {
		s := syms[i]
		tok := piece[s.start:s.end]
		if id, ok := b.vocab[tok]; ok {
			ids = append(ids, id)
			prevUnk = false
			continue
		}
		n := len(ids)
		var err error
		if ids, err = b.unknown(ids, tok); err != nil {
			return dst, err
		}
		isUnk := len(ids) == n+1 && ids[n] == b.unk
		if isUnk && prevUnk && b.fuseUnk {
			ids = ids[:n] // fuse_unk: a run of unknown symbols is one unk
		}
		prevUnk = isUnk
	}
	if len(piece) > maxCachedPiece {
		return append(dst, ids...), nil
	}
	b.mu.Lock()
	if len(b.cache) >= cacheCap {
		clear(b.cache)
	}
	b.cache[piece] = ids
	b.mu.Unlock()
	return append(dst, ids...), nil
}

// unknown handles a final symbol missing from the vocab: <0xNN> tokens for
// each byte with byte_fallback (only if all exist), else the unk token.
func (b *bpe) unknown(ids []int32, tok string) ([]int32, error) {
	if b.byteFallback {
		ok := true
		for i := 0; i < len(tok); i++ {
			ok = ok && b.byteIDs[tok[i]] >= 0
		}
		if ok {
			for i := 0; i < len(tok); i++ {
				ids = append(ids, b.byteIDs[tok[i]])
			}
			return ids, nil
		}
	}
	if b.unk >= 0 {
		return append(ids, b.unk), nil
	}
	return ids, fmt.Errorf("tokenizer: encode: %q is not in the vocabulary and there is no unk_token", tok)
}
